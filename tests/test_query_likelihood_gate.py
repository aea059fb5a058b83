"""The weight-free query-likelihood gate, with and without `gate_reads_memory`."""

import pytest
import torch

from lychee_hf.testing import document_ids, question_ids, tiny_lychee


def _bank_and_question(model, tokenizer, tokens=256):
    return model.compress(document_ids(tokenizer, tokens)), question_ids(tokenizer)[0]


def test_query_likelihood_gate_reads_the_memory_only_when_configured():
    assert not tiny_lychee(gate_type="query_likelihood").gate.reads_memory
    assert tiny_lychee(gate_type="query_likelihood", gate_reads_memory=True).gate.reads_memory


def test_memory_reading_gate_scores_by_the_question_alone_while_the_memory_is_initial(tokenizer):
    torch.manual_seed(0)
    plain = tiny_lychee(gate_type="query_likelihood")
    reading = tiny_lychee(gate_type="query_likelihood", gate_reads_memory=True)
    reading.load_state_dict(plain.state_dict())
    bank, question = _bank_and_question(plain, tokenizer)
    initial = torch.tensor(plain.config.initial_memory_ids or [], dtype=torch.long)
    expected = plain.gate.score_blocks(plain, bank, 1, question, torch.tensor([5, 6, 7]))
    assert torch.equal(reading.gate.score_blocks(reading, bank, 1, question, initial), expected)


def test_memory_reading_gate_keeps_every_block_ahead_the_question_alone_would_keep(tokenizer):
    torch.manual_seed(0)
    model = tiny_lychee(gate_type="query_likelihood", gate_reads_memory=True)
    bank, question = _bank_and_question(model, tokenizer)
    by_question = model.gate.question_probabilities(model, bank, 0, question)
    scores = model.gate.score_blocks(model, bank, 1, question, torch.tensor([5, 6, 7, 8]))
    assert scores.shape == (len(bank) - 1,)
    assert torch.all(scores >= by_question[1:])


def test_memory_reading_gate_keeps_the_block_that_makes_the_memory_likely(tokenizer, monkeypatch):
    """Flat question likelihoods and one block far above the others on the memory: that block alone passes."""
    model = tiny_lychee(gate_type="query_likelihood", gate_reads_memory=True, chunk_size=32)
    bank, question = _bank_and_question(model, tokenizer, tokens=256)
    memory = torch.tensor([11, 12, 13])
    spike = 5  # block index, counted from the start of the document

    def likelihoods(self, model_, bank_, start, text_ids):
        values = torch.full((len(bank_) - start,), -4.0)
        if torch.equal(text_ids, memory):
            values[spike - start] = -1.0
        else:
            values[0] = -3.9  # the best question block is block `start` (block 0 on the first pass)
        return values

    monkeypatch.setattr(type(model.gate), "text_likelihoods", likelihoods)
    scores = model.gate.score_blocks(model, bank, 2, question, memory)
    kept = [2 + i for i, p in enumerate(scores.tolist()) if p >= model.config.gate_threshold]
    assert kept == [spike]


def _counted(method, passes):
    def counted(self, model_, bank, start, *args):
        passes.append(start)
        return method(self, model_, bank, start, *args)

    return counted


@pytest.mark.parametrize("reads_memory, rescored", [(False, False), (True, True)])
def test_generate_rescores_the_blocks_ahead_after_an_update_only_with_gate_reads_memory(
    reads_memory, rescored, tokenizer, monkeypatch
):
    torch.manual_seed(0)
    model = tiny_lychee(gate_type="query_likelihood", gate_reads_memory=reads_memory)
    passes = []
    for name in ("score_blocks", "rescore_blocks"):
        monkeypatch.setattr(type(model.gate), name, _counted(getattr(type(model.gate), name), passes))
    out = model.generate(
        input_ids=question_ids(tokenizer),
        context_ids=document_ids(tokenizer, 300),
        return_dict_in_generate=True,
        gate_threshold=0.0,
        do_sample=False,
    )
    assert passes[0] == 0 and len(out.trace[0]) > 2
    assert (len(passes) > 1) == rescored


def test_rescoring_from_the_first_pass_gives_the_scores_of_a_fresh_pass(tokenizer):
    torch.manual_seed(0)
    model = tiny_lychee(gate_type="query_likelihood", gate_reads_memory=True)
    bank, question = _bank_and_question(model, tokenizer)
    initial = torch.tensor(model.config.initial_memory_ids or [], dtype=torch.long)
    first_pass = model.gate.score_blocks(model, bank, 0, question, initial)
    memory = torch.tensor([5, 6, 7, 8])
    rescored = model.gate.rescore_blocks(model, bank, 2, question, memory, first_pass)
    assert torch.equal(rescored, model.gate.score_blocks(model, bank, 2, question, memory))


def test_generate_scores_the_question_once_however_often_the_memory_reading_gate_rescores(tokenizer, monkeypatch):
    torch.manual_seed(0)
    model = tiny_lychee(gate_type="query_likelihood", gate_reads_memory=True)
    question = question_ids(tokenizer)
    scored = []
    text_likelihoods = type(model.gate).text_likelihoods

    def recorded(self, model_, bank, start, text_ids):
        scored.append("question" if torch.equal(text_ids.cpu(), question[0]) else "memory")
        return text_likelihoods(self, model_, bank, start, text_ids)

    monkeypatch.setattr(type(model.gate), "text_likelihoods", recorded)
    model.generate(input_ids=question, context_ids=document_ids(tokenizer, 300), gate_threshold=0.0, do_sample=False)
    assert scored.count("question") == 1 and scored.count("memory") >= 1


def test_likelihood_midpoint_rises_with_the_number_of_blocks_as_chance_maxima_do():
    from lychee_hf.modeling.gate_lychee import QUERY_LIKELIHOOD_MIDPOINT, likelihood_midpoint

    assert likelihood_midpoint(3) == QUERY_LIKELIHOOD_MIDPOINT
    assert likelihood_midpoint(8) == pytest.approx(2.04, abs=0.01)
    assert likelihood_midpoint(128) == pytest.approx(3.11, abs=0.01)


def test_chance_alone_passes_at_most_one_block_of_a_long_document():
    """128 blocks of pure noise (32K tokens): a fixed midpoint of 1.5 spreads would keep several of them. (The
    largest of 128 draws passes 3.1 spreads about one time in eight, so one block may still pass.)"""
    from lychee_hf.modeling.gate_lychee import QUERY_LIKELIHOOD_MIDPOINT, likelihood_probabilities

    noise = torch.randn(128, generator=torch.Generator().manual_seed(0)) - 3.0
    z = (noise - noise.median()) / noise.std(unbiased=False)
    assert int((z > QUERY_LIKELIHOOD_MIDPOINT).sum()) >= 5
    assert int((likelihood_probabilities(noise) >= 0.5).sum()) <= 1
