"""Compressor pretraining: continuation loss (plus the KL to lossless reading) through a compressed block, on text
windows and reading rows; only the compressor's weights train."""

import pytest
import torch

from lychee_hf.data.families import make_facts
from lychee_hf.modeling.adapters_lychee import role_adapter
from lychee_hf.testing import CORPUS, tiny_lychee
from lychee_hf.training.compressor import (
    CompressorPretrainingConfig,
    collate_continuations,
    compressed_blocks,
    compressor_objective,
    continuation_rows,
    offline_corpus,
    pretrain_compressor,
    reading_rows,
)
from lychee_hf.training.distillation import kl_to_teacher, teacher_logits
from lychee_hf.training.reasoner import build_reasoner_steps
from lychee_hf.training.trainer_utils import IGNORE_INDEX, LoraArguments, add_role_lora, role_weight, train_only

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
    assert result.after["kl_to_lossless"] >= 0 and result.after["kl_to_lossless"] != result.before["kl_to_lossless"]
    assert not any("kl" in entry for entry in result.trainer.state.log_history)  # distill_weight 0: no teacher


# --- distillation towards lossless reading, and reading rows


def batch_of_windows(tokenizer, n: int = 2) -> dict:
    return collate_continuations(continuation_rows(tokenizer, TEXT, chunk_size=64, continuation_tokens=16)[:n])


def test_distill_weight_zero_is_the_continuation_loss_bit_for_bit(tokenizer):
    """The objective before distillation existed: the block, then the continuation as labels, no mask passed."""
    model = tiny_lychee().eval()
    rows = continuation_rows(tokenizer, TEXT, chunk_size=64, continuation_tokens=16)[:2]
    chunk, continuation = torch.stack([r.chunk_ids for r in rows]), torch.stack([r.continuation_ids for r in rows])
    with role_adapter(model, "reasoner"):
        old = model(input_ids=continuation, labels=continuation, memory_blocks=compressed_blocks(model, chunk)).loss
    loss, ce, kl = compressor_objective(model, collate_continuations(rows), distill_weight=0.0)
    assert torch.equal(loss, old) and torch.equal(ce, old) and kl is None
    assert CompressorPretrainingConfig(output_dir="unused").distill_weight == 0.0  # the default is that loss


def test_kl_is_zero_when_the_student_reads_the_lossless_block(tokenizer):
    model = tiny_lychee(compression_mode="lossless").eval()
    loss, ce, kl = compressor_objective(model, batch_of_windows(tokenizer), distill_weight=1.0)
    assert kl.abs() < 1e-6 and torch.equal(loss, ce + kl)


def test_kl_to_teacher_is_the_tempered_kl_in_float32():
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 5, 11).bfloat16(), torch.randn(2, 5, 11).bfloat16()
    labels = torch.tensor([[-100, -100, 3, 4, 5], [-100, 1, 2, -100, -100]])  # scored: 3 + 2 tokens
    p_t = (teacher[:, :-1][labels[:, 1:] != -100].double() / 2).softmax(-1)
    p_s = (student[:, :-1][labels[:, 1:] != -100].double() / 2).softmax(-1)
    expected = 4 * (p_t * (p_t.log() - p_s.log())).sum(-1).mean()
    assert torch.allclose(kl_to_teacher(student, teacher, labels, temperature=2.0).double(), expected, atol=1e-5)
    assert kl_to_teacher(student, teacher, labels).dtype == torch.float32
    assert kl_to_teacher(teacher, teacher, labels) == 0


def test_distillation_lowers_the_kl_on_one_row(tokenizer):
    model = tiny_lychee().eval()
    train_only(model, ["compressor"])
    batch = batch_of_windows(tokenizer, n=1)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    kls = []
    for _ in range(6):
        _, _, kl = compressor_objective(model, batch, distill_weight=1.0)
        kls.append(float(kl.detach()))
        optimizer.zero_grad()
        kl.backward()  # the KL term alone: the continuation loss would pull the block elsewhere on one row
        optimizer.step()
    assert kls[-1] >= 0 and kls == sorted(kls, reverse=True) and kls[-1] < 0.6 * kls[0], kls


def test_distillation_gradients_reach_only_the_compressor_and_the_teacher_stays_fixed(tokenizer):
    pytest.importorskip("peft")
    model = tiny_lychee().eval()
    add_role_lora(model, "compressor", LoraArguments(lora_r=2).lora_config())
    train_only(model, ["compressor"])
    batch = batch_of_windows(tokenizer)
    teacher = teacher_logits(model, batch)
    _, _, kl = compressor_objective(model, batch, distill_weight=1.0)
    kl.backward()
    dead = f"compressor.layers.{len(model.compressor.layers) - 1}.q_proj."  # the last memory queries feed nothing
    moved = {name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert all(role_weight(name, "compressor") for name, p in model.named_parameters() if p.grad is not None)
    assert {n for n, _ in model.compressor.named_parameters(prefix="compressor") if not n.startswith(dead)} <= moved
    assert any("lora_B.compressor" in name for name in moved)  # (some LoRA paths are dead in a 2-layer compressor)
    with torch.no_grad():  # every compressor weight moves (LoRA B too): the lossless teacher does not
        for name, parameter in model.named_parameters():
            if role_weight(name, "compressor"):
                parameter.add_(0.1)
    assert torch.equal(teacher_logits(model, batch), teacher)


def test_reading_rows_score_exactly_the_memory_written_after_the_block(tokenizer):
    model = tiny_lychee()
    examples = make_facts(tokenizer, 300, 2, seed=1000)
    steps = [step for step in build_reasoner_steps(model, tokenizer, examples) if step.reads_block]
    rows = reading_rows(model, tokenizer, examples)
    assert len(rows) == len(steps) > 2
    batch = collate_continuations(rows[:3])
    for i, (row, step) in enumerate(zip(rows[:3], steps)):
        assert torch.equal(row.chunk_ids, step.chunk_ids)
        assert torch.equal(batch["chunk_ids"][i, : batch["chunk_lengths"][i]], step.chunk_ids)
        labels = batch["labels"][i]
        assert torch.equal(labels[labels != IGNORE_INDEX], step.target_ids)
        assert torch.equal(labels[-step.target_ids.numel() :], step.target_ids)  # left-padded: the target ends rows
    loss, ce, kl = compressor_objective(model, batch, distill_weight=1.0)
    assert torch.isfinite(loss) and kl >= 0


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"distill_weight": -0.5}, "distill_weight must be 0 or more, got -0.5: use 0"),
        ({"distill_weight": float("nan")}, "distill_weight must be 0 or more"),
        ({"distill_temperature": 0.0}, "distill_temperature must be positive, got 0.0: use 1.0"),
    ],
)
def test_bad_distillation_settings_are_refused_with_the_fix(settings, message):
    with pytest.raises(ValueError, match=message):
        CompressorPretrainingConfig(output_dir="unused", **settings)


def test_distilled_pretraining_on_text_and_reading_rows(tokenizer, tmp_path):
    """Mixed batches (windows + reading rows), the logged terms, and only compressor weights changed."""
    torch.manual_seed(0)
    model = tiny_lychee()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    config = CompressorPretrainingConfig(
        output_dir=str(tmp_path), continuation_tokens=16, max_train_rows=4, max_eval_rows=2, distill_weight=1.0,
        distill_temperature=2.0, per_device_train_batch_size=2, logging_steps=1, disable_tqdm=True, seed=0,
    )  # fmt: skip
    rows = reading_rows(model, tokenizer, make_facts(tokenizer, 300, 1, seed=1000))[:4]
    words = TEXT.split()
    result = pretrain_compressor(
        model, tokenizer, config, " ".join(words[40:]), " ".join(words[:40] * 3), train_rows=rows
    )
    assert result.train_rows == 8
    logged = [entry for entry in result.trainer.state.log_history if "loss" in entry]
    assert len(logged) == 4 and all({"ce", "kl"} <= set(entry) and entry["kl"] >= 0 for entry in logged)
    assert result.after["kl_to_lossless"] != result.before["kl_to_lossless"] >= 0
    dead = f"compressor.layers.{len(model.compressor.layers) - 1}.q_proj."
    for name, parameter in model.named_parameters():
        changed = not torch.equal(parameter, before[name])
        assert changed == (name.startswith("compressor.") and not name.startswith(dead)), name
