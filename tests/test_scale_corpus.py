"""Corpus compression in one process: one verified bank per document, a manifest, failures with their reason,
atomic banks, resumable runs."""

import json
import shutil

import pytest
import torch

from lychee_hf import LycheeMemoryBank
from lychee_hf.scale import corpus as corpus_module
from lychee_hf.scale.corpus import bank_folder_name, compress_corpus, read_corpus, read_corpus_manifest
from lychee_hf.testing import tiny_lychee


def text(i: int) -> str:
    return "Alice was born in Paris. " * (4 + 6 * i) + f"The secret code is {4700 + i}. "


def write_corpus(path, lines: list) -> str:
    """`lines`: dicts (written as JSON) or raw bytes."""
    with open(path, "wb") as handle:
        for line in lines:
            handle.write((line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n")
    return str(path)


@pytest.fixture(scope="module")
def model():
    return tiny_lychee()


def entries(out_dir) -> dict:
    return {entry["id"]: entry for entry in read_corpus_manifest(out_dir)["entries"]}


def test_each_document_gets_its_own_bank_equal_to_compressing_it_alone(model, tokenizer, tmp_path):
    corpus = write_corpus(tmp_path / "docs.jsonl", [{"id": "a", "context": text(0)}, {"context": text(2)}])
    summary = compress_corpus(model, tokenizer, corpus, tmp_path / "banks", show_progress=False)
    assert (summary.documents, summary.compressed, summary.skipped, summary.failed) == (2, 2, 0, [])
    found = entries(tmp_path / "banks")
    assert set(found) == {"a", "2"}  # a line without an id is named by its line number
    for doc_id, document in (("a", text(0)), ("2", text(2))):
        ids = torch.tensor([tokenizer.encode(document, add_special_tokens=False)])
        bank = LycheeMemoryBank.from_pretrained(tmp_path / "banks" / found[doc_id]["bank"])
        alone = model.compress(ids, bank_dtype=bank.bank_dtype)  # the same storage format as the saved bank
        assert found[doc_id]["tokens"] == ids.shape[1] == bank.num_tokens
        assert found[doc_id]["blocks"] == len(bank) == len(alone)
        assert all(torch.equal(bank.block(i).keys, alone.block(i).keys) for i in range(len(bank)))
    assert read_corpus_manifest(tmp_path / "banks")["fingerprint"] == model.memory_fingerprint()
    assert summary.tokens == sum(e["tokens"] for e in found.values())


def test_bad_documents_are_reported_with_their_reason_while_the_rest_go_on(model, tokenizer, tmp_path):
    lines = [
        {"id": "good", "context": text(0)},
        b'{"id": "latin1", "context": "caf\xe9"}',
        b'{"id": "cut", "context": "no end',
        {"id": "blank", "context": "   "},
        {"id": "nofield", "text": text(1)},
        {"id": "good", "context": text(1)},
        {"id": "later", "context": text(1)},
    ]
    corpus = write_corpus(tmp_path / "docs.jsonl", lines)
    summary = compress_corpus(model, tokenizer, corpus, tmp_path / "banks", show_progress=False)
    manifest = read_corpus_manifest(tmp_path / "banks")
    reasons = {e["line"]: e.get("reason") for e in manifest["entries"]}
    assert reasons[2].startswith("bad encoding: not utf-8")
    assert reasons[3].startswith("not valid JSON")
    assert reasons[4] == "empty document"
    assert "no string field 'context'" in reasons[5]
    assert reasons[6] == "duplicate id 'good' (first on line 1)"
    assert reasons[1] is None and reasons[7] is None  # the good documents were compressed
    assert summary.compressed == 2 and len(summary.failed) == 5 and manifest["failed"] == 5


def test_a_document_too_large_for_the_disk_left_fails_alone(model, tokenizer, tmp_path, monkeypatch):
    corpus = write_corpus(
        tmp_path / "docs.jsonl", [{"id": "small", "context": text(0)}, {"id": "big", "context": text(8)}]
    )
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=20_000))  # room for ~2 blocks
    summary = compress_corpus(model, tokenizer, corpus, tmp_path / "banks", show_progress=False)
    found = entries(tmp_path / "banks")
    assert found["small"]["status"] == "ok"
    assert found["big"]["status"] == "failed" and "free" in found["big"]["reason"]
    assert not (tmp_path / "banks" / "big").exists()
    assert not any(p.name.startswith(".partial-") for p in (tmp_path / "banks").iterdir())
    assert summary.compressed == 1


def test_an_interrupted_run_leaves_no_half_bank_and_the_rerun_resumes(model, tokenizer, tmp_path, monkeypatch):
    docs = [{"id": f"d{i}", "context": text(i)} for i in range(3)]
    corpus = write_corpus(tmp_path / "docs.jsonl", docs)
    real = corpus_module.compress_to_disk
    calls = []

    def killed_on_the_second_document(model, ids, folder, **kwargs):
        calls.append(folder)
        if len(calls) == 2:  # the process dies while the bank is being written: one block is on disk
            real(model, ids[: model.config.chunk_size], folder, **kwargs)
            raise KeyboardInterrupt
        return real(model, ids, folder, **kwargs)

    monkeypatch.setattr(corpus_module, "compress_to_disk", killed_on_the_second_document)
    with pytest.raises(KeyboardInterrupt):
        compress_corpus(model, tokenizer, corpus, tmp_path / "banks", show_progress=False)
    left = {p.name for p in (tmp_path / "banks").iterdir()}
    assert "d0" in left and "d1" not in left and ".partial-d1" in left and "corpus.json" not in left

    monkeypatch.setattr(corpus_module, "compress_to_disk", real)
    summary = compress_corpus(model, tokenizer, corpus, tmp_path / "banks", show_progress=False)
    found = entries(tmp_path / "banks")
    assert (summary.skipped, summary.compressed) == (1, 2)
    assert [found[f"d{i}"]["compressed_now"] for i in range(3)] == [False, True, True]
    assert found["d1"]["tokens"] == len(tokenizer.encode(text(1), add_special_tokens=False))
    assert not any(p.name.startswith(".partial-") for p in (tmp_path / "banks").iterdir())


def test_a_rerun_compresses_again_what_changed_or_broke_and_skips_the_rest(model, tokenizer, tmp_path):
    docs = [{"id": f"d{i}", "context": text(i)} for i in range(3)]
    corpus = write_corpus(tmp_path / "docs.jsonl", docs)
    compress_corpus(model, tokenizer, corpus, tmp_path / "banks", show_progress=False)
    shard = sorted((tmp_path / "banks" / "d0").glob("*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[:-10])  # d0's bank is damaged
    docs[1]["context"] = text(4)  # d1's text changed
    write_corpus(tmp_path / "docs.jsonl", docs)
    summary = compress_corpus(model, tokenizer, corpus, tmp_path / "banks", show_progress=False)
    found = entries(tmp_path / "banks")
    assert [found[f"d{i}"]["compressed_now"] for i in range(3)] == [True, True, False]
    assert summary.skipped == 1
    assert LycheeMemoryBank.from_pretrained(tmp_path / "banks" / "d1").num_tokens == found["d1"]["tokens"]
    LycheeMemoryBank.from_pretrained(tmp_path / "banks" / "d0").block(0)  # whole again


def test_a_folder_holding_something_else_or_another_models_banks_is_refused(model, tokenizer, tmp_path):
    corpus = write_corpus(tmp_path / "docs.jsonl", [{"id": "a", "context": text(0)}])
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="holds no corpus output"):
        compress_corpus(model, tokenizer, corpus, tmp_path / "mine", show_progress=False)
    compress_corpus(model, tokenizer, corpus, tmp_path / "banks", show_progress=False)
    with pytest.raises(ValueError, match="another model"):
        compress_corpus(tiny_lychee(seed=3), tokenizer, corpus, tmp_path / "banks", show_progress=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_bank_folders_are_safe_file_names_and_never_shared(tmp_path):
    ids = ["report-1", "a/b", "a_b", "../up", "Doc", "doc", "x" * 200]
    corpus = write_corpus(tmp_path / "docs.jsonl", [{"id": i, "context": "text"} for i in ids])
    folders = [d.folder for d in read_corpus(corpus)]
    assert folders[0] == "report-1"
    assert len({f.lower() for f in folders}) == len(ids)
    assert all("/" not in f and not f.startswith(".") and len(f) < 100 for f in folders)
    assert bank_folder_name("a/b") != bank_folder_name("a_b")


def test_a_missing_corpus_fails_before_anything_is_written(model, tokenizer, tmp_path):
    with pytest.raises(FileNotFoundError, match="corpus file"):
        compress_corpus(model, tokenizer, tmp_path / "none.jsonl", tmp_path / "banks", show_progress=False)
    assert not (tmp_path / "banks").exists()
