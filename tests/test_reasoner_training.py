"""Reasoner fine-tuning rows (gold-fact teacher) and the PEFT example that trains a reasoner adapter."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lychee_hf.data import make_niah
from lychee_hf.testing import tiny_lychee, tiny_tokenizer
from lychee_hf.training.reasoner import IGNORE_INDEX, build_reasoner_steps, collate_reasoner_steps

ROOT = Path(__file__).resolve().parents[1]


def test_teacher_steps_are_one_per_block_plus_the_final_answer(tokenizer):
    model = tiny_lychee(compression_mode="lossless")
    example = make_niah(tokenizer, 300, 1, seed=4)[0]
    steps = build_reasoner_steps(model, tokenizer, [example])
    blocks = len(model.compress(torch.tensor([tokenizer.encode(example.context)])))
    assert len(steps) == blocks + 1
    assert all(step.block is not None for step in steps[:-1]) and steps[-1].block is None
    eos = tokenizer.eos_token_id
    assert all(int(step.target_ids[-1]) == eos for step in steps)
    answer = tokenizer.decode(steps[-1].target_ids[:-1])
    assert answer == example.answers[0]


def test_collated_labels_cover_the_target_only(tokenizer):
    model = tiny_lychee(compression_mode="lossless")
    steps = build_reasoner_steps(model, tokenizer, make_niah(tokenizer, 300, 1, seed=4))[:2]
    batch = collate_reasoner_steps(steps, pad_id=0)
    for row, step in enumerate(steps):
        labelled = batch["labels"][row][batch["labels"][row] != IGNORE_INDEX]
        assert torch.equal(labelled, step.target_ids)
    assert len(batch["memory_blocks"]) == 2
    with pytest.raises(ValueError, match="mixes block steps and final steps"):
        collate_reasoner_steps([steps[0], build_reasoner_steps(model, tokenizer, make_niah(tokenizer, 300, 1))[-1]])


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
