"""Reasoner fine-tuning rows (gold-fact teacher) and the PEFT example that trains a reasoner adapter."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lychee_hf.data import make_niah
from lychee_hf.data.families import make_facts
from lychee_hf.testing import tiny_lychee, tiny_tokenizer
from lychee_hf.training.reasoner import (
    IGNORE_INDEX,
    build_reasoner_steps,
    collate_reasoner_steps,
    train_reasoner_sft,
)
from lychee_hf.training.teacher import gold_memory_texts
from lychee_hf.training.trainer_utils import LycheeTrainingArguments, add_role_lora

ROOT = Path(__file__).resolve().parents[1]


def test_teacher_steps_are_one_per_block_plus_the_final_answer(tokenizer):
    model = tiny_lychee(compression_mode="lossless")
    example = make_niah(tokenizer, 300, 1, seed=4)[0]
    steps = build_reasoner_steps(model, tokenizer, [example])
    blocks = len(model.compress(torch.tensor([tokenizer.encode(example.context)])))
    assert len(steps) == blocks + 1
    assert all(step.reads_block for step in steps[:-1]) and not steps[-1].reads_block
    eos = tokenizer.eos_token_id
    assert all(int(step.target_ids[-1]) == eos for step in steps)
    answer = tokenizer.decode(steps[-1].target_ids[:-1])
    assert answer == example.answers[0]


def test_collated_labels_cover_the_target_only(tokenizer):
    model = tiny_lychee(compression_mode="lossless")
    steps = build_reasoner_steps(model, tokenizer, make_niah(tokenizer, 300, 1, seed=4))[:2]
    batch = collate_reasoner_steps(steps, pad_id=0, model=model)
    for row, step in enumerate(steps):
        labelled = batch["labels"][row][batch["labels"][row] != IGNORE_INDEX]
        assert torch.equal(labelled, step.target_ids)
    assert len(batch["memory_blocks"]) == 2
    with pytest.raises(ValueError, match="mixes block steps and final steps"):
        collate_reasoner_steps([steps[0], build_reasoner_steps(model, tokenizer, make_niah(tokenizer, 300, 1))[-1]])


def test_collated_blocks_equal_the_blocks_of_the_compressed_document(tokenizer):
    torch.manual_seed(0)
    model = tiny_lychee(compression_mode="lossless").eval()
    example = make_niah(tokenizer, 300, 1, seed=4)[0]
    steps = build_reasoner_steps(model, tokenizer, [example])[:-1]
    bank = model.compress(torch.tensor([tokenizer.encode(example.context, add_special_tokens=False)]))
    blocks = collate_reasoner_steps(steps, pad_id=0, model=model)["memory_blocks"]
    for index, block in enumerate(blocks):
        assert block.span == bank.block(index).span
        assert torch.equal(block.keys, bank.block(index).keys) and torch.equal(block.values, bank.block(index).values)
        assert not block.keys.requires_grad


def test_collating_block_steps_without_a_model_names_the_fix(tokenizer):
    model = tiny_lychee(compression_mode="lossless")
    steps = build_reasoner_steps(model, tokenizer, make_niah(tokenizer, 300, 1, seed=4))[:1]
    with pytest.raises(ValueError, match="pass the model"):
        collate_reasoner_steps(steps, pad_id=0)


def test_unchanged_fraction_zero_keeps_only_steps_that_write_a_new_fact_and_the_answer(tokenizer):
    model = tiny_lychee(compression_mode="lossless")
    example = make_facts(tokenizer, 600, 1, seed=3)[0]
    memories = gold_memory_texts(example, tokenizer, model.config.chunk_size, 10**6)
    writes = sum(1 for before, after in zip([""] + memories, memories) if after != before)
    all_steps = build_reasoner_steps(model, tokenizer, [example])
    steps = build_reasoner_steps(model, tokenizer, [example], unchanged_fraction=0.0)
    assert len(steps) == writes + 1 < len(all_steps)
    assert all(int(step.target_ids[0]) != tokenizer.eos_token_id for step in steps)


def test_unchanged_fraction_outside_zero_to_one_is_refused(tokenizer):
    with pytest.raises(ValueError, match="unchanged_fraction"):
        build_reasoner_steps(tiny_lychee(compression_mode="lossless"), tokenizer, [], unchanged_fraction=1.5)


def test_reasoner_sft_trains_only_the_reasoner_adapter_and_lowers_the_loss(tokenizer, tmp_path):
    torch.manual_seed(0)
    model = tiny_lychee(compression_mode="lossless")
    add_role_lora(model, "reasoner")  # the adapter exists before the snapshot, so its change is seen
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    args = LycheeTrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=1, num_train_epochs=4, learning_rate=5e-3,
        logging_steps=1, seed=0, disable_tqdm=True,
    )  # fmt: skip
    trainer = train_reasoner_sft(model, tokenizer, make_niah(tokenizer, 300, 2, seed=4), args, unchanged_fraction=0.0)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert losses[-1] < losses[0]
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed and all(".reasoner." in name for name in changed)
    assert not model.training


def test_reasoner_sft_refuses_a_batch_size_above_one(tokenizer, tmp_path):
    args = LycheeTrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=2)
    with pytest.raises(ValueError, match="per_device_train_batch_size=1"):
        train_reasoner_sft(tiny_lychee(compression_mode="lossless"), tokenizer, [], args)


@pytest.mark.slow
def test_finetune_reasoner_example_runs_on_a_tiny_checkpoint(tmp_path):
    pytest.importorskip("peft")
    checkpoint = tmp_path / "ckpt"
    tiny_lychee(compression_mode="lossless").save_pretrained(checkpoint)
    tiny_tokenizer().save_pretrained(checkpoint)
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "finetune_reasoner_adapter.py"), "--model", str(checkpoint),
         "--task", "niah", "--length", "300", "--train", "2", "--test", "1", "--epochs", "1",
         "--out", str(tmp_path / "adapter")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "after (LoRA, PEFT)" in result.stdout
    assert (tmp_path / "adapter" / "reasoner" / "adapter_model.safetensors").is_file()
