"""Named PEFT adapters per role: phases, save/load in PEFT's layout, and the standard PEFT workflow."""

import json

import pytest
import torch

peft = pytest.importorskip("peft")

from lychee_hf import LycheeMemoryForCausalLM  # noqa: E402
from lychee_hf.modeling.adapters_lychee import (  # noqa: E402
    BACKBONE_LORA_TARGETS,
    adapter_names,
    role_adapter,
    tuner_layers,
)
from lychee_hf.testing import document_ids, question_ids, tiny_lychee  # noqa: E402


def _lora(rank: int = 4) -> "peft.LoraConfig":
    # Random B (not zeros) so that an adapter changes outputs from the start.
    return peft.LoraConfig(r=rank, target_modules=BACKBONE_LORA_TARGETS, init_lora_weights=False)


def _with_adapters(*roles, **knobs):
    model = tiny_lychee(**knobs)
    for role in roles:
        model.add_role_adapter(_lora(), role)
    return model


def _bank_keys(model, doc):
    return model.compress(doc).block(0).keys


def test_compression_runs_with_the_compressor_adapter_only(tokenizer):
    doc = document_ids(tokenizer, 64)
    plain = _bank_keys(tiny_lychee(), doc)
    assert torch.equal(_bank_keys(_with_adapters("reasoner", "gate"), doc), plain)
    assert not torch.allclose(_bank_keys(_with_adapters("compressor"), doc), plain)


def test_memory_updates_and_answer_run_with_the_reasoner_adapter_only(tokenizer):
    doc, question = document_ids(tokenizer, 150), question_ids(tokenizer)

    def run(model):
        out = model.generate(input_ids=question, context_ids=doc, return_dict_in_generate=True, do_sample=False)
        return out.sequences, [r.memory_ids for r in out.trace[0]]

    plain = run(tiny_lychee())
    with_others = run(_with_adapters("compressor"))  # changes the blocks, hence memories, but not via the reasoner
    reasoner = run(_with_adapters("reasoner"))
    assert run(_with_adapters("gate"))[1] == plain[1]  # an always-related gate never runs the gate adapter
    assert reasoner[1] != plain[1]
    assert with_others[1] != reasoner[1]


@pytest.mark.compat
def test_role_adapter_restores_the_active_adapter_and_trainability():
    model = _with_adapters("gate", "reasoner")
    model.activate_role_adapter("reasoner")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    with role_adapter(model, "gate"):
        pass
    with role_adapter(model, "compressor"):  # no compressor adapter: every adapter is off inside
        x = torch.tensor([[5, 6, 7]])
        off = model(x).logits
    assert {tuple(layer.active_adapters) for layer in tuner_layers(model)} == {("reasoner",)}
    assert not any(layer.disable_adapters for layer in tuner_layers(model))
    assert {n for n, p in model.named_parameters() if p.requires_grad} == trainable
    model.activate_role_adapter(None)
    assert torch.allclose(model(x).logits, off)


def test_add_role_adapter_refuses_a_name_that_is_not_a_role():
    with pytest.raises(ValueError, match="not a LycheeMemory role"):
        tiny_lychee().add_role_adapter(_lora(), "default")


def test_an_adapter_not_named_after_a_role_is_refused(tokenizer):
    model = tiny_lychee()
    peft.inject_adapter_in_model(_lora(), model, adapter_name="default")
    with pytest.raises(ValueError, match="not LycheeMemory roles.*adapter_name='reasoner'"):
        model.generate(input_ids=question_ids(tokenizer), context_ids=document_ids(tokenizer, 64))


def test_save_pretrained_writes_each_role_adapter_in_peft_layout(tmp_path):
    model = _with_adapters("compressor", "gate", "reasoner")
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["role_adapters"] == ["compressor", "gate", "reasoner"]
    for role in ("compressor", "gate", "reasoner"):
        assert (tmp_path / role / "adapter_config.json").is_file()
        assert (tmp_path / role / "adapter_model.safetensors").is_file()
    from safetensors import safe_open

    with safe_open(tmp_path / "model.safetensors", "pt") as weights:
        names = list(weights.keys())
    assert not any("lora_" in name or "base_layer" in name for name in names)
    assert "model.layers.0.self_attn.q_proj.weight" in names


@pytest.mark.compat
def test_from_pretrained_loads_every_role_adapter_to_identical_outputs(tmp_path, tokenizer):
    model = _with_adapters("compressor", "gate", "reasoner", gate_type="query_likelihood")
    doc, question = document_ids(tokenizer, 150), question_ids(tokenizer)
    expected = model.generate(input_ids=question, context_ids=doc, do_sample=False)
    model.save_pretrained(tmp_path)
    loaded = LycheeMemoryForCausalLM.from_pretrained(tmp_path)
    assert adapter_names(loaded) == ["compressor", "gate", "reasoner"]
    assert torch.equal(loaded.generate(input_ids=question, context_ids=doc, do_sample=False), expected)
    bare = LycheeMemoryForCausalLM.from_pretrained(tmp_path, load_role_adapters=False)
    assert adapter_names(bare) == []


@pytest.mark.compat
def test_a_saved_role_adapter_loads_with_plain_peft(tmp_path):
    model = _with_adapters("reasoner")
    model.save_pretrained(tmp_path)
    base = LycheeMemoryForCausalLM.from_pretrained(tmp_path, load_role_adapters=False)
    wrapped = peft.PeftModel.from_pretrained(base, tmp_path / "reasoner", adapter_name="reasoner")
    x = torch.tensor([[5, 6, 7, 8]])
    model.activate_role_adapter("reasoner")
    with torch.no_grad():
        assert torch.allclose(wrapped(input_ids=x).logits, model(x).logits, atol=1e-6)


@pytest.mark.compat
def test_get_peft_model_trains_a_reasoner_adapter_on_block_prefixed_prompts(tmp_path, tokenizer):
    model = tiny_lychee()
    block = model.compress(document_ids(tokenizer, 64)).block(0)
    wrapped = peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=BACKBONE_LORA_TARGETS), "reasoner")
    frozen = {n: p.detach().clone() for n, p in wrapped.named_parameters() if not p.requires_grad}
    ids = question_ids(tokenizer)
    block = type(block)(block.keys.clone(), block.values.clone(), block.mask.clone(), block.span)
    optimizer = torch.optim.AdamW([p for p in wrapped.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(5):
        loss = wrapped(input_ids=ids, labels=ids, memory_blocks=[block]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(torch.equal(p, frozen[n]) for n, p in wrapped.named_parameters() if n in frozen)
    # PEFT's own save writes a named adapter to <folder>/<name>/, the layout from_pretrained reads.
    wrapped.save_pretrained(tmp_path / "adapters")
    assert (tmp_path / "adapters" / "reasoner" / "adapter_model.safetensors").is_file()
    out = wrapped.generate(input_ids=ids, context_ids=document_ids(tokenizer, 100), max_new_tokens=3)
    assert out.shape[0] == 1


def test_forward_with_memory_blocks_reads_the_block_as_prefix(tokenizer):
    model = tiny_lychee()
    blocks = model.compress(document_ids(tokenizer, 128)).blocks
    ids = question_ids(tokenizer).expand(2, -1)
    with torch.no_grad():
        first, second = model(input_ids=ids, memory_blocks=blocks).logits
        alone = model(input_ids=ids[:1]).logits[0]
    assert not torch.allclose(first, second) and not torch.allclose(first, alone)


def test_compressor_adapter_changes_the_bank_fingerprint():
    assert tiny_lychee()._weights_digest() != _with_adapters("compressor")._weights_digest()
    assert tiny_lychee()._weights_digest() == _with_adapters("reasoner")._weights_digest()
