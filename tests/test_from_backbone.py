import torch

from lychee_hf import LycheeMemoryForCausalLM
from lychee_hf.modeling.templates_lychee import MEMORY_UPDATE_TEMPLATE, render_in_chat_template
from lychee_hf.testing import tiny_backbone


def test_memory_weights_start_as_the_authors_loader_fills_them(tokenizer):
    backbone = tiny_backbone("qwen2")
    model = LycheeMemoryForCausalLM.from_backbone(
        backbone, tokenizer, chunk_size=64, compression_window=32, memory_budget=16
    )
    eos = tokenizer.eos_token_id
    assert torch.equal(model.compressor.memory_embedding.weight[0], backbone.model.embed_tokens.weight[eos])
    for own, layer in zip(model.compressor.layers, backbone.model.layers):
        for name in ("q_proj", "k_proj", "v_proj"):
            assert torch.equal(getattr(own, name).weight, getattr(layer.self_attn, name).weight)
            assert torch.equal(getattr(own, name).bias, getattr(layer.self_attn, name).bias)
            assert getattr(own, name).weight.data_ptr() != getattr(layer.self_attn, name).weight.data_ptr()


def test_the_given_backbone_is_copied_not_modified(tokenizer):
    backbone = tiny_backbone("llama")
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    model = LycheeMemoryForCausalLM.from_backbone(
        backbone, tokenizer, chunk_size=64, compression_window=32, memory_budget=16
    )
    with torch.no_grad():
        model.model.embed_tokens.weight.add_(1.0)
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())


def test_templates_are_tokenized_piecewise_from_the_chat_template(tokenizer):
    model = LycheeMemoryForCausalLM.from_backbone(
        tiny_backbone(), tokenizer, chunk_size=64, compression_window=32, memory_budget=16
    )
    pieces = model.config.update_template_ids
    rendered = render_in_chat_template(tokenizer, MEMORY_UPDATE_TEMPLATE)
    assert rendered.startswith("<|im_start|>user\n\nThe above is a newly provided section")
    assert rendered.endswith("Updated memory:\n<|im_end|>\n<|im_start|>assistant\n")
    before, rest = rendered.split("{prompt}")
    middle, after = rest.split("{memory}")
    assert [tokenizer.decode(p) for p in pieces] == [before, middle, after]
    assert pieces == [tokenizer.encode(p, add_special_tokens=False) for p in (before, middle, after)]
    assert tokenizer.decode(model.config.initial_memory_ids) == "No previous memory"


def test_tied_backbone_stays_tied(tokenizer):
    model = LycheeMemoryForCausalLM.from_backbone(
        tiny_backbone("qwen2"), tokenizer, chunk_size=64, compression_window=32, memory_budget=16
    )
    assert model.config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
