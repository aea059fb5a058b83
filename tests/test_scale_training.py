"""Training settings that multi-process runs depend on, checked in one process (the two-process steps themselves,
MULTI_CPU under torchrun included, are in test_scale_distributed.py)."""

import pytest
import torch

from dist_train_step import gate_trainer, trainable
from lychee_hf.training.rollout import rollout_seed
from lychee_hf.training.trainer_utils import LycheeTrainingArguments


def test_ddp_does_not_search_for_unused_weights(tmp_path):
    # Several wrapper calls per step (GRPO) and weights used outside it (the compressor): a search would fail.
    assert LycheeTrainingArguments(output_dir=str(tmp_path)).ddp_find_unused_parameters is False


def test_without_an_accelerator_the_data_loader_does_not_pin_memory(tmp_path):
    if torch.accelerator.is_available():
        pytest.skip("pinning is for accelerators")
    assert LycheeTrainingArguments(output_dir=str(tmp_path)).dataloader_pin_memory is False


def test_gate_loss_is_divided_by_the_gradient_accumulation_steps(tokenizer, tmp_path):
    results = []
    for per_device, accumulation in ((4, 1), (2, 2)):
        model, trainer = gate_trainer(tokenizer, tmp_path, per_device, gradient_accumulation_steps=accumulation)
        trainer.train()
        results.append(trainable(model))
    for name in results[0]:
        torch.testing.assert_close(results[1][name], results[0][name], rtol=1e-5, atol=1e-6)


def test_rollout_seeds_depend_on_the_step_and_the_question_only():
    assert rollout_seed(0, 3, 5) == rollout_seed(0, 3, 5)
    assert len({rollout_seed(0, 3, 5), rollout_seed(0, 3, 6), rollout_seed(0, 4, 5), rollout_seed(1, 3, 5)}) == 4
