"""Compressor pretraining: continuation loss through a compressed block; only the compressor's weights train."""

import pytest
import torch

from lychee_hf.testing import CORPUS, tiny_lychee
from lychee_hf.training.compressor import (
    CompressorPretrainingConfig,
    continuation_rows,
    offline_corpus,
    pretrain_compressor,
)

TEXT = " ".join(CORPUS) * 6


def test_offline_corpus_holds_out_whole_topics():
    train, held_out = offline_corpus(0.1)
    assert len(train) > 100_000 and len(held_out) > 5_000
    assert held_out[:2000] not in train


def test_continuation_rows_are_consecutive_windows(tokenizer):
    rows = continuation_rows(tokenizer, TEXT, chunk_size=64, continuation_tokens=16)
    ids = tokenizer.encode(TEXT, add_special_tokens=False)
    assert len(rows) == len(ids) // 80
    assert rows[1].chunk_ids.tolist() == ids[80:144] and rows[1].continuation_ids.tolist() == ids[144:160]


def test_lossless_models_are_refused(tokenizer, tmp_path):
    config = CompressorPretrainingConfig(output_dir=str(tmp_path))
    with pytest.raises(ValueError, match="compression_mode='memory_tokens'"):
        pretrain_compressor(tiny_lychee(compression_mode="lossless"), tokenizer, config, TEXT, TEXT)


@pytest.fixture(scope="module")
def pretrained(tokenizer, tmp_path_factory):
    torch.manual_seed(0)
    model = tiny_lychee()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    config = CompressorPretrainingConfig(
        output_dir=str(tmp_path_factory.mktemp("trainer")),
        continuation_tokens=16,
        num_train_epochs=4,
        learning_rate=1e-3,
        per_device_train_batch_size=4,
        logging_steps=2,
        disable_tqdm=True,
        seed=0,
    )
    words = TEXT.split()
    result = pretrain_compressor(model, tokenizer, config, " ".join(words[40:]), " ".join(words[:40] * 3))
    return model, before, result


def test_pretraining_lowers_the_training_loss(pretrained):
    _, _, result = pretrained
    losses = [entry["loss"] for entry in result.trainer.state.log_history if "loss" in entry]
    assert len(losses) >= 3 and losses[-1] < losses[0]


def test_pretraining_changes_every_compressor_weight_and_nothing_else(pretrained):
    model, before, _ = pretrained
    # The last layer's memory queries feed no exported K/V (only memory K/V leave the compressor): no gradient.
    dead = f"compressor.layers.{len(model.compressor.layers) - 1}.q_proj."
    for name, parameter in model.named_parameters():
        changed = not torch.equal(parameter, before[name])
        assert changed == (name.startswith("compressor.") and not name.startswith(dead)), name


def test_held_out_table_compares_compressed_raw_and_no_context(pretrained):
    _, _, result = pretrained
    assert set(result.before) >= {"compressed", "raw", "none"}
    # Frozen backbone: the raw and no-context readings do not move; the compressed one does.
    assert result.after["raw"] == result.before["raw"] and result.after["none"] == result.before["none"]
    assert result.after["compressed"] != result.before["compressed"]
