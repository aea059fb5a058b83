"""The service in-process (`create_app` behind Starlette's test client): documents, answers (equal to the CLI's),
streams, the OpenAI routes, batching across banks, keys, limits, readiness, metrics and logs, restarts."""

import json
import threading
import time
from contextlib import contextmanager

import pytest
import torch
from fastapi.testclient import TestClient

from lychee_hf import LycheeMemoryBank
from lychee_hf.loading import load_pretrained
from lychee_hf.serve import ServeLimits, create_app
from lychee_hf.serve.limits import ServeLimits as Limits
from lychee_hf.serve.metrics import ServeMetrics
from lychee_hf.serve.scheduler import AnswerScheduler, Question
from lychee_hf.serve.turns import ModelTurns
from lychee_hf.testing import run_cli, save_tiny_checkpoint

ALICE_KEY, BOB_KEY = "alice-0123456789abcdef", "bob-0123456789abcdef"
ALICE, BOB = {"Authorization": f"Bearer {ALICE_KEY}"}, {"Authorization": f"Bearer {BOB_KEY}"}
LOCAL = ("127.0.0.1", 50000)
TEXT = "Alice was born in Paris. Paris is the capital of France. " * 6 + "The secret code is 4721. " * 4
OTHER = "Bob lives in Rome. Rome is in Italy. " * 5 + "The bridge was built in 1887. " * 3


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt"), max_answer_tokens=4, memory_budget=8)


@contextmanager
def serving(checkpoint, banks, keys=None, client=LOCAL, **limits):
    app = create_app(str(checkpoint), banks, keys, ServeLimits(**limits))
    with TestClient(app, client=client) as test_client:
        assert app.state.service.wait_ready(120)
        yield test_client


def ready(client, document_id: str, headers=None, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        document = client.get(f"/v1/documents/{document_id}", headers=headers).json()
        if document["status"] in ("ready", "failed"):
            assert document["status"] == "ready", document
            return document
        time.sleep(0.1)
    raise TimeoutError(document)


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
    with serving(checkpoint, tmp_path_factory.mktemp("store"), {ALICE_KEY: "alice", BOB_KEY: "bob"}) as client:
        yield client


@pytest.fixture(scope="module")
def alice_doc(server):
    document = server.post("/v1/documents", json={"text": TEXT, "name": "paris.txt"}, headers=ALICE).json()
    return ready(server, document["id"], ALICE)


def test_upload_answers_at_once_then_reports_progress_and_dedupes(server, alice_doc):
    assert alice_doc["tokens"] > 0 and alice_doc["blocks_done"] == alice_doc["blocks_total"] > 1
    again = server.post("/v1/documents", json={"text": TEXT}, headers=ALICE)
    assert again.status_code == 200 and again.json()["id"] == alice_doc["id"]  # same text, same key: same document
    upload = server.post("/v1/documents", files={"file": ("rome.txt", OTHER.encode())}, headers=ALICE)
    assert upload.status_code == 201 and upload.json()["status"] in ("queued", "compressing", "ready")
    assert upload.json()["name"] == "rome.txt"
    listed = server.get("/v1/documents", headers=ALICE).json()["documents"]
    assert [d["id"] for d in listed] == [alice_doc["id"], upload.json()["id"]]
    assert server.get(f"/v1/documents/{alice_doc['id']}/text", headers=ALICE).text == TEXT
    ready(server, upload.json()["id"], ALICE)
    assert server.delete(f"/v1/documents/{upload.json()['id']}", headers=ALICE).status_code == 204
    assert server.get(f"/v1/documents/{upload.json()['id']}", headers=ALICE).status_code == 404


def test_the_service_gives_the_cli_answer(server, alice_doc, checkpoint, tmp_path):
    questions = ["What is the secret code?", "Where was Alice born?"]
    response = server.post(f"/v1/documents/{alice_doc['id']}/answers", json={"questions": questions}, headers=ALICE)
    assert response.status_code == 200
    answers = response.json()["answers"]
    bank = server.app.state.service.store.bank_dir(alice_doc["id"])
    for question, served in zip(questions, answers):
        out = tmp_path / f"{len(question)}.json"
        code, _, err = run_cli("ask", "--model", checkpoint, "--bank", bank, "--question", question, "--json", out)
        assert code == 0, err
        cli = json.loads(out.read_text())
        assert served["question"] == question and served["answer"] == cli["answer"]
        assert served["evidence"] == cli["evidence"] and served["not_found"] == cli["not_found"]
        assert [b["gate_score"] for b in served["trace"]] == [b["gate_score"] for b in cli["trace"]]
        assert "prompt_ids" not in served["trace"][0] and served["trace"][0]["prompt_tokens"] > 0


def test_answers_take_the_first_stage_as_the_cli_does(server, alice_doc, checkpoint, tmp_path):
    question = "What is the secret code?"
    body = {"question": question, "first_stage": "lexical", "first_stage_candidates": 1}
    response = server.post(f"/v1/documents/{alice_doc['id']}/answers", json=body, headers=ALICE)
    assert response.status_code == 200, response.text
    served = response.json()["answers"][0]
    bank = server.app.state.service.store.bank_dir(alice_doc["id"])
    code, _, err = run_cli("ask", "--model", checkpoint, "--bank", bank, "--question", question, "--first-stage",
                           "lexical", "--candidates", "1", "--json", tmp_path / "a.json")  # fmt: skip
    assert code == 0, err
    cli = json.loads((tmp_path / "a.json").read_text())
    assert [b["chosen_by"] for b in served["trace"]] == [b["chosen_by"] for b in cli["trace"]]
    assert served["answer"] == cli["answer"]
    bad = server.post(f"/v1/documents/{alice_doc['id']}/answers", json={**body, "first_stage": "bm25"}, headers=ALICE)
    assert bad.status_code == 422 and "first_stage" in bad.text


def events_of(text: str) -> list[tuple[str, dict]]:
    """(event, data) of every server-sent event; unnamed events (OpenAI's) get the name "data"."""
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        data = fields["data"]
        events.append((fields.get("event", "data"), data if data == "[DONE]" else json.loads(data)))
    return events


def test_a_stream_sends_answer_text_then_blocks_and_the_answer(server, alice_doc):
    path = f"/v1/documents/{alice_doc['id']}/answers"
    plain = server.post(path, json={"question": "What is the secret code?"}, headers=ALICE).json()["answers"][0]
    response = server.post(path, json={"question": "What is the secret code?", "stream": True}, headers=ALICE)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = events_of(response.text)
    names = [name for name, _ in events]
    assert names[-1] == "done" and names.count("answer") == 1
    assert names.index("block") > max(i for i, name in enumerate(names) if name == "token")  # answer text streams live
    streamed = "".join(data["text"] for name, data in events if name == "token")
    answer = next(data for name, data in events if name == "answer")
    assert streamed.rstrip() == answer["answer"] == plain["answer"]
    blocks = [data for name, data in events if name == "block"]
    assert [b["block"] for b in blocks] == list(range(alice_doc["blocks_total"]))
    assert {"gate_score", "kept", "memory"} <= set(blocks[0])


def test_openai_routes_in_process(server, alice_doc):
    models = server.get("/v1/models", headers=ALICE).json()
    assert models["object"] == "list" and models["data"][0]["object"] == "model"
    body = {
        "model": models["data"][0]["id"],
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Where was Alice born?"}],
        "documents": [alice_doc["id"]],
        "temperature": 0.7,  # accepted, ignored: answers are greedy
    }
    completion = server.post("/v1/chat/completions", json=body, headers=ALICE).json()
    native = server.post(
        f"/v1/documents/{alice_doc['id']}/answers", json={"question": "Where was Alice born?"}, headers=ALICE
    ).json()["answers"][0]
    assert completion["object"] == "chat.completion"
    assert completion["choices"][0]["message"] == {"role": "assistant", "content": native["answer"]}
    assert completion["lychee"]["evidence"] == native["evidence"] and completion["usage"]["completion_tokens"] > 0
    stream = server.post("/v1/chat/completions", json={**body, "stream": True}, headers=ALICE)
    events = events_of(stream.text)
    assert events[-1] == ("data", "[DONE]")
    chunks = [data for _, data in events[:-1]]
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert (
        chunks[0]["choices"][0]["delta"]["role"] == "assistant" and chunks[-1]["choices"][0]["finish_reason"] == "stop"
    )
    content = "".join(chunk["choices"][0]["delta"].get("content", "") for chunk in chunks)
    assert content.rstrip() == native["answer"]


def test_the_scheduler_answers_questions_over_several_banks_in_one_generate_call(server, alice_doc, checkpoint):
    served = server.app.state.service
    store = served.store
    other = server.post("/v1/documents", json={"text": OTHER}, headers=BOB).json()
    ready(server, other["id"], BOB)
    model, tokenizer = load_pretrained(str(checkpoint), quiet=True)
    calls = []
    original = model.generate
    model.generate = lambda **kwargs: calls.append(len(kwargs["input_ids"])) or original(**kwargs)
    limits = Limits(batch_window_ms=500, max_batch=8)
    scheduler = AnswerScheduler(model, tokenizer, threading.Lock(), ModelTurns(), limits, ServeMetrics())
    scheduler.start()
    asked = [("What is the secret code?", alice_doc["id"]), ("Where does Bob live?", other["id"])] * 3
    questions = [Question(store.bank_dir(document), text) for text, document in asked]
    try:
        scheduler.submit(questions)
        batched = [question.future.result(timeout=300)["answer"] for question in questions]
    finally:
        scheduler.stop()
    assert calls == [6]  # six questions over two banks, one call
    for (text, document), answer in zip(asked[:2], batched[:2]):
        bank = LycheeMemoryBank.from_pretrained(store.bank_dir(document))
        ids = torch.tensor([tokenizer.encode(text, add_special_tokens=False)])
        out = original(input_ids=ids, bank=bank, return_dict_in_generate=True, show_progress=False)
        assert answer == out.trace[0].to_dict(tokenizer)["answer"]  # batched = asked alone


def test_each_key_sees_only_its_own_documents(server, alice_doc):
    path = f"/v1/documents/{alice_doc['id']}"
    assert server.get(path).status_code == 401
    assert server.get(path, headers={"Authorization": "Bearer not-a-key-at-all-xx"}).status_code == 401
    assert server.get(path, headers=BOB).status_code == 404
    assert server.post(path + "/answers", json={"question": "Code?"}, headers=BOB).status_code == 404
    assert server.delete(path, headers=BOB).status_code == 404
    assert alice_doc["id"] not in [d["id"] for d in server.get("/v1/documents", headers=BOB).json()["documents"]]
    assert server.get(path, headers=ALICE).status_code == 200


def test_without_keys_only_this_machine_is_served(checkpoint, tmp_path):
    code, _, err = run_cli("serve", "--banks", tmp_path / "banks", "--host", "0.0.0.0", "--model", checkpoint)
    assert code == 2 and "--api-keys" in err and "127.0.0.1" in err
    app = create_app(str(checkpoint), tmp_path / "banks")
    with TestClient(app, client=("192.0.2.7", 4000)) as remote:
        refused = remote.get("/v1/documents")
        assert refused.status_code == 403 and "same machine" in refused.json()["error"]["message"]
    with TestClient(app, client=LOCAL) as local:
        assert local.get("/v1/documents").json() == {"documents": []}


def test_limits_answer_with_clear_errors(checkpoint, tmp_path):
    limits = dict(max_upload_bytes=2000, max_document_tokens=600, max_documents_per_key=2, max_queue=2)
    with serving(checkpoint, tmp_path / "banks", request_timeout_s=1, **limits) as client:
        too_big = client.post("/v1/documents", json={"text": "x" * 2001})
        assert too_big.status_code == 413 and "2000" in too_big.json()["error"]["message"]
        digits = " ".join(str(i % 10) for i in range(900))  # < 2000 bytes, > 600 tokens
        too_long = client.post("/v1/documents", json={"text": digits})
        assert too_long.status_code == 413 and "tokens" in too_long.json()["error"]["message"]
        first = client.post("/v1/documents", json={"text": TEXT}).json()
        client.post("/v1/documents", json={"text": OTHER})
        third = client.post("/v1/documents", json={"text": "A third one."})
        assert third.status_code == 403 and "delete one" in third.json()["error"]["message"]
        ready(client, first["id"])
        path = f"/v1/documents/{first['id']}/answers"
        full = client.post(path, json={"questions": ["One?", "Two?", "Three?"]})  # 3 > max_queue 2
        assert full.status_code == 429 and int(full.headers["Retry-After"]) >= 1
        with client.app.state.service.turns.answering():  # the model is busy: the answer cannot come in time
            late = client.post(path, json={"question": "Code?"})
        assert late.status_code == 504 and "1" in late.json()["error"]["message"]
        assert client.post(path, json={"question": "Code?"}).status_code == 200  # and it still answers


def test_readiness_health_metrics_and_json_access_logs(checkpoint, tmp_path, monkeypatch, caplog):
    import lychee_hf.loading

    release = threading.Event()
    real_load = lychee_hf.loading.load_pretrained
    monkeypatch.setattr(lychee_hf.loading, "load_pretrained", lambda *a, **k: release.wait(60) and real_load(*a, **k))
    app = create_app(str(checkpoint), tmp_path / "banks")
    caplog.set_level("INFO", logger="lychee_hf.serve.access")
    with TestClient(app, client=LOCAL) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        loading = client.get("/readyz")
        assert loading.status_code == 503 and loading.headers["Retry-After"]
        early = client.post("/v1/documents", json={"text": TEXT})
        assert early.status_code == 503 and "loading" in early.json()["error"]["message"]
        release.set()
        assert app.state.service.wait_ready(120) and client.get("/readyz").status_code == 200
        document = client.post("/v1/documents", json={"text": TEXT}).json()
        ready(client, document["id"])
        client.post(f"/v1/documents/{document['id']}/answers", json={"question": "Code?"})
        metrics = client.get("/metrics").text
    for name in ("lychee_requests_total", "lychee_request_seconds_bucket", "lychee_queue_depth", "lychee_batch_size"):
        assert name in metrics
    assert 'lychee_compression_jobs_total{outcome="ready"} 1.0' in metrics
    assert 'lychee_documents{status="ready"} 1.0' in metrics
    assert 'route="/v1/documents/{document_id}/answers"' in metrics  # templates, not ids, as labels
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "lychee_hf.serve.access"]
    answered = next(line for line in lines if line["route"].endswith("/answers"))
    assert answered["status"] == 200 and answered["owner"] == "local" and answered["ms"] > 0


def test_documents_survive_a_restart_and_a_cut_compression_resumes(checkpoint, tmp_path):
    banks = tmp_path / "banks"
    long_text = TEXT * 4  # ~20 blocks of the tiny model, one per step
    with serving(checkpoint, banks, chunks_per_write=1) as client:
        first = client.post("/v1/documents", json={"text": TEXT}).json()
        ready(client, first["id"])
        answer = client.post(f"/v1/documents/{first['id']}/answers", json={"question": "Code?"}).json()
        cut = client.post("/v1/documents", json={"text": long_text}).json()
        while client.get(f"/v1/documents/{cut['id']}").json()["blocks_done"] < 1:
            time.sleep(0.01)
        served = client.app.state.service
        with served.turns.answering():  # the next step waits for the model: the stop comes before the end
            refused = client.post(f"/v1/documents/{cut['id']}/answers", json={"question": "Code?"})
            assert refused.status_code == 409 and "compressing" in refused.json()["error"]["message"]
            stopping = threading.Thread(target=served.worker.stop)  # as the app's shutdown does
            stopping.start()
        stopping.join()
    # shut down mid-compression: the bank stays unfinished (never served), the index says so
    index = json.loads((banks / "index.json").read_text())
    assert {d["id"]: d["status"] for d in index["documents"]} == {first["id"]: "ready", cut["id"]: "compressing"}
    with pytest.raises(ValueError, match="incomplete"):
        LycheeMemoryBank.from_pretrained(banks / "documents" / cut["id"] / "bank")
    with serving(checkpoint, banks, chunks_per_write=1) as client:
        assert client.get(f"/v1/documents/{first['id']}").json()["status"] == "ready"
        again = client.post(f"/v1/documents/{first['id']}/answers", json={"question": "Code?"}).json()
        assert again["answers"][0]["answer"] == answer["answers"][0]["answer"]
        resumed = ready(client, cut["id"])
    bank = LycheeMemoryBank.from_pretrained(banks / "documents" / cut["id"] / "bank")
    assert len(bank) == resumed["blocks_total"] and bank.verify() == len(bank)


def test_no_pickle_in_the_service():
    from pathlib import Path

    import lychee_hf.serve

    for source in Path(lychee_hf.serve.__file__).parent.glob("*.py"):
        text = source.read_text(encoding="utf-8")
        assert "pickle" not in text and "torch.load" not in text, source


def test_a_document_locked_by_another_process_is_left_to_it(server):
    served = server.app.state.service
    text = "Carol keeps bees in Lyon. " * 12
    tokens = len(served.tokenizer.encode(text, add_special_tokens=False))
    record, _ = served.store.add("alice", text, tokens, -(-tokens // 64), 100)  # queued, not submitted
    with served.store.compression_lock(record.id) as held:  # as another server would hold it
        assert held
        served.worker.compress(record.id)
        assert served.store.record(record.id).status == "queued"
    served.worker.compress(record.id)
    assert served.store.record(record.id).status == "ready"


def test_questions_go_first_but_a_waiting_compression_gets_its_turn():
    from lychee_hf.serve.turns import ANSWER_TURNS

    turns, order = ModelTurns(), []
    compressed = threading.Event()

    def compress():
        with turns.compressing():
            order.append("compress")
        compressed.set()

    with turns.answering():  # busy answering; a compression step and more batches queue up
        worker = threading.Thread(target=compress)
        worker.start()
        time.sleep(0.1)
    for _ in range(ANSWER_TURNS + 2):
        with turns.answering():
            order.append("answer")
    assert compressed.wait(10)
    worker.join()
    assert "compress" in order and order.index("compress") <= ANSWER_TURNS


def test_deleting_a_document_mid_compression_stops_it_and_removes_its_files(server):
    store = server.app.state.service.store
    document = server.post("/v1/documents", json={"text": TEXT * 4 + "Deleted soon."}, headers=ALICE).json()
    while server.get(f"/v1/documents/{document['id']}", headers=ALICE).json()["status"] == "queued":
        time.sleep(0.01)
    assert server.delete(f"/v1/documents/{document['id']}", headers=ALICE).status_code == 204
    assert server.get(f"/v1/documents/{document['id']}", headers=ALICE).status_code == 404
    deadline = time.monotonic() + 120
    while store.folder(document["id"]).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not store.folder(document["id"]).exists()
