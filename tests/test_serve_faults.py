"""The service when storage runs out: a key's allowance of bank bytes, and a disk that fills up mid-compression.
Nothing the users gave is lost, the server keeps answering, and the error says what happened and what to do."""

import errno
import time
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient

import lychee_hf.serve.compression
from lychee_hf.bank_tools import bank_bytes_per_block
from lychee_hf.loading import load_pretrained
from lychee_hf.serve import ServeLimits, create_app
from lychee_hf.testing import save_tiny_checkpoint

LOCAL = ("127.0.0.1", 50000)
TEXT = "Alice was born in Paris. Paris is the capital of France. " * 6 + "The secret code is 4721. " * 4
OTHER = "Bob lives in Rome. Rome is in Italy. " * 5 + "The bridge was built in 1887. " * 3


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt"), max_answer_tokens=4, memory_budget=8)


@contextmanager
def serving(checkpoint, banks, **limits):
    app = create_app(str(checkpoint), banks, None, ServeLimits(**limits))
    with TestClient(app, client=LOCAL) as client:
        assert app.state.service.wait_ready(120)
        yield client


def settled(client, document_id: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        document = client.get(f"/v1/documents/{document_id}").json()
        if document["status"] in ("ready", "failed"):
            return document
        time.sleep(0.05)
    raise TimeoutError(document)


def test_a_key_cannot_keep_more_bank_bytes_than_the_server_allows(checkpoint, tmp_path):
    model, tokenizer = load_pretrained(str(checkpoint), quiet=True)
    blocks = -(-len(tokenizer.encode(TEXT, add_special_tokens=False)) // model.config.chunk_size)
    allowance = (blocks + 1) * bank_bytes_per_block(model)  # room for TEXT's bank, not for a second one
    with serving(checkpoint, tmp_path / "banks", max_disk_bytes_per_key=allowance) as client:
        first = client.post("/v1/documents", json={"text": TEXT})
        assert first.status_code == 201
        refused = client.post("/v1/documents", json={"text": OTHER})
        assert refused.status_code == 403
        message = refused.json()["error"]["message"]
        assert "MiB of banks the server allows per key" in message and "delete documents first" in message
        assert client.post("/v1/documents", json={"text": TEXT}).status_code == 200  # the same text: no new bank
        assert settled(client, first.json()["id"])["status"] == "ready"
        client.delete(f"/v1/documents/{first.json()['id']}")
        assert client.post("/v1/documents", json={"text": OTHER}).status_code == 201  # room again


def test_a_full_disk_fails_the_document_clearly_and_the_server_goes_on(checkpoint, tmp_path, monkeypatch):
    real = lychee_hf.serve.compression.compress_to_disk

    def disk_fills_up(model, ids, bank_dir, *args, **kwargs):
        bank_dir.mkdir(parents=True, exist_ok=True)
        (bank_dir / "bank-00000.safetensors").write_bytes(b"half a shard")
        raise OSError(errno.ENOSPC, "No space left on device")

    with serving(checkpoint, tmp_path / "banks") as client:
        answered = client.post("/v1/documents", json={"text": OTHER}).json()
        assert settled(client, answered["id"])["status"] == "ready"
        monkeypatch.setattr(lychee_hf.serve.compression, "compress_to_disk", disk_fills_up)
        cut = client.post("/v1/documents", json={"text": TEXT}).json()
        failed = settled(client, cut["id"])
        assert failed["status"] == "failed" and "disk is full" in failed["error"]
        assert "upload it again" in failed["error"]
        assert not (tmp_path / "banks" / "documents" / cut["id"] / "bank").exists()  # nothing half-done is kept
        assert client.get(f"/v1/documents/{cut['id']}/text").text == TEXT  # the user's text is kept
        answer = client.post(f"/v1/documents/{answered['id']}/answers", json={"question": "Where?"})
        assert answer.status_code == 200  # other documents are still answered
        monkeypatch.setattr(lychee_hf.serve.compression, "compress_to_disk", real)  # space freed
        again = client.post("/v1/documents", json={"text": TEXT}).json()
        assert again["id"] == cut["id"] and settled(client, cut["id"])["status"] == "ready"
