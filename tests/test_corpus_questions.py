"""Questions over a whole corpus without naming a document: the corpus index (built by `compress --corpus`, kept
up to date), the corpus read as one bank, and answers that say which document they came from."""

import json

import pytest

from lychee_hf.scale.corpus import compress_corpus
from lychee_hf.scale.corpus_bank import INDEX_FOLDER, INDEX_RECORD, CorpusBank
from lychee_hf.testing import run_cli, save_tiny_checkpoint, tiny_lychee

FILLER = "The harbour town sells bread and fish at the market every day of the week.\n"
DOCUMENTS = {
    "harbour": FILLER * 8 + "Marigold keeps the ledger in the blue chest.\n" + FILLER * 8,
    "market": FILLER * 12 + "The market bell was cast in 1887 by Tobias Wren.\n" + FILLER * 4,
    "mill": FILLER * 6 + "The tide mill grinds barley for the brewery on Fridays.\n" + FILLER * 10,
}
KNOBS = dict(max_answer_tokens=4, memory_budget=8, gate_type="query_likelihood")


def write_corpus(path, documents: dict) -> str:
    path.write_text("".join(json.dumps({"id": k, "context": v}) + "\n" for k, v in documents.items()))
    return str(path)


@pytest.fixture(scope="module")
def model():
    return tiny_lychee(**KNOBS)


@pytest.fixture(scope="module")
def corpus_dir(model, tokenizer, tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    compress_corpus(model, tokenizer, write_corpus(folder / "docs.jsonl", DOCUMENTS), folder / "banks",
                    show_progress=False)  # fmt: skip
    return folder / "banks"


def test_compressing_a_corpus_writes_its_index(corpus_dir):
    record = json.loads((corpus_dir / INDEX_FOLDER / INDEX_RECORD).read_text())
    assert [doc_id for doc_id, _ in record["documents"]] == list(DOCUMENTS)
    assert CorpusBank.from_folder(corpus_dir)._lexical_index.size == record["blocks"]  # the saved one is taken


def test_corpus_places_map_blocks_and_characters_back_to_their_document(corpus_dir):
    bank = CorpusBank.from_folder(corpus_dir)
    harbour = len(bank.banks[0])
    assert bank.place_of_block(harbour).document == "market" and bank.place_of_block(harbour).local == 0
    start = bank.document_text.text.index("The market bell")
    place = bank.place_of_char(start)
    assert place.document == "market" and DOCUMENTS["market"][place.local :].startswith("The market bell")
    assert bank.block(harbour).num_slots == bank.banks[1].block(0).num_slots


def test_a_corpus_question_names_the_document_it_was_answered_from(corpus_dir, tmp_path):
    checkpoint = save_tiny_checkpoint(tmp_path / "ckpt", **KNOBS)
    code, out, err = run_cli("ask", "--model", checkpoint, "--bank", corpus_dir, "--question",
                             "Who cast the market bell?", "--json", tmp_path / "a.json")  # fmt: skip
    assert code == 0, err
    result = json.loads((tmp_path / "a.json").read_text())
    assert "market" in result["documents"] and "Documents: " in out
    bell = [row for row in result["trace"] if row["document"] == "market" and row["chosen_by"] == "index: question"]
    assert bell, "the index names the bell's block in the market document"
    for item in result["evidence"]:
        text = DOCUMENTS[item["document"]]
        assert text[item["document_start"] : item["document_end"]] == item["text"]


def test_adding_a_document_updates_the_corpus_index(model, tokenizer, tmp_path):
    two = dict(list(DOCUMENTS.items())[:2])
    compress_corpus(model, tokenizer, write_corpus(tmp_path / "a.jsonl", two), tmp_path / "banks", show_progress=False)
    compress_corpus(model, tokenizer, write_corpus(tmp_path / "a.jsonl", DOCUMENTS), tmp_path / "banks",
                    show_progress=False)  # fmt: skip
    record = json.loads((tmp_path / "banks" / INDEX_FOLDER / INDEX_RECORD).read_text())
    assert [doc_id for doc_id, _ in record["documents"]] == list(DOCUMENTS)


def test_a_stale_index_is_not_used(corpus_dir, tmp_path):
    import shutil

    copy = tmp_path / "banks"
    shutil.copytree(corpus_dir, copy)
    record = json.loads((copy / INDEX_FOLDER / INDEX_RECORD).read_text())
    record["documents"][0][1] = "0" * 64  # as if the document had changed since the index was written
    (copy / INDEX_FOLDER / INDEX_RECORD).write_text(json.dumps(record))
    bank = CorpusBank.from_folder(copy)
    assert getattr(bank, "_lexical_index", None) is None  # the first stage builds a fresh one on first use


def test_a_corpus_can_still_be_scanned_whole(corpus_dir, tmp_path):
    checkpoint = save_tiny_checkpoint(tmp_path / "ckpt", **KNOBS)
    code, _, err = run_cli("ask", "--model", checkpoint, "--bank", corpus_dir, "--question", "Who cast the bell?",
                           "--first-stage", "full_scan", "--json", tmp_path / "a.json")  # fmt: skip
    assert code == 0, err
    rows = json.loads((tmp_path / "a.json").read_text())["trace"]
    assert {row["chosen_by"] for row in rows} == {"full scan"} and {row["document"] for row in rows} == set(DOCUMENTS)


def test_a_corpus_whose_banks_keep_no_text_is_scanned_whole(corpus_dir, tmp_path):
    import shutil

    old = tmp_path / "banks"
    shutil.copytree(corpus_dir, old)
    for path in old.glob("*/document.txt"):  # as a corpus compressed before banks kept their text
        path.unlink()
    shutil.rmtree(old / INDEX_FOLDER)
    checkpoint = save_tiny_checkpoint(tmp_path / "ckpt", **KNOBS)
    code, out, err = run_cli("ask", "--model", checkpoint, "--bank", old, "--question", "Who cast the bell?",
                             "--json", tmp_path / "a.json")  # fmt: skip
    assert code == 0, err
    result = json.loads((tmp_path / "a.json").read_text())
    assert {row["chosen_by"] for row in result["trace"]} == {"full scan"} and result["evidence"] is None
