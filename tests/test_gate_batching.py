"""Questions asked of one bank together share the gate's passes: one forward per block for all of them, with the
scores each question gets alone."""

import pytest
import torch

from lychee_hf.modeling.prompts_lychee import left_pad
from lychee_hf.modeling.reasoner_lychee import ReasonerLoop
from lychee_hf.testing import tiny_lychee
from lychee_hf.text_banks import compress_text

TEXT = ("The harbour town sells bread and fish at the market.\n" * 5 + "Marigold keeps the ledger in the chest.\n") * 3
QUESTIONS = ["Where does Marigold keep the ledger?", "What does the town sell?", "Who keeps the ledger?"]


@pytest.fixture(scope="module")
def model():
    return tiny_lychee(max_answer_tokens=4, memory_budget=8, gate_type="query_likelihood", gate_reads_memory=True)


@pytest.fixture(scope="module")
def bank(model, tokenizer):
    return compress_text(model, tokenizer, TEXT)


def encoded(tokenizer, questions):
    return [torch.tensor(tokenizer.encode(q, add_special_tokens=False)) for q in questions]


def test_many_texts_score_as_each_alone(model, tokenizer, bank):
    texts = encoded(tokenizer, QUESTIONS)
    together = model.gate.text_likelihoods_many(model, bank, 1, texts)
    alone = torch.stack([model.gate.text_likelihoods(model, bank, 1, text) for text in texts])
    assert together.shape == (len(texts), len(bank) - 1)
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


def test_batched_questions_read_and_answer_as_each_alone(model, tokenizer, bank):
    ids, mask = left_pad(encoded(tokenizer, QUESTIONS), tokenizer.pad_token_id)
    batched = model.generate(input_ids=ids, attention_mask=mask, bank=bank, return_dict_in_generate=True).trace
    for question, trace in zip(encoded(tokenizer, QUESTIONS), batched):
        alone = model.generate(input_ids=question[None], bank=bank, return_dict_in_generate=True).trace[0]
        assert [r.kept for r in trace] == [r.kept for r in alone]
        torch.testing.assert_close(
            torch.tensor([r.gate_score for r in trace]), torch.tensor([r.gate_score for r in alone]), atol=1e-4, rtol=0
        )
        assert trace.answer_ids == alone.answer_ids


def test_batched_questions_take_fewer_gate_passes(model, tokenizer, bank, monkeypatch):
    calls = {"n": 0}
    forward = type(model).forward

    def counting(self, *args, **kwargs):
        calls["n"] += 1
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(type(model), "forward", counting)
    ids, mask = left_pad(encoded(tokenizer, QUESTIONS), tokenizer.pad_token_id)
    model.generate(input_ids=ids, attention_mask=mask, bank=bank, gate_threshold=1.0)  # the gate only: nothing read
    together = calls["n"]
    calls["n"] = 0
    for question in encoded(tokenizer, QUESTIONS):
        model.generate(input_ids=question[None], bank=bank, gate_threshold=1.0)
    assert together < calls["n"]


PLACES = ["lighthouse", "bakery", "tannery", "mill", "chapel", "granary"]
DISTINCT = "".join(f"The {place} has a red door and a copper bell. " * 3 + "\n" for place in PLACES)
ASKED = ["Who keeps the tannery?", "Who keeps the chapel?", "Who keeps the lighthouse?"]


def test_questions_reading_different_blocks_share_every_memory_update_call(model, tokenizer, monkeypatch):
    # Each question's index candidate is another block, and a zero threshold reads every candidate: the rows keep
    # different blocks. Walking each row to its own next kept block puts all rows in every update call.
    bank = compress_text(model, tokenizer, DISTINCT)
    policy = dict(tokenizer=tokenizer, first_stage="lexical", first_stage_candidates=1, first_stage_sample=0,
                  gate_threshold=0.0, return_dict_in_generate=True)  # fmt: skip
    sizes, update = [], ReasonerLoop.update_memories

    def counting(self, blocks, *args, **kwargs):
        sizes.append(len(blocks))
        return update(self, blocks, *args, **kwargs)

    monkeypatch.setattr(ReasonerLoop, "update_memories", counting)
    ids, mask = left_pad(encoded(tokenizer, ASKED), tokenizer.pad_token_id)
    batched = model.generate(input_ids=ids, attention_mask=mask, bank=bank, **policy).trace
    kept = [[r.block_index for r in trace if r.kept] for trace in batched]
    assert len({tuple(blocks) for blocks in kept}) == len(ASKED), kept  # the rows read different blocks
    assert len(sizes) == max(len(blocks) for blocks in kept) and sizes[0] == len(ASKED)
    sizes.clear()
    for question, trace in zip(encoded(tokenizer, ASKED), batched):
        alone = model.generate(input_ids=question[None], bank=bank, **policy).trace[0]
        assert [r.kept for r in trace] == [r.kept for r in alone]
        assert trace.answer_ids == alone.answer_ids
        assert [r.memory_ids for r in trace] == [r.memory_ids for r in alone]


def test_reading_works_with_transformers_progress_bars_turned_off(model, tokenizer, bank):
    # `lychee-hf --quiet` and the service turn transformers' bars off: its tqdm is then a stand-in without counters.
    from transformers.utils import logging

    logging.disable_progress_bar()
    try:
        out = model.generate(input_ids=encoded(tokenizer, QUESTIONS[:1])[0][None], bank=bank, show_progress=True,
                             return_dict_in_generate=True)  # fmt: skip
    finally:
        logging.enable_progress_bar()
    assert len(out.trace[0]) == len(bank)
