"""Every path that reads a bank works on every storage format: one bank written in each format, the same questions
through single and batched questions, a corpus folder (questions naming their document and corpus questions that
name none), `eval`, the gate's scoring, memory-reading rescoring, the second look, the first stage's index, `bank
convert`, `info` and the training rows. A new path belongs here, so that no format is missed."""

import json

import pytest
import torch

from lychee_hf import LycheeMemoryBank, LycheeMemoryForCausalLM
from lychee_hf.bank_tools import convert_bank
from lychee_hf.data import QAExample
from lychee_hf.eval.baselines import run_method
from lychee_hf.modeling.bank_storage_lychee import StorageFormat
from lychee_hf.modeling.kv_quant_lychee import BANK_DTYPES, QuantizedKV
from lychee_hf.scale.corpus import compress_corpus
from lychee_hf.scale.questions import answer_questions, generate_answers
from lychee_hf.testing import question_ids, run_cli, save_tiny_checkpoint, tiny_tokenizer
from lychee_hf.text_banks import compress_text
from lychee_hf.training.gate import GateRow, collate_gate_rows

# Every format a new bank can have, plus int4 as written before rotation and outlier channels (plain KIVI groups).
LEGACY_INT4 = StorageFormat("int4", 128, 64, None)
FORMATS = [*BANK_DTYPES, "int4-legacy"]
QUESTIONS = ["What is the secret code?", "Where was Alice born?", "Code?"]
TEXT = "Alice was born in Paris. " * 14 + "The secret code is 4721. " + "Paris is the capital of France. " * 10


def storage(fmt: str):
    return LEGACY_INT4 if fmt == "int4-legacy" else fmt


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    # The query-likelihood gate reads every block (scores that depend on the K/V), and reads the memory (rescoring,
    # second look).
    return save_tiny_checkpoint(
        tmp_path_factory.mktemp("ckpt"),
        max_answer_tokens=6,
        memory_budget=8,
        gate_type="query_likelihood",
        gate_reads_memory=True,
    )


@pytest.fixture(scope="module")
def model(checkpoint):
    return LycheeMemoryForCausalLM.from_pretrained(checkpoint).eval()


@pytest.fixture(scope="module")
def exact(model, tokenizer):
    ids = torch.tensor([tokenizer.encode(TEXT, add_special_tokens=False)])
    return model.compress(ids, show_progress=False, bank_dtype="float32")


@pytest.fixture(scope="module")
def folders(exact, tmp_path_factory):
    root = tmp_path_factory.mktemp("banks")
    for fmt in FORMATS:
        exact.save_pretrained(root / fmt, bank_dtype=storage(fmt))
    return {fmt: root / fmt for fmt in FORMATS}


@pytest.fixture(scope="module")
def questions_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("questions") / "q.jsonl"
    path.write_text("".join(json.dumps({"question": q, "id": f"q{i}"}) + "\n" for i, q in enumerate(QUESTIONS)))
    return path


def answer(model, tokenizer, bank, question: str, **policy) -> str:
    ids = question_ids(tokenizer, question)
    if policy.get("first_stage") == "lexical":
        policy["tokenizer"] = tokenizer  # the index is asked in words
    out = model.generate(input_ids=ids, bank=bank, show_progress=False, do_sample=False, **policy)
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()


def test_each_format_is_stored_as_it_says(folders):
    for fmt, folder in folders.items():
        bank = LycheeMemoryBank.from_pretrained(folder)
        manifest = json.loads((folder / "bank.json").read_text())
        assert bank.bank_dtype == storage(fmt if fmt != "int4-legacy" else "int4")
        keys = bank.block(0).keys
        if fmt in ("int8", "int4", "int4-legacy"):
            assert isinstance(keys, QuantizedKV)
            values = bank.block(0).values
            assert keys.rotation is None and values.rotation == ("hadamard" if fmt == "int4" else None)
            assert keys.outliers == (8 if fmt == "int4" else 0)
            assert ("rotation" in manifest["storage"]["values"]) == (values.rotation is not None)
        else:
            assert keys.dtype == getattr(torch, fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_single_questions_answer_over_every_format(model, tokenizer, folders, fmt):
    bank = LycheeMemoryBank.from_pretrained(folders[fmt])
    for question in QUESTIONS:
        assert isinstance(answer(model, tokenizer, bank, question), str)


@pytest.mark.parametrize("fmt", FORMATS)
def test_batched_questions_equal_single_questions_over_every_format(model, tokenizer, folders, fmt):
    bank = LycheeMemoryBank.from_pretrained(folders[fmt])
    assert generate_answers(model, tokenizer, bank, QUESTIONS) == [answer(model, tokenizer, bank, q) for q in QUESTIONS]


@pytest.mark.parametrize("fmt", FORMATS)
def test_memory_reading_rescoring_and_second_look_run_over_every_format(model, tokenizer, folders, fmt):
    bank = LycheeMemoryBank.from_pretrained(folders[fmt])
    ids = question_ids(tokenizer, QUESTIONS[0])
    out = model.generate(input_ids=ids, bank=bank, show_progress=False, gate_revisit=True, return_dict_in_generate=True)
    assert len(out.trace[0]) >= len(bank)


@pytest.mark.parametrize("fmt", FORMATS)
def test_gate_scores_are_finite_and_close_to_float32_over_every_format(model, tokenizer, folders, fmt):
    ids = question_ids(tokenizer, QUESTIONS[0])[0]
    empty = torch.zeros(0, dtype=torch.long)
    reference = model.gate.score_blocks(model, LycheeMemoryBank.from_pretrained(folders["float32"]), 0, ids, empty)
    scores = model.gate.score_blocks(model, LycheeMemoryBank.from_pretrained(folders[fmt]), 0, ids, empty)
    assert scores.shape == reference.shape and bool(torch.isfinite(scores).all())
    assert float((scores - reference).abs().max()) < 0.25


@pytest.mark.parametrize("fmt", FORMATS)
def test_cli_batched_questions_answer_over_every_format(checkpoint, folders, questions_file, fmt, tmp_path):
    code, out, err = run_cli(
        "ask", "--model", checkpoint, "--bank", folders[fmt], "--questions", questions_file, "--out", tmp_path / "a"
    )
    assert code == 0, err
    rows = [json.loads(line) for line in (tmp_path / "a").read_text().splitlines()]
    assert [row["id"] for row in rows] == ["q0", "q1", "q2"] and all("answer" in row for row in rows)


@pytest.mark.parametrize("fmt", FORMATS)
def test_cli_single_question_and_info_over_every_format(checkpoint, folders, fmt):
    code, out, err = run_cli("ask", "--model", checkpoint, "--bank", folders[fmt], "--question", QUESTIONS[0])
    assert code == 0, err
    code, out, err = run_cli("info", folders[fmt])
    assert code == 0, err
    assert ("int4" if fmt == "int4-legacy" else fmt) in out


@pytest.mark.parametrize("fmt", FORMATS)
def test_answers_copied_from_the_evidence_read_every_format(model, tokenizer, text_folders, fmt):
    bank = LycheeMemoryBank.from_pretrained(text_folders[fmt])
    ids = question_ids(tokenizer, QUESTIONS[0])
    out = model.generate(input_ids=ids, bank=bank, tokenizer=tokenizer, show_progress=False, do_sample=False,
                         return_dict_in_generate=True, answer_from="evidence", gate_threshold=0.0)  # fmt: skip
    trace = out.trace[0]
    assert trace.answer_source == "evidence"
    assert tokenizer.decode(trace.answer_ids, skip_special_tokens=True).strip() in TEXT


@pytest.mark.parametrize("fmt", BANK_DTYPES)
def test_a_corpus_is_stored_and_answered_in_every_format(model, tokenizer, questions_file, fmt, tmp_path):
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "context": TEXT * (i + 1)}) + "\n" for i in range(2)))
    compress_corpus(model, tokenizer, corpus, tmp_path / "banks", show_progress=False, bank_dtype=fmt)
    assert LycheeMemoryBank.from_pretrained(tmp_path / "banks" / "d1").bank_dtype == fmt
    asked = tmp_path / "q.jsonl"
    rows = [{"document": f"d{i % 2}", "question": question} for i, question in enumerate(QUESTIONS)]
    asked.write_text("".join(json.dumps(row) + "\n" for row in rows))
    summary = answer_questions(model, tokenizer, tmp_path / "banks", asked, tmp_path / "a.jsonl", show_progress=False)
    assert summary.answered == len(QUESTIONS) and summary.failed == 0


@pytest.fixture(scope="module")
def text_folders(model, tokenizer, tmp_path_factory):
    # Banks that keep their text: what the first stage's index and evidence read.
    with_text = compress_text(model, tokenizer, TEXT, show_progress=False, bank_dtype="float32")
    root = tmp_path_factory.mktemp("text_banks")
    for fmt in FORMATS:
        with_text.save_pretrained(root / fmt, bank_dtype=storage(fmt))
    return {fmt: root / fmt for fmt in FORMATS}


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_first_stage_index_reads_every_format_single_and_batched(model, tokenizer, text_folders, fmt):
    bank = LycheeMemoryBank.from_pretrained(text_folders[fmt])
    policy = dict(first_stage="lexical", first_stage_candidates=1, first_stage_sample=0)
    ids = question_ids(tokenizer, QUESTIONS[0])
    out = model.generate(input_ids=ids, bank=bank, tokenizer=tokenizer, show_progress=False, do_sample=False,
                         return_dict_in_generate=True, **policy)  # fmt: skip
    assert "index: question" in [record.chosen_by for record in out.trace[0]]
    single = [answer(model, tokenizer, bank, q, **policy) for q in QUESTIONS]
    batched = generate_answers(model, tokenizer, bank, QUESTIONS, gate_policy=policy)
    assert batched == single


@pytest.mark.parametrize("fmt", BANK_DTYPES)
def test_a_corpus_question_names_its_document_in_every_format(checkpoint, model, tokenizer, fmt, tmp_path):
    corpus = tmp_path / "docs.jsonl"
    documents = {"paris": TEXT * 2, "bakery": "The bakery opens at seven. " * 12 + "Odile founded the bakery. "}
    corpus.write_text("".join(json.dumps({"id": k, "context": v}) + "\n" for k, v in documents.items()))
    compress_corpus(model, tokenizer, corpus, tmp_path / "banks", show_progress=False, bank_dtype=fmt)
    code, out, err = run_cli("ask", "--model", checkpoint, "--bank", tmp_path / "banks", "--question",
                             "Who founded the bakery?", "--candidates", "1", "--json", tmp_path / "a.json")  # fmt: skip
    assert code == 0, err
    result = json.loads((tmp_path / "a.json").read_text())
    assert "Documents: " in out and set(result["documents"]) <= set(documents)
    assert any(row["document"] == "bakery" and row["chosen_by"] == "index: question" for row in result["trace"])


@pytest.mark.parametrize("fmt", FORMATS)
def test_bank_convert_reads_every_format_and_writes_every_format(folders, exact, fmt, tmp_path):
    back = convert_bank(folders[fmt], tmp_path / "f32", "float32")
    assert back.bank_dtype == "float32" and len(back) == len(exact)
    again = convert_bank(tmp_path / "f32", tmp_path / "again", "int4" if fmt == "int4-legacy" else fmt)
    assert len(again) == len(exact)
    assert LycheeMemoryBank.from_pretrained(tmp_path / "again").verify() == len(exact)


def test_an_old_int4_bank_is_copied_in_its_own_layout_not_quantized_twice(folders, tmp_path):
    old = LycheeMemoryBank.from_pretrained(folders["int4-legacy"])
    old.save_pretrained(tmp_path / "copy")
    copy = LycheeMemoryBank.from_pretrained(tmp_path / "copy")
    for index in range(len(old)):
        assert torch.equal(copy.block(index).keys.codes, old.block(index).keys.codes)
        assert copy.block(index).values.rotation is None and copy.block(index).keys.outliers == 0


@pytest.mark.parametrize("fmt", BANK_DTYPES)
def test_eval_reads_blocks_in_every_format(model, tokenizer, fmt):
    example = QAExample("x", "niah", TEXT, QUESTIONS[0], ["4721"], [], 0)
    result = run_method("lychee", model, tokenizer, example, bank_dtype=fmt)
    assert isinstance(result.prediction, str) and result.stats["blocks"] >= 2


@pytest.mark.parametrize("fmt", FORMATS)
def test_gate_training_rows_read_every_format(folders, fmt):
    bank = LycheeMemoryBank.from_pretrained(folders[fmt])
    prompt = torch.tensor(tiny_tokenizer().encode("Code?", add_special_tokens=False))
    batch = collate_gate_rows([GateRow(bank, i, prompt, int(i == 0), "x") for i in range(len(bank))])
    for block in batch["blocks"]:
        keys, values = block.layer(0, "cpu", torch.float32)
        assert bool(torch.isfinite(keys).all()) and bool(torch.isfinite(values).all())
