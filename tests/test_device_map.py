"""Device maps: per-layer placement of block K/V, offloaded layers, and accelerate's hooks firing in the compressor.

This machine has one CPU and no GPU, so placement is checked with accelerate hooks naming other devices (CUDA
indices, `meta`), and execution with layers offloaded to disk, which runs through the same hooks as a split map.
"""

import pytest
import torch
from accelerate.hooks import AlignDevicesHook, add_hook_to_module

from lychee_hf import LycheeMemoryForCausalLM
from lychee_hf.modeling.prefix_lychee import block_prefix, execution_device, layer_devices
from lychee_hf.testing import document_ids, question_ids, tiny_lychee

CPU, META = torch.device("cpu"), torch.device("meta")


def _hook(module: torch.nn.Module, device, append: bool = False) -> None:
    """Marks `module` as executing on `device`, as `dispatch_model` does (a decoder layer has no weights of its
    own, so the hook moves nothing now)."""
    add_hook_to_module(module, AlignDevicesHook(execution_device=device), append=append)


def test_layer_devices_follow_accelerate_hooks_then_weights():
    model = tiny_lychee(num_layers=4)
    layers = model.model.layers
    _hook(layers[1], torch.device("cuda", 1))  # only named here: nothing is allocated on it
    _hook(layers[2], "meta")
    _hook(layers[2], "meta", append=True)  # a chain of hooks (SequentialHook)
    layers[3].to("meta")  # weights gone and no hook of its own: the backbone's device
    assert layer_devices(model.model) == [CPU, torch.device("cuda", 1), META, CPU]
    assert execution_device(layers[3], default=torch.device("cuda", 0)) == torch.device("cuda", 0)


@pytest.mark.parametrize("scheme", ["reference", "sequential"])
def test_block_prefix_puts_each_layers_kv_on_that_layers_device(scheme, tokenizer):
    model = tiny_lychee(position_scheme=scheme)
    block = model.compress(document_ids(tokenizer, 64)).block(0)
    expected = block_prefix(model, [block])
    _hook(model.model.layers[1], "meta")  # layer 1 "lives on another device"
    prefix = block_prefix(model, [block])
    first, second = prefix.cache.layers
    assert first.keys.device == CPU and first.values.device == CPU
    assert second.keys.device == META and second.values.device == META
    assert second.keys.shape == expected.cache.layers[1].keys.shape
    assert torch.equal(first.keys, expected.cache.layers[0].keys)
    assert prefix.slot_mask.device == CPU and prefix.positions.device == CPU


def test_block_prefix_moves_a_host_block_to_the_layer_devices_only_when_read(tokenizer):
    model = tiny_lychee()
    bank = model.compress(document_ids(tokenizer, 100), offload_to_cpu=True)
    _hook(model.model.layers[0], "meta")
    prefix = block_prefix(model, [bank.block(1)])
    assert prefix.cache.layers[0].keys.device == META
    assert bank.block(1).keys.device == CPU  # the bank itself is untouched


def test_memory_projections_run_through_their_forward_so_device_hooks_fire(tokenizer):
    model = tiny_lychee()
    calls, embedding_calls = [], []
    model.compressor.layers[1].register_forward_pre_hook(lambda module, args: calls.append(args[0]))
    model.compressor.memory_embedding.register_forward_pre_hook(lambda module, args: embedding_calls.append(1))
    model.compress(document_ids(tokenizer, 64))  # one chunk of two windows
    assert calls == ["q_proj", "k_proj", "v_proj"] * 2
    assert len(embedding_calls) == 2


# Offloading the first or last layer is left out: `memory_fingerprint` reads those weights directly.
SPLIT_MAP = {
    "model.embed_tokens": "cpu",
    "model.rotary_emb": "cpu",
    "model.layers.0": "cpu",
    "model.layers.1": "disk",
    "model.layers.2": "disk",
    "model.layers.3": "cpu",
    "model.norm": "cpu",
    "lm_head": "cpu",
    "compressor.memory_embedding": "cpu",
    "compressor.layers.0": "cpu",
    "compressor.layers.1": "disk",
    "compressor.layers.2": "disk",
    "compressor.layers.3": "cpu",
}


def _saved(tmp_path, kind: str, **knobs):
    tiny_lychee(kind, num_layers=4, **knobs).save_pretrained(tmp_path / "model")
    return tmp_path / "model"


@pytest.mark.parametrize(("kind", "rank"), [("llama", None), ("qwen2", 4)])
def test_layers_offloaded_to_disk_answer_like_the_model_in_memory(kind, rank, tmp_path, tokenizer):
    path = _saved(tmp_path, kind, memory_projection_rank=rank)
    in_memory = LycheeMemoryForCausalLM.from_pretrained(path)
    offloaded = LycheeMemoryForCausalLM.from_pretrained(path, device_map=SPLIT_MAP, offload_folder=tmp_path / "off")
    assert offloaded.model.layers[1].self_attn.q_proj.weight.device == META
    assert all(p.device == META for p in offloaded.compressor.layers[2].parameters())
    doc, question = document_ids(tokenizer, 150), question_ids(tokenizer)
    for ours, theirs in zip(offloaded.compress(doc).blocks, in_memory.compress(doc).blocks):
        if rank is None:  # full projections: the very same arithmetic
            assert torch.equal(ours.keys, theirs.keys) and torch.equal(ours.values, theirs.values)
        else:  # an offloaded biased base projection loses its bias through its forward (W x + b - b)
            torch.testing.assert_close(ours.keys, theirs.keys, rtol=1e-5, atol=1e-6)
    expected = in_memory.generate(input_ids=question, context_ids=doc, return_dict_in_generate=True)
    got = offloaded.generate(input_ids=question, context_ids=doc, return_dict_in_generate=True)
    assert torch.equal(got.sequences, expected.sequences)
    assert [r.memory_ids for r in got.trace[0]] == [r.memory_ids for r in expected.trace[0]]


def test_auto_device_map_on_one_device_answers_like_the_model_in_memory(tmp_path, tokenizer):
    path = _saved(tmp_path, "llama")
    doc, question = document_ids(tokenizer, 150), question_ids(tokenizer)
    auto = LycheeMemoryForCausalLM.from_pretrained(path, device_map="auto")
    in_memory = LycheeMemoryForCausalLM.from_pretrained(path)
    assert torch.equal(
        auto.generate(input_ids=question, context_ids=doc), in_memory.generate(input_ids=question, context_ids=doc)
    )


def test_auto_device_map_that_offloads_the_tail_answers_like_the_model_in_memory(tmp_path, tokenizer):
    path = _saved(tmp_path, "llama")
    doc, question = document_ids(tokenizer, 150), question_ids(tokenizer)
    # 400 KB of "CPU" for a 930 KB model: layers 1-3, norm, lm_head and the whole compressor go to disk.
    offloaded = LycheeMemoryForCausalLM.from_pretrained(
        path, device_map="auto", max_memory={"cpu": "400KB"}, offload_folder=tmp_path / "off"
    )
    assert offloaded.hf_device_map["compressor"] == "disk"
    in_memory = LycheeMemoryForCausalLM.from_pretrained(path)
    assert torch.equal(
        offloaded.generate(input_ids=question, context_ids=doc),
        in_memory.generate(input_ids=question, context_ids=doc),
    )
