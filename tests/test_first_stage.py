"""The first stage: a lexical index names the blocks the gate scores, so a question does not score every block."""

import json

import pytest
import torch

from lychee_hf import LycheeMemoryBank
from lychee_hf.data import QAExample
from lychee_hf.eval.baselines import run_method
from lychee_hf.modeling.first_stage_lychee import (
    CHOSEN_BY_MEMORY,
    CHOSEN_BY_QUESTION,
    CHOSEN_BY_SAMPLE,
    NOT_A_CANDIDATE,
    Candidates,
    FirstStage,
    LexicalIndex,
    spread_sample,
)
from lychee_hf.scale.questions import generate_answers
from lychee_hf.testing import question_ids, run_cli, save_tiny_checkpoint, tiny_lychee
from lychee_hf.text_banks import compress_text

FILLER = "The harbour town sells bread and fish at the market every day of the week.\n"
# ~26 blocks of filler (64-token chunks) with two facts far apart: a chain from the question's entity to the answer.
TEXT = FILLER * 10 + "Marigold keeps the ledger in the blue chest.\n" + FILLER * 10
TEXT += "The blue chest stands in the lighthouse cellar.\n" + FILLER * 10


@pytest.fixture(scope="module")
def model():
    return tiny_lychee(max_answer_tokens=4, memory_budget=8, gate_type="query_likelihood")


@pytest.fixture(scope="module")
def bank(model, tokenizer):
    return compress_text(model, tokenizer, TEXT)


def block_of(bank, phrase: str) -> int:
    text = bank.document_text
    return next(i for i in range(len(bank)) if phrase in text.block_text(i)[1])


def ask(model, tok, bank, question="Where does Marigold keep the ledger?", **kwargs):
    """The question's trace; `tokenizer=None` asks without a tokenizer."""
    kwargs.setdefault("tokenizer", tok)
    if kwargs["tokenizer"] is None:
        del kwargs["tokenizer"]
    out = model.generate(input_ids=question_ids(tok, question), bank=bank, return_dict_in_generate=True, **kwargs)
    return out.trace[0]


def test_index_ranks_the_block_sharing_the_questions_rare_words_first():
    index = LexicalIndex(["bread and fish", "Marigold keeps the ledger", "fish and bread again", ""])
    assert index.search("Where is the ledger Marigold keeps?", 2)[0][0] == 1


def test_index_search_among_returns_only_those_blocks():
    index = LexicalIndex(["ledger one", "ledger two", "ledger three"])
    assert {block for block, _ in index.search("ledger", 3, among=[0, 2])} == {0, 2}
    assert index.search("ledger", 3, among=[]) == []


def test_index_search_with_no_known_word_returns_nothing():
    assert LexicalIndex(["bread and fish"]).search("zebra", 3) == []


def test_a_saved_index_loads_back_and_ranks_alike_without_pickle(tmp_path):
    passages = ["bread and fish", "Marigold keeps the ledger", "the ledger is blue", "fish again"]
    LexicalIndex(passages).save(tmp_path / "index")
    assert not list((tmp_path / "index").glob("*.pkl")) and not list((tmp_path / "index").glob("*.pickle"))
    loaded = LexicalIndex.load(tmp_path / "index", passages)
    question = "Where is the ledger Marigold keeps?"
    assert loaded.search(question, 3) == LexicalIndex(passages).search(question, 3)
    with pytest.raises(ValueError):
        LexicalIndex.load(tmp_path / "index", passages[:2])  # another corpus: refused, not misread


def test_a_fact_cut_by_a_block_boundary_brings_the_block_that_finishes_it():
    index = LexicalIndex(["Filler text. Barafen Duloka was born", "in the year 1695. Filler.", "Filler text."])
    candidates = Candidates.for_question(index, "When was Barafen Duloka born?", 3, 1, 0)
    assert {0, 1} <= set(candidates.chosen_by) and 2 not in candidates.chosen_by


def test_spread_sample_is_even_and_deterministic():
    assert spread_sample(4, 100) == [12, 37, 62, 87]
    assert spread_sample(5, 3) == [0, 1, 2] and spread_sample(0, 10) == []


def test_candidates_cover_every_block_when_the_document_is_small():
    index = LexicalIndex(["a b", "c d", "e f"])
    assert Candidates.for_question(index, "c", 3, 2, 1).chosen_by == {0: "full scan", 1: "full scan", 2: "full scan"}


def test_candidates_add_the_memorys_blocks_ahead_only():
    index = LexicalIndex(["The chest.", "Filler.", "Filler.", "The chest is in the cellar.", "Filler.", "Filler."])
    candidates = Candidates.for_question(index, "filler", 6, 1, 0)
    assert candidates.add_for_memory("chest", after=1, k=2) == [3]  # block 0 also matches, but it is behind
    assert candidates.chosen_by[3] == CHOSEN_BY_MEMORY


def test_lexical_first_stage_scores_only_candidates_and_the_trace_says_why(model, tokenizer, bank):
    trace = ask(model, tokenizer, bank, first_stage="lexical", first_stage_candidates=2, first_stage_sample=3)
    scan = [record for record in trace if record.gate_decision != "revisit"]
    assert len(scan) == len(bank)  # one record per block, as the full scan gives
    gated = [record for record in scan if record.gate_decision != NOT_A_CANDIDATE]
    assert 3 <= len(gated) <= 2 + 3 + 2 * len(bank)  # question candidates + sample (+ memory candidates)
    assert len(gated) < len(bank)
    chosen = {record.block_index: record.chosen_by for record in gated}
    assert chosen[block_of(bank, "Marigold")] == CHOSEN_BY_QUESTION
    assert CHOSEN_BY_SAMPLE in chosen.values()
    for record in scan:
        if record.gate_decision == NOT_A_CANDIDATE:
            assert record.chosen_by == "" and not record.kept and record.gate_seconds == 0.0


def test_full_scan_is_unchanged_by_the_first_stage_code(model, tokenizer, bank):
    trace = ask(model, tokenizer, bank, first_stage="full_scan")
    assert all(record.chosen_by == "full scan" for record in trace)
    without = ask(model, tokenizer, bank, tokenizer=None)
    assert [r.gate_score for r in trace] == [r.gate_score for r in without]
    assert trace.answer_ids == without.answer_ids


def test_lexical_first_stage_keeps_the_candidates_scores_of_the_full_scan_pass(model, tokenizer, bank):
    """With every block a candidate, the view is the bank itself: the same scores and answer as the full scan."""
    lexical = ask(model, tokenizer, bank, first_stage="lexical", first_stage_candidates=len(bank))
    full = ask(model, tokenizer, bank, first_stage="full_scan")
    assert [r.gate_score for r in lexical] == [r.gate_score for r in full]
    assert lexical.answer_ids == full.answer_ids


def test_memory_adds_candidates_ahead_when_the_gate_reads_memory(tokenizer, monkeypatch):
    model = tiny_lychee(
        max_answer_tokens=4, memory_budget=8, gate_type="query_likelihood", gate_reads_memory=True, gate_threshold=0.0
    )
    bank = compress_text(model, tokenizer, TEXT)
    question = question_ids(tokenizer, "Where does Marigold keep the ledger?")[0]
    real_decode = FirstStage.decode

    def decode(self, ids):  # the memory, whatever the random model wrote, "names" the chain's next entity
        return real_decode(self, ids) if torch.equal(ids.cpu(), question) else "lighthouse cellar"

    monkeypatch.setattr(FirstStage, "decode", decode)
    trace = ask(model, tokenizer, bank, first_stage="lexical", first_stage_candidates=1, first_stage_sample=1)
    cellar = block_of(bank, "cellar")
    assert trace[cellar].chosen_by == CHOSEN_BY_MEMORY and trace[cellar].kept


def test_a_bank_without_text_takes_the_full_scan(model, tokenizer, bank):
    plain = LycheeMemoryBank(bank.blocks, bank.fingerprint)
    trace = ask(model, tokenizer, plain, first_stage="lexical", first_stage_candidates=1)
    assert all(record.chosen_by == "full scan" for record in trace)


def test_lexical_without_tokenizer_is_refused_with_the_fix(model, tokenizer, bank):
    with pytest.raises(ValueError, match="tokenizer=tokenizer"):
        ask(model, tokenizer, bank, first_stage="lexical", tokenizer=None)


def test_configs_lexical_without_tokenizer_warns_and_scans(tokenizer, bank):
    model = tiny_lychee(max_answer_tokens=4, memory_budget=8, gate_type="query_likelihood", first_stage="lexical")
    with pytest.warns(UserWarning, match="full scan"):
        trace = ask(model, tokenizer, bank, tokenizer=None)
    assert all(record.chosen_by == "full scan" for record in trace)


@pytest.mark.parametrize(
    "setting, message",
    [
        ({"first_stage": "bm25"}, "first_stage must be one of"),
        ({"first_stage_candidates": 0}, "first_stage_candidates must be an integer >= 1"),
        ({"first_stage_sample": -1}, "first_stage_sample must be an integer >= 0"),
        ({"first_stage_candidates": True}, "first_stage_candidates must be an integer"),
    ],
)
def test_bad_first_stage_settings_are_refused(model, tokenizer, bank, setting, message):
    with pytest.raises(ValueError, match=message):
        ask(model, tokenizer, bank, **setting)


def test_first_stage_round_trips_in_the_config(tmp_path):
    model = tiny_lychee(first_stage="lexical", first_stage_candidates=5, first_stage_sample=2)
    model.config.save_pretrained(tmp_path)
    config = type(model.config).from_pretrained(tmp_path)
    assert (config.first_stage, config.first_stage_candidates, config.first_stage_sample) == ("lexical", 5, 2)


def test_candidate_records_reach_the_json_schema(model, tokenizer, bank):
    trace = ask(model, tokenizer, bank, first_stage="lexical", first_stage_candidates=2, first_stage_sample=1)
    rows = trace.to_dict(tokenizer)["trace"]
    assert {row["chosen_by"] for row in rows} >= {CHOSEN_BY_QUESTION, ""}
    assert all(torch.isfinite(torch.tensor(row["gate_score"])) for row in rows)


def test_second_look_revisits_only_candidates(tokenizer):
    model = tiny_lychee(
        max_answer_tokens=4, memory_budget=8, gate_type="query_likelihood", gate_reads_memory=True, gate_revisit=True
    )
    bank = compress_text(model, tokenizer, TEXT)
    trace = ask(model, tokenizer, bank, first_stage="lexical", first_stage_candidates=2, first_stage_sample=2)
    not_candidates = {r.block_index for r in trace if r.gate_decision == NOT_A_CANDIDATE}
    revisited = [r for r in trace if r.gate_decision == "revisit"]
    assert not_candidates and not any(r.block_index in not_candidates for r in revisited)
    assert all(r.chosen_by for r in revisited)


# ---------------------------------------------------------------------------------------- where users meet it
def test_cli_ask_with_the_index_scores_only_candidates(tmp_path):
    checkpoint = save_tiny_checkpoint(tmp_path / "ckpt", max_answer_tokens=4, memory_budget=8,
                                      gate_type="query_likelihood")  # fmt: skip
    (tmp_path / "doc.txt").write_text(TEXT)
    code, _, err = run_cli("ask", "--model", checkpoint, "--context", tmp_path / "doc.txt", "--question",
                           "Where does Marigold keep the ledger?", "--first-stage", "lexical", "--candidates", "1",
                           "--json", tmp_path / "a.json")  # fmt: skip
    assert code == 0, err
    rows = json.loads((tmp_path / "a.json").read_text())["trace"]
    assert {row["chosen_by"] for row in rows} == {CHOSEN_BY_QUESTION, CHOSEN_BY_SAMPLE, ""}
    code, _, err = run_cli("ask", "--model", checkpoint, "--context", tmp_path / "doc.txt", "--question", "Ledger?",
                           "--first-stage", "full_scan", "--json", tmp_path / "b.json")  # fmt: skip
    assert code == 0, err
    assert {row["chosen_by"] for row in json.loads((tmp_path / "b.json").read_text())["trace"]} == {"full scan"}


def test_cli_refuses_an_unknown_first_stage(tmp_path):
    code, _, err = run_cli("ask", "--context", "x.txt", "--question", "q", "--first-stage", "bm25")
    assert code == 2 and "--first-stage" in err and "lexical" in err


def test_batched_questions_over_a_bank_use_the_index(model, tokenizer, bank):
    answers = generate_answers(model, tokenizer, bank, ["Where does Marigold keep the ledger?", "Ledger?"],
                               gate_policy={"first_stage": "lexical", "first_stage_candidates": 1})  # fmt: skip
    single = ask(model, tokenizer, bank, first_stage="lexical", first_stage_candidates=1)
    assert answers[0] == tokenizer.decode(single.answer_ids, skip_special_tokens=True).strip()


def test_eval_method_lychee_index_runs_the_first_stage(model, tokenizer):
    example = QAExample("x", "jsonl", TEXT, "Where does Marigold keep the ledger?", ["blue chest"], [], 0)
    result = run_method("lychee-index", model, tokenizer, example)
    assert {row["chosen_by"] for row in result.trace} >= {CHOSEN_BY_QUESTION, ""}
    assert result.stats["compress_seconds"] > 0 and model.config.first_stage == "full_scan"  # restored after


@pytest.mark.parametrize("bank_dtype", ["float16", "int8", "int4"])
def test_the_index_reads_a_quantized_bank_the_same_way(model, tokenizer, bank, bank_dtype):
    quantized = bank.astype(bank_dtype)
    trace = ask(model, tokenizer, quantized, first_stage="lexical", first_stage_candidates=2, first_stage_sample=1)
    float_trace = ask(model, tokenizer, bank, first_stage="lexical", first_stage_candidates=2, first_stage_sample=1)
    assert [r.chosen_by for r in trace] == [r.chosen_by for r in float_trace]  # the index reads text, not K/V
