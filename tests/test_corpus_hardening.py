"""Corpus and questions files a user can get wrong, folders shared with other runs, and manifests that were edited:
`compress --corpus` and `ask --questions` either do the right thing or refuse with one clear line (issue 31)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from lychee_hf import LycheeMemoryBank
from lychee_hf.documents import read_documents
from lychee_hf.files import FolderLockedError, folder_lock, read_json_lines
from lychee_hf.scale.corpus import (
    CORPUS_MANIFEST,
    bank_folder_name,
    compress_corpus,
    read_corpus,
    read_corpus_manifest,
)
from lychee_hf.scale.questions import answer_questions
from lychee_hf.testing import run_cli, save_tiny_checkpoint, tiny_lychee

TEXT = "Alice was born in Paris. Paris is the capital of France. " * 3


def text(i: int) -> str:
    return TEXT + f"The secret code is {4700 + i}. "


def write_lines(path, lines: list) -> str:
    """`lines`: dicts (written as JSON), str (written as is) or bytes."""
    with open(path, "wb") as handle:
        for line in lines:
            data = line if isinstance(line, bytes) else (line if isinstance(line, str) else json.dumps(line)).encode()
            handle.write(data + b"\n")
    return str(path)


@pytest.fixture(scope="module")
def model():
    return tiny_lychee(max_answer_tokens=3, memory_budget=8)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt"), max_answer_tokens=3, memory_budget=8)


def manifest_entries(out_dir) -> dict:
    return {entry["id"]: entry for entry in read_corpus_manifest(out_dir)["entries"]}


def compress_cli(checkpoint, corpus, out, *extra):
    return run_cli("compress", "--model", checkpoint, "--quiet", "--corpus", corpus, "--out", out, *extra)


# ------------------------------------------------------------------------------------------ bank folder names
def test_ids_named_like_the_corpus_files_get_folders_of_their_own(model, tokenizer, tmp_path):
    ids = ["corpus.json", "corpus.json.tmp", "CORPUS.JSON", ".lock", ".records", "nul"]
    corpus = write_lines(tmp_path / "docs.jsonl", [{"id": i, "context": text(n)} for n, i in enumerate(ids)])
    summary = compress_corpus(model, tokenizer, corpus, tmp_path / "banks", show_progress=False)
    assert summary.compressed == len(ids) and not summary.failed
    assert (tmp_path / "banks" / CORPUS_MANIFEST).is_file()
    folders = [entry["bank"] for entry in manifest_entries(tmp_path / "banks").values()]
    assert not {f.lower() for f in folders} & {"corpus.json", "corpus.json.tmp", ".lock", ".records", "nul"}
    again = compress_corpus(model, tokenizer, corpus, tmp_path / "banks", show_progress=False)
    assert (again.compressed, again.skipped) == (0, len(ids))


def test_a_bank_an_older_version_wrote_under_the_manifests_name_is_retired(model, tokenizer, tmp_path):
    corpus = write_lines(tmp_path / "docs.jsonl", [{"id": "x", "context": text(0)}, {"id": "y", "context": text(1)}])
    out = tmp_path / "banks"
    compress_corpus(model, tokenizer, corpus, out, show_progress=False)
    (out / CORPUS_MANIFEST).unlink()  # the layout the old naming left: the bank of id "corpus.json" in its place
    (out / "x").rename(out / CORPUS_MANIFEST)
    (out / ".records" / "x.json").rename(out / ".records" / f"{CORPUS_MANIFEST}.json")
    summary = compress_corpus(model, tokenizer, corpus, out, show_progress=False)
    assert (out / CORPUS_MANIFEST).is_file() and (summary.compressed, summary.skipped) == (1, 1)


def test_a_file_left_where_a_bank_goes_is_cleared_without_leftovers(model, tokenizer, tmp_path):
    corpus = write_lines(tmp_path / "docs.jsonl", [{"id": "a", "context": text(0)}])
    out = tmp_path / "banks"
    compress_corpus(model, tokenizer, corpus, out, show_progress=False)
    shutil.rmtree(out / "a")
    (out / "a").write_text("not a bank")
    assert compress_corpus(model, tokenizer, corpus, out, show_progress=False).compressed == 1
    assert sorted(p.name for p in out.iterdir()) == [".index", ".lock", ".records", "a", CORPUS_MANIFEST]
    LycheeMemoryBank.from_pretrained(out / "a").verify()


# ------------------------------------------------------------------------------------------ ids
def test_ids_are_strings_as_given_and_numbers_their_json_text(tmp_path):
    lines = [
        {"id": 1.5, "context": "one and a half"},
        {"id": 1, "context": "one"},
        {"id": 1.0, "context": "one point zero"},
        b'{"id": NaN, "context": "not a number"}',
        {"id": "caf\u00e9 \U0001f600", "context": "unicode"},
        {"context": "no id"},
    ]
    documents = read_corpus(write_lines(tmp_path / "docs.jsonl", lines))
    assert [d.id for d in documents] == ["1.5", "1", "1.0", "NaN", "caf\u00e9 \U0001f600", "6"]
    assert all(d.error is None for d in documents)
    assert bank_folder_name("1.5") == "1.5"


@pytest.mark.parametrize(
    "raw_id, reason",
    [(True, "id true is not a string or a number"), (None, "id null is not"), ([1], "id [1] is not"),
     ({"a": 1}, 'id {"a": 1} is not'), ("", "empty id ''"), ("  ", "empty id '  '")],
)  # fmt: skip
def test_an_id_that_is_no_string_or_number_fails_its_line_alone(tmp_path, raw_id, reason):
    lines = [{"id": raw_id, "context": "text"}, {"id": "2", "context": "text"}]
    bad, good = read_corpus(write_lines(tmp_path / "docs.jsonl", lines))
    assert bad.error.startswith(reason) and good.error is None


def test_a_duplicate_of_a_line_number_says_which_line_has_no_id(tmp_path):
    _, second = read_corpus(write_lines(tmp_path / "docs.jsonl", [{"context": "a"}, {"id": 1, "context": "b"}]))
    assert second.error == "duplicate id '1' (first on line 1; line 1 has no id and is named by its number)"


def test_an_id_field_that_no_line_has_is_refused(tmp_path):
    corpus = write_lines(tmp_path / "docs.jsonl", [{"id": "a", "context": "x"}, {"id": "b", "context": "y"}])
    with pytest.raises(ValueError, match=r"no line of .* has the id field 'name' \(--id-field\).*'id', 'context'"):
        read_corpus(corpus, id_field="name")


def test_with_an_id_field_a_line_without_it_fails_alone(tmp_path):
    corpus = write_lines(tmp_path / "docs.jsonl", [{"name": "a", "context": "x"}, {"context": "y"}])
    named, unnamed = read_corpus(corpus, id_field="name")
    assert named.id == "a" and named.error is None
    assert unnamed.error == "no id field 'name' (other lines have one)"


# ------------------------------------------------------------------------------------------ JSONL files
@pytest.mark.parametrize(
    "data, encoding, expected",
    [
        (b'\xef\xbb\xbf{"id": "a"}\n{"id": "b"}\n', "utf-8", ["a", "b"]),  # a byte-order mark
        (b'{"id": "a"}\r\n{"id": "b"}\r\n', "utf-8", ["a", "b"]),  # CRLF
        ('{"id": "a"}\n{"id": "\u00e9"}\n'.encode("utf-16"), "utf-16", ["a", "\u00e9"]),
        ('{"id": "a"}\n{"id": "\u00e9"}\n'.encode("utf-32-le"), "utf-32-le", ["a", "\u00e9"]),
        (b'{"id": ' + b"9" * 5000 + b'}\n{"id": "b"}\n', "utf-8", ["not valid JSON (a number", "b"]),
        (b"[" * 100_000 + b"]" * 100_000 + b'\n{"id": "b"}\n', "utf-8", ["not valid JSON (nested too deeply)", "b"]),
        (b'{"id": "a"}\n\x00\xff\xfe\n', "utf-8", ["a", "bad encoding: not utf-8 at byte 1"]),
    ],
    ids=["bom", "crlf", "utf-16", "utf-32", "huge-integer", "deep-nesting", "binary-line"],
)
def test_jsonl_lines_are_read_or_fail_alone(tmp_path, data, encoding, expected):
    (tmp_path / "f.jsonl").write_bytes(data)
    lines = read_json_lines(tmp_path / "f.jsonl", "corpus", encoding)
    found = [line.record["id"] if line.error is None else line.error for line in lines]
    assert len(found) == len(expected) and all(f.startswith(e) for f, e in zip(found, expected)), found


def test_a_utf16_file_that_does_not_decode_is_one_clear_error(tmp_path):
    (tmp_path / "f.jsonl").write_bytes('{"id": "a"}\n'.encode("utf-16") + b"\x00\xd8")  # a lone surrogate half
    with pytest.raises(ValueError, match="is not valid utf-16"):
        read_json_lines(tmp_path / "f.jsonl", "corpus", "utf-16")


def test_inputs_that_are_no_regular_file_are_named_for_what_they_are(tmp_path):
    with pytest.raises(IsADirectoryError, match="corpus .* is a folder: pass a JSONL file"):
        read_json_lines(tmp_path, "corpus")
    with pytest.raises(ValueError, match="is not a regular file"):
        read_json_lines("/dev/null", "questions")
    (tmp_path / "real.jsonl").write_text('{"id": "a"}\n')
    os.symlink(tmp_path / "real.jsonl", tmp_path / "link.jsonl")
    os.symlink(tmp_path / "gone.jsonl", tmp_path / "dangling.jsonl")
    assert read_json_lines(tmp_path / "link.jsonl", "corpus")[0].record == {"id": "a"}
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_json_lines(tmp_path / "dangling.jsonl", "corpus")


def test_context_files_with_a_byte_order_mark_are_read_without_it(tmp_path):
    (tmp_path / "doc.txt").write_bytes(b"\xef\xbb\xbfAlice was born in Paris.")
    (tmp_path / "docs.jsonl").write_bytes(b'\xef\xbb\xbf{"context": "Alice."}\r\n{"context": "Bob."}\r\n')
    assert read_documents(tmp_path / "doc.txt") == ["Alice was born in Paris."]
    assert read_documents(tmp_path / "docs.jsonl") == ["Alice.", "Bob."]
    with pytest.raises(ValueError, match="--field text names a JSONL field, but .* is plain text"):
        read_documents(tmp_path / "doc.txt", field="text")


# ------------------------------------------------------------------------------------------ the CLI
def test_overwrite_compresses_every_document_again(checkpoint, tmp_path):
    corpus = write_lines(tmp_path / "docs.jsonl", [{"id": "a", "context": text(0)}, {"id": "b", "context": text(1)}])
    assert compress_cli(checkpoint, corpus, tmp_path / "banks")[0] == 0
    code, out, err = compress_cli(checkpoint, corpus, tmp_path / "banks", "--overwrite")
    assert code == 0 and "2 documents: 2 compressed, 0 already complete, 0 failed" in out, err
    assert all(entry["compressed_now"] for entry in manifest_entries(tmp_path / "banks").values())
    assert not any(p.name.startswith((".partial-", ".stale-")) for p in (tmp_path / "banks").iterdir())
    code, out, _ = compress_cli(checkpoint, corpus, tmp_path / "banks")
    assert code == 0 and "0 compressed, 2 already complete" in out


def test_bank_dtype_reaches_every_bank_of_a_corpus(checkpoint, tmp_path):
    corpus = write_lines(tmp_path / "docs.jsonl", [{"id": "a", "context": text(0)}, {"id": "b", "context": text(1)}])
    assert compress_cli(checkpoint, corpus, tmp_path / "banks", "--bank-dtype", "int8")[0] == 0
    for entry in manifest_entries(tmp_path / "banks").values():
        assert LycheeMemoryBank.from_pretrained(tmp_path / "banks" / entry["bank"]).bank_dtype == "int8"


def test_the_exit_status_says_whether_any_document_was_compressed(checkpoint, tmp_path):
    none = write_lines(tmp_path / "none.jsonl", [{"id": "a", "context": " "}, {"id": "b", "text": "x"}])
    code, out, err = compress_cli(checkpoint, none, tmp_path / "none")
    assert code == 2 and "2 documents: 0 compressed, 0 already complete, 2 failed" in out
    assert err.strip().splitlines()[-1] == f"lychee-hf: error: no document of {none} could be compressed"
    some = write_lines(tmp_path / "some.jsonl", [{"id": "a", "context": " "}, {"id": "b", "context": text(0)}])
    code, out, _ = compress_cli(checkpoint, some, tmp_path / "some")
    assert code == 0 and "1 of 2 failed; the other 1 can be asked" in out


def test_folders_and_files_in_the_wrong_place_are_named(checkpoint, tmp_path):
    (tmp_path / "file").write_text("x")
    corpus = write_lines(tmp_path / "docs.jsonl", [{"id": "a", "context": text(0)}])
    code, _, err = compress_cli(checkpoint, tmp_path, tmp_path / "banks")
    assert code == 2 and "is a folder: pass a JSONL file" in err and "does not exist" not in err
    code, _, err = compress_cli(checkpoint, corpus, tmp_path / "file")
    assert code == 2 and "is a file: name a folder" in err
    code, _, err = compress_cli(checkpoint, "", tmp_path / "banks")
    assert code == 2 and "corpus . is a folder" in err
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / ".records").write_text("not the records folder")
    code, _, err = compress_cli(checkpoint, corpus, tmp_path / "odd")
    assert code == 2 and ".records should be the folder of the banks' records but is a file" in err


HOLD_LOCK = """
import fcntl, os, sys, time
handle = open(sys.argv[1], "a+")
fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
handle.seek(0); handle.truncate(); handle.write(f"process {os.getpid()} on here since now\\n"); handle.flush()
print("held", flush=True)
time.sleep(120)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="the other process locks with fcntl")
def test_one_run_writes_a_folder_at_a_time(checkpoint, model, tokenizer, tmp_path):
    corpus = write_lines(tmp_path / "docs.jsonl", [{"id": "a", "context": text(0)}])
    out = tmp_path / "banks"
    out.mkdir()
    other = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(HOLD_LOCK), str(out / ".lock")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert other.stdout.readline().strip() == "held"
        code, _, err = compress_cli(checkpoint, corpus, out)
        assert code == 2 and f"is being written by another run (process {other.pid} on here" in err
        assert f"lock file {out / '.lock'}" in err and not (out / "a").exists()
    finally:
        other.send_signal(signal.SIGKILL)  # a run that dies holds nothing: the system drops its lock
        other.wait()
    assert compress_cli(checkpoint, corpus, out)[0] == 0 and (out / "a").is_dir()
    with folder_lock(out, ".lock"):  # this process's own lock, on another open file: refused as well
        with pytest.raises(FolderLockedError, match=f"process {os.getpid()} "):
            compress_corpus(model, tokenizer, corpus, out, show_progress=False)


def test_an_output_folder_that_cannot_be_written_is_named(model, tokenizer, tmp_path, monkeypatch):
    corpus = write_lines(tmp_path / "docs.jsonl", [{"id": "a", "context": text(0)}])

    def read_only(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)  # as for a read-only parent (the tests may run as root)
    with pytest.raises(PermissionError, match=f"cannot write in {tmp_path / 'banks'} \\(Permission denied\\)"):
        compress_corpus(model, tokenizer, corpus, tmp_path / "banks", show_progress=False)


# ------------------------------------------------------------------------------------------ questions
@pytest.fixture(scope="module")
def corpus_banks(model, tokenizer, tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    corpus = write_lines(folder / "docs.jsonl", [{"id": 1.5, "context": text(0)}, {"id": "b", "context": text(1)}])
    compress_corpus(model, tokenizer, corpus, folder / "banks", show_progress=False)
    return folder / "banks"


def read_answers(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_questions_over_one_bank_keep_the_document_they_name(model, tokenizer, corpus_banks, tmp_path):
    questions = write_lines(tmp_path / "q.jsonl", [{"document": "mine", "question": "Where?"}, {"question": "Who?"},
                                                   {"document": 7, "question": "What?"}])  # fmt: skip
    answer_questions(model, tokenizer, corpus_banks / "b", questions, tmp_path / "a.jsonl", show_progress=False)
    assert [row["document"] for row in read_answers(tmp_path / "a.jsonl")] == ["mine", None, 7]


def test_questions_name_numeric_documents_as_the_corpus_does(model, tokenizer, corpus_banks, tmp_path):
    questions = write_lines(tmp_path / "q.jsonl", [{"document": 1.5, "question": "Where?"},
                                                   {"document": True, "question": "Who?"}])  # fmt: skip
    answer_questions(model, tokenizer, corpus_banks, questions, tmp_path / "a.jsonl", show_progress=False)
    first, second = read_answers(tmp_path / "a.jsonl")
    assert first["document"] == 1.5 and "answer" in first
    assert second["error"] == "'document' true is not an id (a non-empty string or a number)"


def test_questions_in_another_encoding_are_read_with_encoding(checkpoint, tmp_path):
    corpus = write_lines(tmp_path / "docs.jsonl", [{"id": "a", "context": text(0)}])
    compress_cli(checkpoint, corpus, tmp_path / "banks")
    (tmp_path / "q.jsonl").write_bytes('{"document": "a", "question": "Caf\u00e9?"}\n'.encode("latin-1"))
    args = ["ask", "--model", checkpoint, "--quiet", "--bank", tmp_path / "banks", "--questions", tmp_path / "q.jsonl"]
    code, _, err = run_cli(*args, "--out", tmp_path / "a.jsonl", "--encoding", "latin-1")
    assert code == 0, err
    assert read_answers(tmp_path / "a.jsonl")[0]["question"] == "Caf\u00e9?"


def test_the_exit_status_says_whether_any_question_was_answered(checkpoint, tmp_path):
    corpus = write_lines(tmp_path / "docs.jsonl", [{"id": "a", "context": text(0)}])
    compress_cli(checkpoint, corpus, tmp_path / "banks")
    questions = write_lines(tmp_path / "q.jsonl", [{"document": "nowhere", "question": "Where?"}])
    args = ["ask", "--model", checkpoint, "--quiet", "--bank", tmp_path / "banks", "--questions", questions]
    code, out, err = run_cli(*args, "--out", tmp_path / "a.jsonl")
    assert code == 2 and "0 of 1 questions answered" in out and "no question of" in err
    assert "not in the corpus" in read_answers(tmp_path / "a.jsonl")[0]["error"]


def test_the_answers_file_cannot_be_the_questions_file(model, tokenizer, corpus_banks, tmp_path):
    questions = write_lines(tmp_path / "q.jsonl", [{"document": "b", "question": "Where?"}])
    with pytest.raises(ValueError, match="is the questions file"):
        answer_questions(model, tokenizer, corpus_banks, questions, questions, overwrite=True, show_progress=False)
    assert read_answers(tmp_path / "q.jsonl") == [{"document": "b", "question": "Where?"}]


def test_a_corpus_of_another_model_is_refused_before_any_answer(tokenizer, corpus_banks, tmp_path):
    questions = write_lines(tmp_path / "q.jsonl", [{"document": "b", "question": "Where?"}])
    with pytest.raises(ValueError, match="different model or settings"):
        answer_questions(tiny_lychee(seed=5), tokenizer, corpus_banks, questions, tmp_path / "a.jsonl")
    assert not (tmp_path / "a.jsonl").exists()


# ------------------------------------------------------------------------------------------ edited manifests
def _edited(corpus_banks, tmp_path, edit):
    copy = tmp_path / "banks"
    shutil.copytree(corpus_banks, copy)
    manifest = json.loads((copy / CORPUS_MANIFEST).read_text())
    edit(manifest)
    (copy / CORPUS_MANIFEST).write_text(json.dumps(manifest))
    return copy


@pytest.mark.parametrize("bank", ["../elsewhere", "/tmp", "a/b", "..", ".", "", "a\\b", 5, None])
def test_a_manifest_cannot_send_a_reader_outside_the_corpus_folder(corpus_banks, tmp_path, bank):
    copy = _edited(corpus_banks, tmp_path, lambda m: m["entries"][0].update(bank=bank))
    with pytest.raises(ValueError, match=r"entries\[0\] names bank .* not a folder name inside the corpus folder"):
        read_corpus_manifest(copy)


@pytest.mark.parametrize(
    "edit, problem",
    [
        (lambda m: m.update(entries="x"), "'entries' is not a list"),
        (lambda m: m["entries"][0].pop("status"), r"entries\[0\] has status None"),
        (lambda m: m["entries"].__setitem__(1, []), r"entries\[1\] is not an object"),
        (lambda m: m["entries"][1].update(id=3), r"entries\[1\] has no string 'id'"),
    ],
    ids=["entries-not-a-list", "no-status", "entry-a-list", "numeric-id"],
)
def test_a_damaged_manifest_is_one_clear_error(corpus_banks, tmp_path, edit, problem):
    with pytest.raises(ValueError, match=problem):
        read_corpus_manifest(_edited(corpus_banks, tmp_path, edit))


def test_ask_refuses_an_edited_manifest_before_loading_the_model(corpus_banks, tmp_path):
    copy = _edited(corpus_banks, tmp_path, lambda m: m["entries"][1].update(bank=str(corpus_banks / "b")))
    questions = write_lines(tmp_path / "q.jsonl", [{"document": "b", "question": "Where?"}])
    code, _, err = run_cli("ask", "--model", tmp_path / "no-model-needed", "--bank", copy, "--questions", questions,
                           "--out", tmp_path / "a.jsonl")  # fmt: skip
    assert code == 2 and "not a folder name inside the corpus folder" in err and not (tmp_path / "a.jsonl").exists()


def test_a_resumed_corpus_run_after_an_interrupted_document_matches_an_uninterrupted_one(model, tokenizer, tmp_path):
    corpus = write_lines(tmp_path / "docs.jsonl", [{"id": "a", "context": text(0) * 6}])
    whole = compress_corpus(model, tokenizer, corpus, tmp_path / "whole", show_progress=False, chunks_per_write=1)
    calls, compress = {"n": 0}, model.compress

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return compress(*args, **kwargs)

    model.compress = interrupted
    try:
        with pytest.raises(KeyboardInterrupt):
            compress_corpus(model, tokenizer, corpus, tmp_path / "cut", show_progress=False, chunks_per_write=1)
    finally:
        del model.compress
    partial = LycheeMemoryBank.from_pretrained(tmp_path / "cut" / ".partial-a", allow_incomplete=True)
    assert partial.num_tokens == 2 * model.config.chunk_size  # each step reached the disk before the next began
    compress_corpus(model, tokenizer, corpus, tmp_path / "cut", show_progress=False, chunks_per_write=1)
    resumed, alone = (LycheeMemoryBank.from_pretrained(tmp_path / run / "a") for run in ("cut", "whole"))
    assert whole.compressed == 1 and resumed.spans == alone.spans
    assert all(torch.equal(resumed.block(i).keys, alone.block(i).keys) for i in range(len(alone)))
