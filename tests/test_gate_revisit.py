"""`gate_revisit`: after the in-order scan, a second look at the skipped blocks against the final memory."""

import pytest
import torch

from lychee_hf.modeling.gate_lychee import GatePolicy, LycheeGate
from lychee_hf.testing import document_ids, question_ids, tiny_lychee


class FirstBlockOnSecondLook(LycheeGate):
    """Skips block 0 on the scan and keeps the others; on the second look, finds block 0 alone related."""

    reads_memory = True

    def score_blocks(self, model, bank, start, question_ids, memory_ids):
        return torch.tensor([0.0 if i == 0 else 0.9 for i in range(start, len(bank))])

    def revisit_scores(self, model, bank, blocks, question_ids, memory_ids, first_pass):
        return torch.tensor([0.9 if block == 0 else 0.0 for block in blocks])


def _trace(model, tokenizer, tokens=150, **kwargs):
    out = model.generate(
        input_ids=question_ids(tokenizer),
        context_ids=document_ids(tokenizer, tokens),
        return_dict_in_generate=True,
        do_sample=False,
        **kwargs,
    )
    return out.trace[0]


def test_revisit_reads_a_skipped_block_after_the_scan(tokenizer):
    torch.manual_seed(0)
    model = tiny_lychee()
    model.gate = FirstBlockOnSecondLook(model.config)
    trace = _trace(model, tokenizer, gate_revisit=True)
    assert [(r.block_index, r.kept, r.gate_decision) for r in trace] == [
        (0, False, "unrelated"),
        (1, True, "related"),
        (2, True, "related"),
        (0, True, "revisit"),
    ]
    assert trace[-1].prompt_tokens > 0  # the reasoner read it


def test_revisit_is_off_unless_asked(tokenizer):
    torch.manual_seed(0)
    model = tiny_lychee()
    model.gate = FirstBlockOnSecondLook(model.config)
    assert [r.gate_decision for r in _trace(model, tokenizer)] == ["unrelated", "related", "related"]


def test_revisit_keeps_to_the_block_limit(tokenizer):
    torch.manual_seed(0)
    model = tiny_lychee()
    model.gate = FirstBlockOnSecondLook(model.config)
    trace = _trace(model, tokenizer, gate_revisit=True, gate_max_blocks=2)
    assert sum(r.kept for r in trace) == 2 and all(r.gate_decision != "revisit" for r in trace)


@pytest.mark.parametrize(
    "policy, score, kept_so_far, expected",
    [
        (GatePolicy(0.5, revisit=True), 0.6, 3, True),
        (GatePolicy(0.5, revisit=True), 0.4, 0, False),
        (GatePolicy(0.5, max_blocks=2, revisit=True), 0.9, 2, False),
        (GatePolicy(0.5, max_blocks=2, keep_last=True, revisit=True), 0.9, 1, True),  # the last read is done
    ],
)
def test_gate_policy_revisits_related_blocks_within_the_limit(policy, score, kept_so_far, expected):
    assert policy.revisits(score, kept_so_far) is expected


def test_revisit_with_a_gate_that_ignores_the_memory_is_refused(tokenizer):
    model = tiny_lychee(gate_type="query_likelihood")
    with pytest.raises(ValueError, match="gate_revisit needs a gate that reads the working memory"):
        _trace(model, tokenizer, gate_revisit=True)


def test_query_likelihood_revisit_keeps_the_skipped_block_that_makes_the_final_memory_likely(tokenizer, monkeypatch):
    model = tiny_lychee(gate_type="query_likelihood", gate_reads_memory=True, chunk_size=32)
    bank = model.compress(document_ids(tokenizer, 256))
    question, memory = question_ids(tokenizer)[0], torch.tensor([11, 12, 13])
    spike = 2  # comes before the block that wrote the memory (block 6)

    def likelihoods(self, model_, bank_, start, text_ids):
        values = torch.full((len(bank_) - start,), -4.0)
        values[6 - start] = -0.5  # the block that wrote the memory scores highest of all on it
        values[spike - start] = -1.0
        return values

    monkeypatch.setattr(type(model.gate), "text_likelihoods", likelihoods)
    first_pass = torch.zeros(len(bank))
    skipped = [i for i in range(len(bank)) if i != 6]
    scores = model.gate.revisit_scores(model, bank, skipped, question, memory, first_pass)
    assert [block for block, p in zip(skipped, scores.tolist()) if p >= model.config.gate_threshold] == [spike]


def test_query_likelihood_revisit_keeps_the_question_scores_while_the_memory_is_initial(tokenizer):
    torch.manual_seed(0)
    model = tiny_lychee(gate_type="query_likelihood", gate_reads_memory=True)
    bank = model.compress(document_ids(tokenizer, 256))
    initial = torch.tensor(model.config.initial_memory_ids or [], dtype=torch.long)
    first_pass = torch.linspace(0, 1, len(bank))
    scores = model.gate.revisit_scores(model, bank, [0, 2], question_ids(tokenizer)[0], initial, first_pass)
    assert torch.equal(scores, first_pass[[0, 2]])


def test_query_likelihood_gate_revisits_the_first_hop_it_scanned_past(tokenizer, monkeypatch):
    """The question points at block 3, the memory written there at block 1: the second look reads block 1."""
    torch.manual_seed(0)
    model = tiny_lychee(gate_type="query_likelihood", gate_reads_memory=True, gate_revisit=True)
    question = question_ids(tokenizer)

    def likelihoods(self, model_, bank, start, text_ids):
        values = torch.full((len(bank),), -4.0)
        values[3 if torch.equal(text_ids.cpu(), question[0]) else 1] = -1.0
        return values[start:]

    monkeypatch.setattr(type(model.gate), "text_likelihoods", likelihoods)
    trace = _trace(model, tokenizer, tokens=300)
    assert trace[3].kept and trace[3].memory_ids != (model.config.initial_memory_ids or [])
    assert [(r.block_index, r.gate_decision) for r in trace if r.kept] == [(3, "related"), (1, "revisit")]
