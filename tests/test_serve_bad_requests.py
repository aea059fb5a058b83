"""No bad request takes the server down: each of these gets a clear 4xx error (the `{"error": {"message"}}` shape),
and the server answers a good question after all of them."""

import json
import time

import pytest
from fastapi.testclient import TestClient

from lychee_hf.serve import ServeLimits, create_app
from lychee_hf.testing import save_tiny_checkpoint

ALICE_KEY, BOB_KEY = "alice-0123456789abcdef", "bob-0123456789abcdef"
ALICE, BOB = {"Authorization": f"Bearer {ALICE_KEY}"}, {"Authorization": f"Bearer {BOB_KEY}"}
JSON = {"Content-Type": "application/json"}
TEXT = "Alice was born in Paris. Paris is the capital of France. " * 4 + "The secret code is 4721. " * 2
LIMITS = ServeLimits(max_upload_bytes=4000, max_document_tokens=1200, max_question_chars=500)


def ready(client, document_id, headers):
    for _ in range(1800):
        document = client.get(f"/v1/documents/{document_id}", headers=headers).json()
        if document["status"] == "ready":
            return document_id
        time.sleep(0.1)
    raise TimeoutError(document)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    checkpoint = save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt"), max_answer_tokens=4, memory_budget=8)
    app = create_app(str(checkpoint), tmp_path_factory.mktemp("banks"), {ALICE_KEY: "alice", BOB_KEY: "bob"}, LIMITS)
    with TestClient(app, client=("127.0.0.1", 50000)) as client:
        assert app.state.service.wait_ready(120)
        alice = client.post("/v1/documents", json={"text": TEXT}, headers=ALICE).json()["id"]
        bob = client.post("/v1/documents", json={"text": TEXT}, headers=BOB).json()["id"]
        client.ids = {"ALICE_DOC": ready(client, alice, ALICE), "BOB_DOC": ready(client, bob, BOB)}
        yield client


def answers(body) -> tuple:
    return ("POST", "/v1/documents/ALICE_DOC/answers", {"json": body})


def raw(path: str, content: bytes | str, kind: str = "application/json") -> tuple:
    return ("POST", path, {"content": content, "headers": {"Content-Type": kind}})


def chat(body) -> tuple:
    return (
        "POST",
        "/v1/chat/completions",
        {"json": {"model": "m", "messages": [{"role": "user", "content": "Q?"}], **body}},
    )


DEEP = "[" * 20_000 + "]" * 20_000
BAD = {
    # --- uploads
    "not-json": (raw("/v1/documents", "{not json"), 400),
    "json-array": (raw("/v1/documents", "[]"), 400),
    "json-string": (raw("/v1/documents", '"text"'), 400),
    "nested-too-deep": (raw("/v1/documents", DEEP), 400),
    "huge-number": (raw("/v1/documents", '{"text": ' + "9" * 5000 + "}"), 400),
    "not-utf8-json": (raw("/v1/documents", b'{"text": "\xff\xfe"}'), 400),
    "text-number": (("POST", "/v1/documents", {"json": {"text": 5}}), 422),
    "text-null": (("POST", "/v1/documents", {"json": {"text": None}}), 422),
    "no-text": (("POST", "/v1/documents", {"json": {}}), 422),
    "unknown-field": (("POST", "/v1/documents", {"json": {"text": "a", "color": 1}}), 422),
    "empty-text": (("POST", "/v1/documents", {"json": {"text": ""}}), 400),
    "blank-text": (("POST", "/v1/documents", {"json": {"text": " \n\t "}}), 400),
    "lone-surrogate": (raw("/v1/documents", '{"text": "a\\ud800b"}'), 422),
    "name-too-long": (("POST", "/v1/documents", {"json": {"text": "a", "name": "n" * 300}}), 422),
    "body-too-large": (raw("/v1/documents", "x" * (LIMITS.max_body_bytes + 1)), 413),
    "text-too-large": (("POST", "/v1/documents", {"json": {"text": "x" * 4001}}), 413),
    "too-many-tokens": (("POST", "/v1/documents", {"json": {"text": " ".join("0123456789" * 130)}}), 413),
    "xml": (raw("/v1/documents", "<doc/>", "application/xml"), 415),
    "no-content-type": (("POST", "/v1/documents", {"content": b"hello"}), 415),
    "form-without-file": (("POST", "/v1/documents", {"files": {"other": ("a.txt", b"hello")}}), 400),
    "urlencoded-form": (("POST", "/v1/documents", {"data": {"text": "hello"}}), 415),
    "file-not-utf8": (("POST", "/v1/documents", {"files": {"file": ("a.txt", b"\xff\xfe\x00bad")}}), 400),
    "plain-not-utf8": (raw("/v1/documents", b"\xc3\x28 bad", "text/plain"), 400),
    # --- documents that are not there, or not yours
    "unknown-id": (("GET", "/v1/documents/d_0000000000000000", {}), 404),
    "malformed-id": (("GET", "/v1/documents/not-an-id", {}), 404),
    "traversal-id": (("GET", "/v1/documents/..%2F..%2Findex.json", {}), 404),
    "unicode-id": (("GET", "/v1/documents/d_ü🙂", {}), 404),
    "other-keys-doc": (("GET", "/v1/documents/BOB_DOC", {}), 404),
    "other-keys-text": (("GET", "/v1/documents/BOB_DOC/text", {}), 404),
    "delete-other-keys": (("DELETE", "/v1/documents/BOB_DOC", {}), 404),
    "delete-unknown": (("DELETE", "/v1/documents/d_ffffffffffffffff", {}), 404),
    "ask-other-keys": (("POST", "/v1/documents/BOB_DOC/answers", {"json": {"question": "Code?"}}), 404),
    "ask-unknown": (("POST", "/v1/documents/d_0123456789abcdef/answers", {"json": {"question": "Code?"}}), 404),
    "unknown-route": (("GET", "/v1/nothing-here", {}), 404),
    "wrong-method": (("PUT", "/v1/documents", {"json": {}}), 405),
    # --- questions
    "no-question": (answers({}), 422),
    "empty-question": (answers({"question": ""}), 400),
    "blank-question": (answers({"question": "   "}), 400),
    "question-number": (answers({"question": 5}), 422),
    "question-list-empty": (answers({"questions": []}), 400),
    "questions-string": (answers({"questions": "abc"}), 422),
    "questions-numbers": (answers({"questions": [1, 2]}), 422),
    "both-forms": (answers({"question": "a", "questions": ["b"]}), 422),
    "too-many-questions": (answers({"questions": ["Q?"] * 17}), 400),
    "question-too-long": (answers({"question": "x" * 501}), 400),
    "question-surrogate": (raw("/v1/documents/ALICE_DOC/answers", '{"question": "\\udfff"}'), 422),
    "zero-tokens": (answers({"question": "a", "max_new_tokens": 0}), 422),
    "tokens-as-string": (answers({"question": "a", "max_new_tokens": "5"}), 422),
    "tokens-above-limit": (answers({"question": "a", "max_new_tokens": 100_000}), 400),
    "threshold-above-1": (answers({"question": "a", "gate_threshold": 2}), 422),
    "bool-as-string": (answers({"question": "a", "gate_keep_last": "yes"}), 422),
    "stream-as-string": (answers({"question": "a", "stream": "yes"}), 422),
    "unknown-option": (answers({"question": "a", "temperature": 0.5}), 422),
    "revisit-needs-memory-gate": (answers({"question": "Code?", "gate_revisit": True}), 400),
    "answers-not-json": (raw("/v1/documents/ALICE_DOC/answers", "question=Code"), 400),
    # --- OpenAI routes
    "chat-empty": (("POST", "/v1/chat/completions", {"json": {}}), 422),
    "chat-no-messages": (chat({"messages": [], "documents": ["ALICE_DOC"]}), 422),
    "chat-messages-string": (chat({"messages": "hi", "documents": ["ALICE_DOC"]}), 422),
    "chat-no-document": (chat({}), 400),
    "chat-two-documents": (chat({"documents": ["ALICE_DOC", "BOB_DOC"]}), 400),
    "chat-other-keys-doc": (chat({"documents": ["BOB_DOC"]}), 404),
    "chat-no-user-message": (chat({"messages": [{"role": "system", "content": "x"}], "documents": ["ALICE_DOC"]}), 400),
    "chat-n-2": (chat({"n": 2, "documents": ["ALICE_DOC"]}), 422),
    "chat-not-json": (raw("/v1/chat/completions", "{"), 400),
    # --- keys
    "no-key": (("GET", "/v1/documents", {"headers": {"Authorization": ""}}), 401),
    "wrong-key": (("GET", "/v1/documents", {"headers": {"Authorization": "Bearer nope-nope-nope-nope"}}), 401),
    "basic-auth": (("GET", "/v1/documents", {"headers": {"Authorization": "Basic YWxpY2U6cHc="}}), 401),
}


@pytest.mark.parametrize("name", list(BAD))
def test_a_bad_request_gets_a_clear_4xx(server, name):
    (method, path, kwargs), status = BAD[name]
    kwargs = dict(kwargs)
    for placeholder, document_id in server.ids.items():
        path = path.replace(placeholder, document_id)
        if "json" in kwargs:
            kwargs = {**kwargs, "json": json.loads(json.dumps(kwargs["json"]).replace(placeholder, document_id))}
    headers = {**ALICE, **kwargs.pop("headers", {})}
    response = server.request(method, path, headers=headers, **kwargs)
    assert response.status_code == status, response.text[:500]
    message = response.json()["error"]["message"]
    assert isinstance(message, str) and 5 < len(message) < 2000
    if status == 401:
        assert response.headers["WWW-Authenticate"] == "Bearer"


def test_the_server_still_answers_after_every_bad_request(server):
    assert len(BAD) >= 40
    for name in BAD:  # run them all again, in one go, then a good question (unicode too)
        test_a_bad_request_gets_a_clear_4xx(server, name)
    assert server.get("/healthz").status_code == 200
    response = server.post(
        f"/v1/documents/{server.ids['ALICE_DOC']}/answers",
        json={"questions": ["¿Dónde nació Alice? 🙂", "What is the secret code?"]},
        headers=ALICE,
    )
    assert response.status_code == 200 and len(response.json()["answers"]) == 2
    emoji = server.post("/v1/documents", json={"text": "Ünïcödé 🙂 текст — עברית. " * 3}, headers=ALICE)
    assert emoji.status_code == 201
