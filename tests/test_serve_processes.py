"""Real `lychee-hf serve` processes on 127.0.0.1: the unmodified `openai` client (streaming too), `kill -9` in the
middle of a compression then a restart that resumes it (the bank equals one compressed without a break), and two
servers on one store (one compresses, the other answers; a document is compressed by one process at a time)."""

import json
import time

import httpx
import openai
import pytest

from lychee_hf import LycheeMemoryBank
from lychee_hf.bank_tools import compress_to_disk
from lychee_hf.loading import load_pretrained
from lychee_hf.serve.local_server import LocalServer
from lychee_hf.testing import save_tiny_checkpoint
from lychee_hf.text_banks import encode_document

KEY = "proc-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
TEXT = "Alice was born in Paris. Paris is the capital of France. " * 6 + "The secret code is 4721. " * 4


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt"), max_answer_tokens=4, memory_budget=8)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    path = tmp_path_factory.mktemp("keys") / "keys.txt"
    path.write_text(f"# owner key\ncarol {KEY}\n")
    return path


def upload(server: LocalServer, text: str) -> str:
    response = httpx.post(server.url + "/v1/documents", json={"text": text}, headers=AUTH, timeout=60)
    assert response.status_code in (200, 201), response.text
    return response.json()["id"]


def document(server: LocalServer, document_id: str) -> dict:
    return httpx.get(f"{server.url}/v1/documents/{document_id}", headers=AUTH, timeout=60).json()


def wait_for(server, document_id: str, done=lambda d: d["status"] == "ready", timeout: float = 300, poll=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = document(server, document_id)
        assert state["status"] != "failed", state
        if done(state):
            return state
        time.sleep(poll)
    raise TimeoutError(f"{state}\n{server.tail()}")


def test_the_openai_client_asks_a_real_server(checkpoint, keys, tmp_path):
    with LocalServer(tmp_path / "banks", checkpoint, keys) as server:
        document_id = upload(server, TEXT)
        wait_for(server, document_id)
        native = httpx.post(
            f"{server.url}/v1/documents/{document_id}/answers", json={"question": "Code?"}, headers=AUTH, timeout=60
        ).json()["answers"][0]
        client = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=120)
        (model,) = [m.id for m in client.models.list()]
        messages = [{"role": "user", "content": "Code?"}]
        completion = client.chat.completions.create(
            model=model, messages=messages, extra_body={"documents": [document_id]}
        )
        assert completion.choices[0].message.content == native["answer"]
        assert completion.model_extra["lychee"]["evidence"] == native["evidence"]
        stream = client.chat.completions.create(
            model=model, messages=messages, stream=True, extra_body={"documents": [document_id]}
        )
        chunks = list(stream)
        assert "".join(c.choices[0].delta.content or "" for c in chunks).rstrip() == native["answer"]
        assert chunks[-1].choices[0].finish_reason == "stop"
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(
                model=model, messages=messages, extra_body={"documents": ["d_0000000000000000"]}
            )
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=server.url + "/v1", api_key="wrong-key-0123456789", max_retries=0).models.list()
    access = [json.loads(line) for line in server.log.read_text().splitlines() if line.startswith('{"time"')]
    chat = [line for line in access if line.get("route") == "/v1/chat/completions"]
    assert [line["status"] for line in chat] == [200, 200, 404] and chat[0]["owner"] == "carol"


def test_kill_9_mid_compression_then_a_restart_resumes_it(checkpoint, keys, tmp_path):
    banks = tmp_path / "banks"
    server = LocalServer(banks, checkpoint, keys, ["--chunks-per-write", "1"]).start()
    try:
        half = None
        for size in (4, 16, 64, 256):  # a larger document when the machine finished one before the kill
            text = TEXT * size  # ~5 blocks per copy, one written per step
            document_id = upload(server, text)
            state = wait_for(server, document_id, lambda d: d["blocks_done"] >= 1 or d["status"] == "ready", poll=0.01)
            if state["status"] == "ready":
                continue
            assert state["status"] == "compressing" and state["blocks_done"] < state["blocks_total"]
            half = httpx.post(
                f"{server.url}/v1/documents/{document_id}/answers", json={"question": "Code?"}, headers=AUTH, timeout=60
            )
            if half.status_code == 409:  # never served half-done
                break
            # Answered: compression must have finished between the status read and the question.
            assert half.status_code == 200 and document(server, document_id)["status"] == "ready"
        assert half is not None and half.status_code == 409
    finally:
        server.kill()
    bank_dir = banks / "documents" / document_id / "bank"
    with pytest.raises(ValueError, match="incomplete"):
        LycheeMemoryBank.from_pretrained(bank_dir)
    with LocalServer(banks, checkpoint, keys, ["--chunks-per-write", "1"]) as restarted:
        finished = wait_for(restarted, document_id)
        answer = httpx.post(
            f"{restarted.url}/v1/documents/{document_id}/answers", json={"question": "Code?"}, headers=AUTH, timeout=60
        )
        assert answer.status_code == 200
    model, tokenizer = load_pretrained(str(checkpoint), quiet=True)
    ids, document_text = encode_document(tokenizer, text, model.config.chunk_size)
    reference = compress_to_disk(model, ids, tmp_path / "reference", show_progress=False, text=document_text)
    resumed = LycheeMemoryBank.from_pretrained(bank_dir)
    assert len(resumed) == len(reference) == finished["blocks_total"] and resumed.verify() == len(resumed)
    for index in range(len(reference)):
        assert resumed.block(index).keys.equal(reference.block(index).keys)


def test_two_servers_share_one_store(checkpoint, keys, tmp_path):
    banks = tmp_path / "banks"
    with LocalServer(banks, checkpoint, keys) as first, LocalServer(banks, checkpoint, keys) as second:
        document_id = upload(first, TEXT * 2)
        assert document(second, document_id)["status"] in ("queued", "compressing", "ready")  # one index
        wait_for(second, document_id)
        answers = [
            httpx.post(
                f"{server.url}/v1/documents/{document_id}/answers", json={"question": "Code?"}, headers=AUTH, timeout=60
            ).json()["answers"][0]["answer"]
            for server in (first, second)
        ]
        assert answers[0] == answers[1]
        assert upload(second, TEXT * 2) == document_id  # the same text: the same document, whichever server
        jobs = [httpx.get(server.url + "/metrics").text for server in (first, second)]
    compressed = [text.count('lychee_compression_jobs_total{outcome="ready"} 1.0') for text in jobs]
    assert sorted(compressed) == [0, 1]  # exactly one process compressed it
