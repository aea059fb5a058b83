"""The classifier gate, the gate policies (threshold, at most k, keep last) and batched scoring."""

import pytest
import torch

from lychee_hf.modeling.gate_lychee import GatePolicy
from lychee_hf.testing import document_ids, question_ids, tiny_lychee

peft = pytest.importorskip("peft")

from lychee_hf.modeling.adapters_lychee import BACKBONE_LORA_TARGETS  # noqa: E402


def _classifier_model(**knobs):
    model = tiny_lychee(gate_type="classifier", **knobs)
    lora = peft.LoraConfig(r=4, target_modules=BACKBONE_LORA_TARGETS, init_lora_weights=False)
    model.add_role_adapter(lora, "gate")
    return model


def _generate(model, tokenizer, tokens=256, **kwargs):
    return model.generate(
        input_ids=question_ids(tokenizer),
        context_ids=document_ids(tokenizer, tokens),
        return_dict_in_generate=True,
        do_sample=False,
        **kwargs,
    )


@pytest.mark.parametrize(
    "policy, score, is_last, kept_so_far, expected",
    [
        (GatePolicy(0.5), 0.6, False, 0, (True, "related")),
        (GatePolicy(0.5), 0.4, False, 0, (False, "unrelated")),
        (GatePolicy(0.5, max_blocks=2), 0.9, False, 2, (False, "block limit")),
        (GatePolicy(0.5, max_blocks=2, keep_last=True), 0.9, False, 1, (False, "block limit")),
        (GatePolicy(0.5, max_blocks=2, keep_last=True), 0.1, True, 2, (True, "last block")),
        (GatePolicy(0.5, max_blocks=2, keep_last=True), 0.9, True, 1, (True, "last block")),
    ],
)
def test_gate_policy_decides_by_threshold_block_limit_and_last_block(policy, score, is_last, kept_so_far, expected):
    assert policy.decide(score, is_last, kept_so_far) == expected


def test_gate_policy_overrides_are_validated(tokenizer):
    model = tiny_lychee()
    with pytest.raises(ValueError, match="gate_max_blocks must be a positive integer"):
        _generate(model, tokenizer, gate_max_blocks=0)
    with pytest.raises(ValueError, match="gate_threshold=1.5 must lie in"):
        _generate(model, tokenizer, gate_threshold=1.5)


def test_generate_reads_at_most_k_blocks_and_always_the_last(tokenizer):
    model = tiny_lychee()  # always related: every block would be read
    trace = _generate(model, tokenizer, gate_max_blocks=2, gate_keep_last=True).trace[0]
    assert [r.kept for r in trace] == [True, False, False, True]
    assert [r.gate_decision for r in trace] == ["related", "block limit", "block limit", "last block"]


def test_classifier_gate_without_a_gate_adapter_is_refused(tokenizer):
    with pytest.raises(ValueError, match="needs a trained gate adapter.*train-gate"):
        _generate(tiny_lychee(gate_type="classifier"), tokenizer)


def test_classifier_gate_scores_every_block_and_records_it(tokenizer):
    model = _classifier_model()
    trace = _generate(model, tokenizer, gate_threshold=0.0).trace[0]
    assert len(trace) == 4 and all(0.0 < r.gate_score < 1.0 and r.kept for r in trace)


def test_classifier_gate_rescores_the_blocks_ahead_only_after_the_memory_changes(tokenizer, monkeypatch):
    model = _classifier_model(gate_batch_size=3)
    passes = []
    original = type(model.gate).logits

    def counting(self, model_, blocks, prompts, forward=None):
        passes.append(len(blocks))
        return original(self, model_, blocks, prompts, forward)

    monkeypatch.setattr(type(model.gate), "logits", counting)
    trace = _generate(model, tokenizer, gate_threshold=0.0).trace[0]
    kept_before_last = sum(r.kept for r in trace[:-1])
    # One batched scoring of all remaining blocks at the start and after each memory update (batches of 3).
    assert passes[:2] == [3, 1]
    assert len(passes) <= 2 + 2 * kept_before_last


def test_classifier_gate_scores_depend_on_the_memory(tokenizer):
    model = _classifier_model()
    bank = model.compress(document_ids(tokenizer, 128))
    question = question_ids(tokenizer)[0]
    with torch.no_grad():
        empty = model.gate.score_blocks(model, bank, 0, question, torch.tensor([5, 6]))
        other = model.gate.score_blocks(model, bank, 0, question, torch.tensor([7, 8, 9, 10]))
    assert empty.shape == (2,) and not torch.allclose(empty, other)


def test_set_gate_switches_to_the_classifier_with_its_prompt(tokenizer):
    model = tiny_lychee()
    model.set_gate("classifier", tokenizer)
    assert model.config.gate_type == "classifier" and len(model.config.gate_template_ids) == 3
    assert model.config.gate_label_ids == [tokenizer.encode("yes")[0], tokenizer.encode("no")[0]]
    with pytest.raises(ValueError, match="three pieces|3 pieces"):
        tiny_lychee().set_gate("classifier")


def test_gate_scoring_halves_its_batch_when_memory_runs_out(tokenizer, monkeypatch):
    model = _classifier_model(gate_batch_size=4)
    bank = model.compress(document_ids(tokenizer, 256))
    question, memory = question_ids(tokenizer)[0], torch.tensor([5, 6])
    expected = model.gate.score_blocks(model, bank, 0, question, memory)
    original, sizes = type(model.gate).logits, []

    def small_memory(self, model_, blocks, prompts, forward=None):
        sizes.append(len(blocks))
        if len(blocks) > 1:
            raise torch.OutOfMemoryError("fake: out of memory")
        return original(self, model_, blocks, prompts, forward)

    monkeypatch.setattr(type(model.gate), "logits", small_memory)
    assert torch.allclose(model.gate.score_blocks(model, bank, 0, question, memory), expected, atol=1e-6)
    assert sizes == [4, 2, 1, 1, 1, 1]
