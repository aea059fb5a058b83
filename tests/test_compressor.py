import pytest
import torch

from lychee_hf.modeling.compressor_lychee import memory_token_layout
from lychee_hf.testing import document_ids, tiny_backbone, tiny_lychee


def test_interleave_puts_a_memory_token_after_every_ratio_raw_tokens():
    raw, memory = memory_token_layout(2048, 4, "interleave")
    assert memory[:3].tolist() == [4, 9, 14]
    assert memory.numel() == 512 and raw.numel() == 2048
    assert sorted(raw.tolist() + memory.tolist()) == list(range(2560))
    assert all(i % 5 == 4 for i in memory.tolist())


def test_append_puts_memory_tokens_after_the_window():
    raw, memory = memory_token_layout(32, 4, "append")
    assert raw.tolist() == list(range(32)) and memory.tolist() == list(range(32, 40))


def test_three_chunk_document_gives_three_blocks_with_spans_and_masks(tokenizer):
    model = tiny_lychee()
    bank = model.compress(document_ids(tokenizer, 150))
    assert len(bank) == 3
    assert [b.span for b in bank.blocks] == [(0, 64), (64, 128), (128, 150)]
    for block in bank.blocks:
        assert block.keys.shape == (2, 2, 16, 16)  # layers, kv heads, 64 / 4 slots, head dim
        assert block.values.shape == block.keys.shape
    assert bank.blocks[0].mask.all()
    # 22 real tokens in the last chunk: slots covering any real token are valid (ceil(22 / 4) = 6).
    assert bank.blocks[2].mask.tolist() == [True] * 6 + [False] * 10


def test_memory_keys_are_exported_before_rotary_embedding_through_memory_projections(tokenizer):
    model = tiny_lychee()
    bank = model.compress(document_ids(tokenizer, 64))
    # Layer 0 reads the memory-token embedding itself, so its exported keys are fixed by the memory weights.
    layer0 = model.model.layers[0]
    expected = model.compressor.layers[0].k_proj(layer0.input_layernorm(model.compressor.memory_embedding.weight))
    expected = expected.view(2, 16)  # (kv heads, head dim)
    keys = bank.blocks[0].keys[0]  # (kv heads, slots, head dim)
    torch.testing.assert_close(keys, expected[:, None, :].expand_as(keys), rtol=0, atol=1e-6)


def test_perturbing_memory_projections_changes_blocks_but_not_the_plain_backbone(tokenizer):
    model = tiny_lychee()
    doc = document_ids(tokenizer, 64)
    before_bank = model.compress(doc)
    with torch.no_grad():
        before_logits = model(doc).logits
        model.compressor.layers[1].k_proj.weight.add_(0.1)
        model.compressor.layers[0].v_proj.weight.add_(0.1)
        after_logits = model(doc).logits
    after_bank = model.compress(doc)
    assert not torch.allclose(before_bank.blocks[0].keys[1], after_bank.blocks[0].keys[1])
    assert not torch.allclose(before_bank.blocks[0].values[0], after_bank.blocks[0].values[0])
    assert torch.equal(before_logits, after_logits)


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_plain_forward_is_bit_identical_to_the_stock_backbone(kind, tokenizer):
    stock = tiny_backbone(kind, seed=3)
    stock.set_attn_implementation("eager")
    model = tiny_lychee(kind, seed=3)
    doc = document_ids(tokenizer, 40)
    with torch.no_grad():
        assert torch.equal(stock(doc).logits, model(doc).logits)


def test_eager_and_sdpa_compress_to_the_same_blocks(tokenizer):
    eager, sdpa = tiny_lychee(attn_implementation="eager"), tiny_lychee(attn_implementation="sdpa")
    assert sdpa.model.config._attn_implementation == "sdpa"
    doc = document_ids(tokenizer, 150)
    for a, b in zip(eager.compress(doc).blocks, sdpa.compress(doc).blocks):
        diff = max((a.keys - b.keys).abs().max().item(), (a.values - b.values).abs().max().item())
        assert diff <= 1e-5, diff


def test_batched_compression_equals_one_chunk_at_a_time(tokenizer):
    one, four = tiny_lychee(), tiny_lychee(compress_batch_size=4)
    doc = document_ids(tokenizer, 200)
    for a, b in zip(one.compress(doc).blocks, four.compress(doc).blocks):
        torch.testing.assert_close(a.keys, b.keys, rtol=1e-5, atol=1e-5)
        assert torch.equal(a.mask, b.mask)


def test_append_placement_compresses_to_the_same_slot_count(tokenizer):
    model = tiny_lychee(memory_token_placement="append")
    bank = model.compress(document_ids(tokenizer, 100))
    assert [b.num_slots for b in bank.blocks] == [16, 16]


def test_lossless_block_is_the_chunks_own_kv(tokenizer):
    model = tiny_lychee(compression_mode="lossless")
    bank = model.compress(document_ids(tokenizer, 100))
    assert [b.num_slots for b in bank.blocks] == [64, 64]
    assert bank.blocks[1].mask.sum() == 36


def test_lossless_blocks_on_request_equal_a_lossless_models_without_touching_the_config(tokenizer):
    """`compress_chunks(..., lossless=True)` on a memory-token model: the chunk's own K/V, exactly as lossless mode."""
    memory, lossless = tiny_lychee().eval(), tiny_lychee(compression_mode="lossless").eval()
    chunks = [document_ids(tokenizer, 64)[0], document_ids(tokenizer, 40, seed=1)[0]]  # a full chunk, a short one
    with torch.no_grad():
        asked = memory.compress_chunks(chunks, [(0, 64), (64, 104)], lossless=True, role=None)
        expected = lossless.compress_chunks(chunks, [(0, 64), (64, 104)])
    assert memory.config.compression_mode == "memory_tokens"
    for got, want in zip(asked, expected):
        assert torch.equal(got.keys, want.keys) and torch.equal(got.values, want.values)
        assert torch.equal(got.mask, want.mask) and got.span == want.span
    assert asked[1].num_slots == 64 and asked[1].mask.sum() == 40


def test_compression_keeps_gradients_for_training(tokenizer):
    model = tiny_lychee()
    ids = document_ids(tokenizer, 64)
    keys, values, _ = model.compressor(model.model, ids, torch.ones_like(ids))
    (keys.sum() + values.sum()).backward()
    assert model.compressor.memory_embedding.weight.grad is not None
    assert model.compressor.layers[0].q_proj.weight.grad.abs().sum() > 0


def test_low_rank_memory_projections_start_as_the_backbones_and_train(tokenizer):
    from lychee_hf import LycheeMemoryForCausalLM

    knobs = dict(chunk_size=64, compression_window=32, memory_budget=16)
    backbone = tiny_backbone("qwen2", seed=5)
    full = LycheeMemoryForCausalLM.from_backbone(backbone, tokenizer, **knobs)
    low_rank = LycheeMemoryForCausalLM.from_backbone(backbone, tokenizer, memory_projection_rank=4, **knobs)
    layer = low_rank.compressor.layers[0].k_proj
    assert tuple(layer.down.shape) == (4, 64) and tuple(layer.up.shape) == (32, 4)
    doc = document_ids(tokenizer, 64)
    torch.testing.assert_close(low_rank.compress(doc).block(0).keys, full.compress(doc).block(0).keys)
    low_rank.train()
    keys, _, _ = low_rank.compressor(low_rank.model, doc, torch.ones_like(doc))
    keys.sum().backward()
    assert layer.up.grad.abs().sum() > 0 and layer.bias.grad.abs().sum() > 0
