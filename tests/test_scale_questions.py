"""Questions at scale in one process: batched per bank, equal to one-by-one answers, input order kept, each block
read once per batch, bad lines answered with their reason."""

import json

import pytest
import torch

from lychee_hf import LycheeMemoryBank
from lychee_hf.scale.corpus import compress_corpus
from lychee_hf.scale.questions import SharedBlocks, answer_questions, generate_answers
from lychee_hf.testing import tiny_lychee

QUESTIONS = ["What is the secret code?", "Where was Alice born?", "Which city?", "Code?"]


def text(i: int) -> str:
    return "Alice was born in Paris. " * (6 + 5 * i) + f"The secret code is {4700 + i}. "


@pytest.fixture(scope="module")
def model():
    return tiny_lychee(max_answer_tokens=6, memory_budget=8)


@pytest.fixture(scope="module")
def banks(model, tokenizer, tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    corpus = folder / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "context": text(i)}) + "\n" for i in range(3)))
    corpus.open("a").write(json.dumps({"id": "blank", "context": " "}) + "\n")
    compress_corpus(model, tokenizer, corpus, folder / "banks", show_progress=False)
    return folder / "banks"


@pytest.fixture(scope="module")
def questions(tmp_path_factory):
    path = tmp_path_factory.mktemp("questions") / "q.jsonl"
    rows = [{"document": f"d{i % 3}", "question": QUESTIONS[i % 4], "id": f"q{i}"} for i in range(8)]
    rows[2:2] = [{"document": "nowhere", "question": "Where?"}, {"document": "blank", "question": "Anything?"}]
    rows.append({"document": "d0"})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def read_answers(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_batched_answers_equal_one_by_one_answers_in_input_order(model, tokenizer, banks, questions, tmp_path):
    batched = answer_questions(model, tokenizer, banks, questions, tmp_path / "b.jsonl", 4, show_progress=False)
    answer_questions(model, tokenizer, banks, questions, tmp_path / "one.jsonl", 1, show_progress=False)
    rows, alone = read_answers(tmp_path / "b.jsonl"), read_answers(tmp_path / "one.jsonl")
    assert rows == alone
    assert [row["line"] for row in rows] == list(range(1, 12))
    assert batched.batches == 3 and batched.answered == 8  # 3 documents, at most 4 questions each


def test_answers_equal_generate_over_the_bank_one_question_at_a_time(model, tokenizer, banks, questions, tmp_path):
    answer_questions(model, tokenizer, banks, questions, tmp_path / "a.jsonl", 4, show_progress=False)
    for row in [r for r in read_answers(tmp_path / "a.jsonl") if "answer" in r][:4]:
        bank = LycheeMemoryBank.from_pretrained(banks / row["document"])
        ids = torch.tensor([tokenizer.encode(row["question"], add_special_tokens=False)])
        out = model.generate(input_ids=ids, bank=bank)
        assert row["answer"] == tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()


def test_lines_that_cannot_be_asked_get_their_reason(model, tokenizer, banks, questions, tmp_path):
    summary = answer_questions(model, tokenizer, banks, questions, tmp_path / "a.jsonl", 4, show_progress=False)
    errors = {row["line"]: row.get("error") for row in read_answers(tmp_path / "a.jsonl")}
    assert "not in the corpus" in errors[3]
    assert errors[4].startswith("document 'blank' was not compressed: empty document")
    assert errors[11] == "no non-empty string field 'question'"
    assert summary.failed == 3


def counted(bank: LycheeMemoryBank) -> list[int]:
    """Records every block read from `bank`'s storage."""
    reads, original = [], bank.block
    bank.block = lambda index: reads.append(index) or original(index)
    return reads


def test_a_batch_reads_each_block_of_its_bank_once(model, tokenizer, banks):
    bank = LycheeMemoryBank.from_pretrained(banks / "d2")
    reads = counted(bank)
    model.set_gate("query_likelihood")  # scores every block for every question, then reads the kept ones
    try:
        generate_answers(model, tokenizer, bank, QUESTIONS)
    finally:
        model.set_gate("always_related")
    assert sorted(reads) == list(range(len(bank)))


def test_without_room_to_keep_blocks_the_questions_of_a_step_still_share_a_read(model, tokenizer, banks):
    bank = LycheeMemoryBank.from_pretrained(banks / "d2")
    reads = counted(bank)
    generate_answers(model, tokenizer, bank, QUESTIONS, max_cached_bytes=0)
    assert sorted(reads) == list(range(len(bank)))
    reads.clear()
    ids = torch.tensor([tokenizer.encode(QUESTIONS[0], add_special_tokens=False)] * len(QUESTIONS))
    model.generate(input_ids=ids, bank=bank)  # the bank itself: one read per question and block
    assert len(reads) == len(QUESTIONS) * len(bank)


def test_shared_blocks_keep_at_most_their_budget(model, banks):
    bank = LycheeMemoryBank.from_pretrained(banks / "d2")
    one_block = SharedBlocks(bank).block(0)
    size = sum(t.numel() * t.element_size() for t in (one_block.keys, one_block.values, one_block.mask))
    one, two = SharedBlocks(bank, max_bytes=size), SharedBlocks(bank, max_bytes=2 * size)
    for index in [0, 0, 1, 1, 0]:
        one.block(index), two.block(index)
    assert (one.reads, two.reads) == (3, 2)
    assert len(one) == len(bank) == 2 and one.spans == bank.spans


def test_single_bank_questions_need_no_document(model, tokenizer, banks, tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"question": QUESTIONS[0]}) + "\n")
    answer_questions(model, tokenizer, banks / "d1", path, tmp_path / "a.jsonl", show_progress=False)
    assert "answer" in read_answers(tmp_path / "a.jsonl")[0]


def test_an_existing_answers_file_is_refused(model, tokenizer, banks, questions, tmp_path):
    (tmp_path / "a.jsonl").write_text("mine\n")
    with pytest.raises(FileExistsError, match="nothing is overwritten"):
        answer_questions(model, tokenizer, banks, questions, tmp_path / "a.jsonl", show_progress=False)
    assert (tmp_path / "a.jsonl").read_text() == "mine\n"


def test_an_answers_file_in_a_missing_folder_is_refused_before_any_work(model, tokenizer, banks, questions, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        answer_questions(model, tokenizer, banks, questions, tmp_path / "no" / "a.jsonl", show_progress=False)
