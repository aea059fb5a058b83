"""Trainer plumbing every lychee-hf trainer shares: a map-style dataset over in-memory rows, the `TrainingArguments`
defaults, the LoRA arguments a new role adapter is built from, which weights a role owns (and the helpers that add
and unfreeze them), the DDP / FSDP2 step helpers, the checkpoint to resume from, and a wall-time limit."""

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.distributed.fsdp import FSDPModule, register_fsdp_forward_method
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset
from transformers import TrainerCallback, TrainingArguments

from ..modeling import BACKBONE_LORA_TARGETS, adapter_names, add_role_adapter, weights_digest

# Label of the tokens a causal-LM loss skips (transformers' and PyTorch's cross-entropy `ignore_index`).
IGNORE_INDEX = -100


def training_default(name: str, default, **metadata):
    """A `TrainingArguments` field re-declared with another default, keeping its help (and CLI `aliases` given in
    `metadata`), so that `HfArgumentParser` shows one help text per option."""
    return field(default=default, metadata={**TrainingArguments.__dataclass_fields__[name].metadata, **metadata})


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
    training each process alone, and the data loader does not pin memory (nothing to pin it for).
    """

    remove_unused_columns: bool = training_default("remove_unused_columns", False)
    report_to: None | str | list[str] = training_default("report_to", "none")
    logging_steps: float = training_default("logging_steps", 10)
    save_strategy: str = training_default("save_strategy", "no")
    ddp_find_unused_parameters: bool | None = training_default("ddp_find_unused_parameters", False)

    def __post_init__(self):
        if not torch.accelerator.is_available():
            if int(os.environ.get("WORLD_SIZE", "1")) > 1:
                self.use_cpu = True
            self.dataloader_pin_memory = False  # pinned memory needs an accelerator: torch warns on every epoch
        super().__post_init__()


def role_weight(name: str, role: str) -> bool:
    """Whether parameter `name` belongs to `role`: its LoRA adapter's weights, and for the compressor also the
    memory-token embedding and projections (`compressor.*`)."""
    return ("lora_" in name and f".{role}." in name) or (role == "compressor" and name.startswith("compressor."))


@dataclass
class LoraArguments:
    """The LoRA adapter a trainer creates for its role, as TRL's `ModelConfig` holds it; `lora_config()` builds the
    `peft.LoraConfig` that `train_gate`, `pretrain_compressor` and `train_rl` take as `peft_config`. The CLI parses
    these fields straight into this class. The defaults are the adapter every lychee-hf trainer has always made.

    Args:
        lora_r (`int`, *optional*, defaults to 8): rank of the adapter.
        lora_alpha (`int`, *optional*): LoRA scaling numerator (default: 2 x `lora_r`).
        lora_dropout (`float`, *optional*, defaults to 0.0): dropout on the LoRA input.
        lora_target_modules (`str`, *optional*): regex of the backbone modules that get LoRA (default: every
            attention and MLP projection of the decoder, never the compressor's memory projections).
    """

    lora_r: int = field(default=8, metadata={"help": "rank of the new LoRA adapter"})
    lora_alpha: int | None = field(default=None, metadata={"help": "LoRA scaling numerator (None: 2 x the rank)"})
    lora_dropout: float = field(default=0.0, metadata={"help": "dropout on the LoRA input"})
    lora_target_modules: str = field(
        default=BACKBONE_LORA_TARGETS, metadata={"help": "regex of the backbone modules that get LoRA"}
    )

    def __post_init__(self):
        if self.lora_r < 1:
            raise ValueError(f"lora_r must be a positive integer, got {self.lora_r}.")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout must lie in [0, 1), got {self.lora_dropout}.")

    def lora_config(self):
        """The `peft.LoraConfig` of these arguments."""
        from peft import LoraConfig

        alpha = self.lora_alpha if self.lora_alpha is not None else 2 * self.lora_r
        return LoraConfig(
            r=self.lora_r, lora_alpha=alpha, lora_dropout=self.lora_dropout, target_modules=self.lora_target_modules
        )


def add_role_lora(model: nn.Module, role: str, peft_config=None) -> None:
    """Adds a LoRA adapter named `role` configured by `peft_config` (default: `LoraArguments().lora_config()`),
    unless the model has one already (then that one trains on)."""
    if role in adapter_names(model):
        return
    add_role_adapter(model, peft_config if peft_config is not None else LoraArguments().lora_config(), role)


def train_only(model: nn.Module, roles: list[str]) -> None:
    """Marks exactly the weights of `roles` trainable (`role_weight`); everything else is frozen."""
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(any(role_weight(name, role) for role in roles))


def start_reasoner_training(model: nn.Module, peft_config=None) -> None:
    """Readies `model` for a reasoner trainer: a `reasoner` adapter (a new one from `peft_config` if it has none),
    active, the only trainable weights, and training mode on."""
    add_role_lora(model, "reasoner", peft_config)
    model.activate_role_adapter("reasoner")
    train_only(model, ["reasoner"])
    model.train()


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


def prepare_for_fsdp(model: nn.Module) -> None:
    """Readies a model sharded with FSDP2 (`fully_shard`, accelerate's `fsdp_version: 2`) for our trainers; a
    no-op for any other model, and done once.

    `compress_chunks` becomes one of the root's forward methods (`register_fsdp_forward_method`): compression
    calls the backbone and its embedding outside `forward`, where FSDP2 would not have gathered the root's
    weights. And every unit reduces a zero gradient for weights that got none (`set_reduce_scatter_unused_params`),
    as `with_every_trainable_weight` does for DDP: a GRPO step in which only some processes kept a block would
    otherwise reduce different weights on different processes.
    """
    if not isinstance(model, FSDPModule) or "compress_chunks" in vars(model):
        return
    register_fsdp_forward_method(model, "compress_chunks")
    model.set_reduce_scatter_unused_params(True)


@contextlib.contextmanager
def gathered_for_step(model: nn.Module, zero_loss: Callable[[], torch.Tensor] | None) -> Iterator[None]:
    """Runs one training step (forward and backward) of an FSDP2-sharded `model` on gathered weights, with the
    gradients reduced once at the end; a no-op for a model without FSDP2 units (one process, DDP).

    FSDP2 all-gathers a unit's weights in every forward that finds them sharded, and reduces its gradients once
    per forward call in backward. A GRPO step calls the model a different number of times on each process (episodes
    end at different lengths, the gate keeps different blocks, so the turns fill different numbers of batches):
    the processes would call different collectives and hang. Here every unit is gathered once, in the same order
    everywhere, and stays gathered through the forward calls and the backward with gradient sync off (FSDP2's
    gradient accumulation: each process sums its own gradients). On exit `zero_loss()` runs one identical forward
    and backward on every process with sync on: every unit then reduces its summed gradient once, plus an exact
    zero. `zero_loss=None` skips that (a gradient-accumulation micro-step; the last one reduces everything).

    Memory: the whole model is held on every process for the step, as for sampling anyway (and as under DDP);
    FSDP2 still shards it between steps, and shards the trainable weights' gradients and optimizer state.

    On exit the root keeps its weights after forward and every other unit reshards after forward and backward,
    FSDP2's default for `fully_shard` (and what `fsdp_reshard_after_forward: true` asks of accelerate). FSDP2 has
    setters but no public getters for these, so a unit configured otherwise (accelerate's group of final norm + LM
    head) reshards too from then on: one more all-gather in backward, same numbers.

    The weights digest that banks carry is recomputed once here (one hash of the K/V weights per step): FSDP2 copies
    fresh values into re-gathered storage without bumping version counters, so the digest's cache (keyed on data
    pointer and version) might not notice an update.

    Args:
        model (`nn.Module`): the unwrapped model.
        zero_loss (`Callable[[], torch.Tensor]`, *optional*): builds a loss equal to 0 from one forward through
            the root that reaches the trainable weights (its backward fires every unit's gradient reduction).
    """
    units = [module for module in model.modules() if isinstance(module, FSDPModule)]
    if not units:
        yield
        return
    for unit in units:
        _set_fsdp_step(unit, gathered=True)
        unit.unshard()
    if hasattr(model, "compressor"):
        weights_digest(model, refresh=True)
    yield  # an exception here propagates without resharding: a failed FSDP2 step needs `reset_iter_state()`
    if zero_loss is not None:
        for unit in units:
            unit.set_requires_gradient_sync(True, recurse=False)
            unit.set_reshard_after_backward(True, recurse=False)
        zero_loss().backward()
    for unit in units:
        unit.reshard()
        _set_fsdp_step(unit, gathered=False, root=unit is model)


def _set_fsdp_step(unit: FSDPModule, gathered: bool, root: bool = False) -> None:
    """Gathered: no resharding after forward or backward, no gradient sync; else FSDP2's defaults (the root alone
    keeps its weights after forward)."""
    unit.set_reshard_after_forward(not gathered and not root, recurse=False)
    unit.set_reshard_after_backward(not gathered, recurse=False)
    unit.set_requires_gradient_sync(not gathered, recurse=False)


class ListDataset(Dataset):
    def __init__(self, rows: list):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int):
        return self.rows[index]


def checkpoint_to_resume(output_dir: str, resume: bool | str | None) -> str | None:
    """The checkpoint `Trainer.train(resume_from_checkpoint=...)` continues from, or `None` for a fresh run.

    Args:
        output_dir (`str`): the trainer's `output_dir`, where `save_strategy="steps"` writes `checkpoint-<step>`.
        resume (`bool` or `str`, *optional*): `True` for the last checkpoint in `output_dir`, a path for that one.

    Raises:
        `FileNotFoundError`: naming the folder when there is nothing to resume from, and how checkpoints are made.
    """
    if not resume:
        return None
    if isinstance(resume, str):
        if not os.path.isdir(resume):
            raise FileNotFoundError(f"cannot resume from {resume}: no such checkpoint folder.")
        return resume
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
    if last is None:
        raise FileNotFoundError(
            f"nothing to resume: {output_dir} holds no checkpoint-<step> folder. Checkpoints are written every "
            "`save_steps` steps with save_strategy='steps' (the lychee-hf training commands do so by default); "
            "start a fresh run instead."
        )
    return last


class TimeLimitCallback(TrainerCallback):
    """Ends training cleanly (the model keeps every step taken) once `minutes` of wall time have passed, with a
    checkpoint at that step when the run writes checkpoints."""

    def __init__(self, minutes: float):
        self.seconds = minutes * 60
        self.started = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        if time.monotonic() - self.started >= self.seconds:
            control.should_training_stop = True
            # A checkpoint at the stop (when checkpoints are on), so that `--resume` continues from this very step.
            control.should_save = args.save_strategy != "no"
