"""The weights digest in a bank's fingerprint covers every weight that shapes a block's K/V, and is cached."""

import pytest
import torch

from lychee_hf.modeling import fingerprint_lychee
from lychee_hf.modeling.memory_bank_lychee import MemoryBankError
from lychee_hf.testing import document_ids, question_ids, tiny_lychee


@pytest.fixture
def model():
    return tiny_lychee()


def _digest(model) -> str:
    return model.memory_fingerprint()["weights_digest"]


def test_a_model_that_differs_only_in_its_layer_0_mlp_refuses_the_bank(model, tokenizer):
    bank = model.compress(document_ids(tokenizer, 100))
    before = _digest(model)
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight[0, 0] += 1e-3
    assert _digest(model) != before
    with pytest.raises(MemoryBankError, match="weights_digest"):
        model.generate(input_ids=question_ids(tokenizer), bank=bank)


@pytest.mark.parametrize(
    "weight",
    ["model.embed_tokens.weight", "model.layers.1.input_layernorm.weight", "compressor.memory_embedding.weight"],
)
def test_every_weight_below_the_blocks_is_covered(model, weight):
    before = _digest(model)
    with torch.no_grad():
        model.get_parameter(weight).view(-1)[0] += 1e-3
    assert _digest(model) != before


@pytest.mark.parametrize("weight", ["lm_head.weight", "model.norm.weight"])
def test_weights_that_never_reach_a_block_leave_the_digest_alone(model, weight):
    before = _digest(model)
    with torch.no_grad():
        model.get_parameter(weight).view(-1)[0] += 1.0
    assert _digest(model) == before


def test_a_reasoner_adapter_leaves_the_digest_alone_and_a_compressor_adapter_changes_it(model):
    peft = pytest.importorskip("peft")
    from lychee_hf.modeling.adapters_lychee import BACKBONE_LORA_TARGETS

    before = _digest(model)
    config = peft.LoraConfig(r=2, target_modules=BACKBONE_LORA_TARGETS, init_lora_weights=False)
    model.add_role_adapter(config, "reasoner")
    assert _digest(model) == before
    model.add_role_adapter(config, "compressor")
    assert _digest(model) != before


def test_the_digest_is_computed_once_and_again_only_after_a_weight_changes(model, monkeypatch):
    calls = []
    original = fingerprint_lychee.hash_tensors
    monkeypatch.setattr(fingerprint_lychee, "hash_tensors", lambda tensors: calls.append(1) or original(tensors))
    first = _digest(model)
    assert _digest(model) == first and len(calls) == 1
    with torch.no_grad():
        model.model.layers[1].self_attn.o_proj.weight.mul_(1.01)
    assert _digest(model) != first and len(calls) == 2
    model.load_state_dict(model.state_dict())  # a reload of the same values recomputes the same digest
    assert len({_digest(model), _digest(model)}) == 1 and len(calls) == 3
