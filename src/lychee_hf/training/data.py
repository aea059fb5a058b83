"""What the trainers share: a map-style dataset over in-memory rows, the `TrainingArguments` defaults, which
weights a role owns (and the helpers that add and unfreeze them), and a wall-time limit."""

import os
import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset
from transformers import TrainerCallback, TrainingArguments

from ..modeling.adapters_lychee import BACKBONE_LORA_TARGETS, adapter_names, add_role_adapter


@dataclass
class LycheeTrainingArguments(TrainingArguments):
    """`TrainingArguments` with the defaults every lychee-hf trainer wants: rows are not model-forward dicts
    (keep every column), nothing is reported to an outside service, and no checkpoints unless asked for.

    Several processes (`accelerate launch`, `torchrun`): the model is wrapped in DDP with
    `find_unused_parameters=False`. Every trainable weight of our trainers takes part in every step, and the
    trainers call the wrapper more than once per step (GRPO scores several turn batches) and compress outside it
    (the compressor's weights reach the loss through the blocks): DDP's unused-parameter search only sees the
    last call's graph and would mark those weights unused. On a machine without an accelerator, `use_cpu` is set
    under a multi-process launch, so that accelerate creates the gloo process group (`MULTI_CPU`) instead of
    training each process alone.
    """

    remove_unused_columns: bool = False
    report_to: str | list[str] | None = "none"
    logging_steps: int = 10
    save_strategy: str = "no"
    ddp_find_unused_parameters: bool | None = False

    def __post_init__(self):
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.accelerator.is_available():
            self.use_cpu = True
        super().__post_init__()


def role_weight(name: str, role: str) -> bool:
    """Whether parameter `name` belongs to `role`: its LoRA adapter's weights, and for the compressor also the
    memory-token embedding and projections (`compressor.*`)."""
    return ("lora_" in name and f".{role}." in name) or (role == "compressor" and name.startswith("compressor."))


def add_role_lora(
    model: nn.Module, role: str, r: int, alpha: int, dropout: float = 0.0, target_modules=BACKBONE_LORA_TARGETS
) -> None:
    """Adds a LoRA adapter named `role` over the backbone's decoder projections, unless the model has one."""
    if role in adapter_names(model):
        return
    from peft import LoraConfig

    lora = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules)
    add_role_adapter(model, lora, role)


def train_only(model: nn.Module, roles: list[str]) -> None:
    """Marks exactly the weights of `roles` trainable (`role_weight`); everything else is frozen."""
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(any(role_weight(name, role) for role in roles))


def with_every_trainable_weight(loss: torch.Tensor, model: nn.Module, unwrapped: nn.Module) -> torch.Tensor:
    """`loss` plus 0 x one element of every trainable weight when `model` is wrapped in DDP; `loss` otherwise.

    DDP (`find_unused_parameters=False`) must see a gradient for every trainable weight to finish its reduction,
    and some never get one: the last layer's memory queries (memory tokens leave the compressor as K/V only, so
    nothing reads them), or the whole compressor in a GRPO step where no episode kept a block. Their gradient is
    then exactly zero instead of absent, which changes no update unless the optimizer decays weights.
    """
    if not isinstance(model, DistributedDataParallel):
        return loss
    return loss + sum(p.reshape(-1)[0] * 0.0 for p in unwrapped.parameters() if p.requires_grad)


class ListDataset(Dataset):
    def __init__(self, rows: list):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int):
        return self.rows[index]


class TimeLimitCallback(TrainerCallback):
    """Ends training cleanly (the model keeps every step taken) once `minutes` of wall time have passed."""

    def __init__(self, minutes: float):
        self.seconds = minutes * 60
        self.started = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        if time.monotonic() - self.started >= self.seconds:
            control.should_training_stop = True
