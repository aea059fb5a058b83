"""End-to-end GRPO over whole episodes: the reasoner adapter, and the compressor through the blocks it read.

`LycheeGRPOTrainer` samples episodes (`rollout.py`), scores them (`rewards.py`) and takes one step on their loss
(`rl_loss.py`); `train_rl` is the entry point. TRL's `GRPOTrainer` recomputes log-probs by re-running the model on
prompt + completion ids, which cannot carry a block prefix nor the compressor; `LycheeGRPOTrainer` is instead a
thin `transformers.Trainer` (TRL's own base): the optimiser, schedule, gradient accumulation, logging, mixed
precision and `accelerate launch` (DDP, or FSDP2 as below) are the Trainer's.

Several processes (`accelerate launch`, `torchrun`): the questions of a step are split across processes (the
Trainer's sharded dataloader), each samples the episodes of its own questions, and DDP averages the gradients of
the reasoner adapter and the memory-token weights. A step equals the one-process step over the same global batch
(up to the order of floating-point sums): a question's episodes are sampled with a seed fixed by the run's seed,
the step and the question's place in the dataset (`rollout_seed`), the DAPO loss divides by the completion tokens
of the whole global batch, `scale_rewards="batch"` uses the global batch's reward spread, and the logged metrics
cover every process's episodes.

Under FSDP2 (`fully_shard`, accelerate's `fsdp_version: 2`) the processes call the model a different number of
times per step, which FSDP2's per-forward gathering and per-call gradient reduction cannot follow; `training_step`
runs the step on weights gathered once and reduces the gradients once at its end (`gathered_for_step`). Tested on
CPU only (2 processes over gloo, a tiny Llama, documents of two lengths: two steps equal the one-process steps);
not yet run on GPUs.
"""

from dataclasses import dataclass

import torch
from accelerate.utils import gather_object
from torch.utils.data import DataLoader, Dataset, SequentialSampler
from transformers import Trainer
from transformers.utils import logging

from ..data import QAExample
from ..modeling import LycheeMemoryBlock, role_adapter
from .rewards import RewardFunc
from .rl_config import REWARDS, LycheeGRPOConfig
from .rl_loss import assign_advantages, episode_logprobs, grpo_loss, recompute_blocks
from .rollout import RolloutGroup, rollout_seed, sample_group, seeded
from .trainer_utils import (
    ListDataset,
    add_role_lora,
    checkpoint_to_resume,
    gathered_for_step,
    prepare_for_fsdp,
    role_weight,
    train_only,
    with_every_trainable_weight,
)

logger = logging.get_logger(__name__)


class LycheeGRPOTrainer(Trainer):
    """A `Trainer` whose step samples episodes with the model's own loop and takes one GRPO step on them.

    Rows of `train_dataset` are `QAExample`s, read in order (a length curriculum stays a curriculum).
    `reward_funcs` (optional, TRL-style callables, see `episode_rewards`) replace the config's rule reward.
    Metrics logged per step: `reward` (mean), `reward/<task>` (when the step had that task), `reward_std`,
    `answer_correct`, `turns` (per episode), `completion_tokens`, `clip_ratio`, `kl`.
    """

    def __init__(self, model, args: LycheeGRPOConfig, train_dataset, processing_class, reward_funcs=None, **kwargs):
        super().__init__(
            model=model, args=args, train_dataset=train_dataset, processing_class=processing_class, **kwargs
        )
        self.reward_funcs = list(reward_funcs or [])
        self._metrics: dict[str, list[float]] = {}

    def get_train_dataloader(self) -> DataLoader:
        loader = DataLoader(
            _Indexed(self.train_dataset),
            batch_size=self.args.questions_per_device,
            sampler=SequentialSampler(self.train_dataset),
            collate_fn=list,
        )
        return self.accelerator.prepare(loader)  # several processes: each gets its share of every global batch

    def training_step(self, model, inputs: list[tuple[int, QAExample]], num_items_in_batch=None) -> torch.Tensor:
        """The Trainer's step (`compute_loss`, then backward); under FSDP2 on weights gathered for the whole step and
        with the gradients reduced once at its end (`gathered_for_step`), because every process samples and
        scores a different number of turns."""
        unwrapped = self.accelerator.unwrap_model(model)
        prepare_for_fsdp(unwrapped)
        sync = self.accelerator.sync_gradients  # False on gradient-accumulation micro-steps: the last one reduces
        with gathered_for_step(unwrapped, (lambda: zero_loss(unwrapped)) if sync else None):
            return super().training_step(model, inputs, num_items_in_batch)

    def compute_loss(
        self, model, inputs: list[tuple[int, QAExample]], return_outputs: bool = False, num_items_in_batch=None
    ):
        unwrapped = self.accelerator.unwrap_model(model)
        prepare_for_fsdp(unwrapped)
        was_training = unwrapped.training
        unwrapped.eval()  # sampling: no dropout
        groups = []
        for index, example in inputs:
            with seeded(rollout_seed(self.args.seed, self.state.global_step, index), unwrapped.device):
                groups.append(sample_group(unwrapped, self.processing_class, example, self.args, self.reward_funcs))
        unwrapped.train(was_training)
        batch_rewards = None
        if self.args.scale_rewards == "batch" and self.accelerator.num_processes > 1:
            batch_rewards = gather_object([e.reward for g in groups for e in g.episodes])
        assign_advantages(groups, self.args.scale_rewards, batch_rewards)
        logprobs, references, advantages = [], [], []
        grad = any(p.requires_grad for name, p in unwrapped.named_parameters() if role_weight(name, "compressor"))
        for group in groups:
            blocks = recompute_blocks(unwrapped, group.context_ids, group.kept_blocks(), grad)
            logprobs += episode_logprobs(unwrapped, group, blocks, self.args, forward=model)
            if self.args.beta:
                with torch.no_grad():
                    detached = {i: _detached(b) for i, b in blocks.items()}
                    references += episode_logprobs(unwrapped, group, detached, self.args, role=None)
            advantages += [episode.advantage for episode in group.episodes]
        loss, stats = grpo_loss(logprobs, advantages, self.args, references or None, self._token_normaliser(logprobs))
        loss = with_every_trainable_weight(loss, model, unwrapped)  # DDP: a step with no kept block is fine too
        self._record(groups, stats)
        return (loss, None) if return_outputs else loss

    def _token_normaliser(self, logprobs: list[list[torch.Tensor]]) -> float | None:
        """Global completion tokens / processes for the `dapo` loss under several processes; else `None`."""
        if self.args.loss_type != "dapo" or self.accelerator.num_processes == 1:
            return None
        local = torch.tensor([sum(t.numel() for turns in logprobs for t in turns)], device=self.accelerator.device)
        return max(float(self.accelerator.gather(local).sum()), 1.0) / self.accelerator.num_processes

    def _record(self, groups: list[RolloutGroup], stats: dict[str, float]) -> None:
        """Adds this step's rollout metrics, over the episodes of every process, to the next training log."""
        episodes = [
            (
                g.example.task,
                e.reward,
                REWARDS[self.args.reward](e.answer, g.example.answers),
                len(e.turns),
                sum(t.completion_ids.numel() for t in e.turns),
            )
            for g in groups
            for e in g.episodes
        ]
        if self.accelerator.num_processes > 1:
            episodes = gather_object(episodes)
            stats = {key: sum(values) / len(values) for key, values in _gathered_stats(stats).items()}
        tasks, rewards, correct, turns, tokens = zip(*episodes)
        rewards = torch.tensor(rewards)
        values = {
            "reward": float(rewards.mean()),
            "reward_std": float(rewards.std()) if len(rewards) > 1 else 0.0,
            "answer_correct": sum(correct) / len(correct),
            "turns": sum(turns) / len(turns),
            "completion_tokens": sum(tokens) / len(tokens),
            **stats,
        }
        for task in dict.fromkeys(tasks):  # per task, as TRL logs per reward function: a task mix hides progress
            task_rewards = [reward for name, reward in zip(tasks, rewards.tolist()) if name == task]
            self._metrics.setdefault(f"reward/{task}", []).append(sum(task_rewards) / len(task_rewards))
        for key, value in values.items():
            self._metrics.setdefault(key, []).append(value)

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if self._metrics and "loss" in logs:  # a training log: add the rollout metrics since the last one
            logs = {**logs, **{key: sum(v) / len(v) for key, v in self._metrics.items()}}
            self._metrics = {}
        super().log(logs, *args, **kwargs)


def zero_loss(model) -> torch.Tensor:
    """0 x the logits of a one-token forward with the `reasoner` adapter: a loss whose backward runs through every
    decoder layer and adds exactly zero to every gradient (it triggers FSDP2's gradient reduction)."""
    ids = torch.zeros((1, 1), dtype=torch.long, device=model.device)
    with role_adapter(model, "reasoner"):
        return model(input_ids=ids).logits.sum() * 0.0


class _Indexed(Dataset):
    """(index, row) pairs of a dataset: the index seeds the row's rollouts."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return index, self.dataset[index]


def _gathered_stats(stats: dict[str, float]) -> dict[str, list[float]]:
    gathered = gather_object([stats])
    return {key: [entry[key] for entry in gathered] for key in stats}


def _detached(block: LycheeMemoryBlock) -> LycheeMemoryBlock:
    return LycheeMemoryBlock(block.keys.detach(), block.values.detach(), block.mask, block.span)


def prepare_for_rl(model, config: LycheeGRPOConfig, peft_config=None) -> None:
    """Adds a `reasoner` LoRA adapter from `peft_config` (default: `LoraArguments().lora_config()`) if the model has
    none, and marks what RL trains: the reasoner adapter and, with `train_compressor` (and a model in
    `memory_tokens` mode), the compressor's weights and adapter."""
    add_role_lora(model, "reasoner", peft_config)
    train_compressor = config.train_compressor and model.config.compression_mode == "memory_tokens"
    if config.train_compressor and not train_compressor:
        logger.warning("train_compressor is ignored: a lossless model has no compressor weights to train.")
    train_only(model, ["reasoner", "compressor"] if train_compressor else ["reasoner"])


@dataclass
class RLResult:
    """The trainer (its `state.log_history` holds the per-step metrics) and the training rows used."""

    trainer: LycheeGRPOTrainer
    train_rows: int


def train_rl(
    model,
    tokenizer,
    examples: list[QAExample],
    config: LycheeGRPOConfig,
    reward_funcs: list[RewardFunc] | None = None,
    callbacks: list | None = None,
    peft_config=None,
    resume_from_checkpoint: bool | str | None = None,
) -> RLResult:
    """Runs end-to-end GRPO on `examples` (in order) and leaves the trained weights in `model`.

    Args:
        model (`LycheeMemoryForCausalLM`): the model to train (its role adapters travel along; the reasoner
            adapter is created if missing).
        tokenizer: its tokenizer.
        examples (`list[QAExample]`): questions with gold answers (e.g. `curriculum_examples` or
            `load_memagent_jsonl`).
        config (`LycheeGRPOConfig`): training settings.
        reward_funcs (`list[Callable]`, *optional*): custom rewards instead of the rule (see `episode_rewards`).
        callbacks (`list[TrainerCallback]`, *optional*): e.g. `TimeLimitCallback(minutes)`.
        peft_config (`peft.LoraConfig`, *optional*): the `reasoner` adapter created when the model has none
            (default: `LoraArguments().lora_config()`, rank 8, alpha 16, every decoder projection).
        resume_from_checkpoint (`bool` or `str`, *optional*): continue an interrupted run from the last
            checkpoint in `config.output_dir` (`True`) or from this checkpoint folder: weights, optimizer, scheduler,
            RNG and step restored, so the result equals one uninterrupted run (needs `save_strategy="steps"`).

    Returns:
        `RLResult`.
    """
    if not examples:
        raise ValueError("train_rl needs at least one example.")
    if model.config.update_template_ids is None:
        raise ValueError("The model has no prompt templates: build it with from_backbone(model, tokenizer).")
    prepare_for_rl(model, config, peft_config)
    trainer = LycheeGRPOTrainer(model, config, ListDataset(examples), tokenizer, reward_funcs, callbacks=callbacks)
    trainer.train(resume_from_checkpoint=checkpoint_to_resume(config.output_dir, resume_from_checkpoint))
    model.eval()
    model.activate_role_adapter("reasoner")
    return RLResult(trainer, len(examples))
