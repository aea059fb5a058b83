"""End-to-end GRPO over whole episodes: the reasoner adapter, and the compressor through the blocks it read.

An episode is one question over one document, answered by the model's own loop (`generate(..., memory=bank)`):
every memory update after a kept block, then the final answer from the memory alone. `num_generations` episodes
are sampled per question (the group). A rule reward scores each episode's final answer (sub-EM, EM or token F1
against the gold answers, plus an optional format term); the group-normalised advantage of an episode is shared
by every token of every turn of it. The gate is part of the environment here: its decisions are taken as they
came (it trains separately, as a classifier).

Log-probabilities are recomputed with gradients after sampling: the document's kept chunks are compressed again
with the compressor in the graph (`compressor` role), and every turn is one teacher-forced forward of the
reasoner (`reasoner` role) reading its block as prefix (`forward(memory_blocks=...)`, which keeps the prefix
under gradient checkpointing). So the gradient of the answer reward reaches the reasoner adapter and, through the
blocks' K/V, the memory-token embedding and projections: end to end, as in the paper. Sampling is plain
temperature sampling (`top_k=0`, `top_p=1` by default), so the sampled distribution is the one the loss scores.

The objective and the config names follow TRL's `GRPOConfig` (`num_generations`, `beta`, `epsilon`,
`epsilon_high`, `loss_type`, `scale_rewards`, `temperature`, `max_completion_length`). TRL's `GRPOTrainer`
itself recomputes log-probs by re-running the model on prompt + completion ids, which cannot carry a block
prefix nor the compressor; `LycheeGRPOTrainer` is instead a thin `transformers.Trainer` (TRL's own base): the
optimiser, schedule, gradient accumulation, logging, mixed precision and `accelerate launch` (DDP, or FSDP2 as
below) are the Trainer's. One policy update per batch of rollouts (TRL's `num_iterations=1`), so the
clipped ratio is 1 in the forward pass and matters through its gradient only, exactly as in TRL at that setting.

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

import contextlib
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from accelerate.utils import gather_object
from torch.utils.data import DataLoader, Dataset, SequentialSampler
from transformers import GenerationConfig, Trainer
from transformers.utils import logging

from ..data import QAExample
from ..metrics import exact_match, substring_match, token_f1
from ..modeling.adapters_lychee import role_adapter
from ..modeling.memory_bank_lychee import LycheeMemoryBlock
from ..modeling.prompts_lychee import left_pad, stop_and_pad_ids
from .data import (
    ListDataset,
    LycheeTrainingArguments,
    add_role_lora,
    checkpoint_to_resume,
    gathered_for_step,
    prepare_for_fsdp,
    role_weight,
    train_only,
    training_default,
    with_every_trainable_weight,
)

logger = logging.get_logger(__name__)

REWARDS = {"sub_em": substring_match, "em": exact_match, "f1": token_f1}
LOSS_TYPES = ("dapo", "grpo")
REWARD_SCALINGS = ("group", "batch", "none")


@dataclass
class LycheeGRPOConfig(LycheeTrainingArguments):
    """`TrainingArguments` for end-to-end GRPO, with TRL's `GRPOConfig` names where they mean the same. The `reasoner`
    LoRA adapter created when the model has none is configured apart, as in TRL: `train_rl(..., peft_config=...)`.

    Args:
        num_generations (`int`, *optional*, defaults to 4): episodes sampled per question (the group).
        per_device_train_batch_size (`int`, *optional*, defaults to 4): episodes per device and step, a multiple
            of `num_generations` (as in TRL: 8 with 4 generations = 2 questions).
        temperature / top_p / top_k: sampling of every turn (`top_k=0`: off). The loss scores log-softmax of
            logits / temperature, so keep `top_p=1` and `top_k=0` for an exact on-policy objective.
        max_completion_length (`int`, *optional*): tokens per memory update (default: the model's `memory_budget`).
        max_answer_length (`int`, *optional*): tokens of the final answer (default: `max_answer_tokens`).
        beta (`float`, *optional*, defaults to 0.0): KL coefficient against the reference: the backbone without
            the reasoner adapter reading the same blocks (k3 estimator). 0 (TRL's and DAPO's default) loads no
            reference pass.
        epsilon / epsilon_high (`float`, *optional*, defaults to 0.2 / 0.28): the ratio is clipped to
            [1 - epsilon, 1 + epsilon_high] (DAPO's clip-higher; set both to 0.2 for GRPO's symmetric clip).
        loss_type (`str`, *optional*, defaults to `"dapo"`): `"dapo"` averages over every completion token of the
            batch; `"grpo"` averages per episode first, then over episodes.
        scale_rewards (`str`, *optional*, defaults to `"group"`): divide advantages by the group's reward std
            (`"group"`), the batch's (`"batch"`) or not at all (`"none"`, Dr. GRPO).
        reward (`str`, *optional*, defaults to `"sub_em"`): answer reward, `"sub_em"`, `"em"` or `"f1"`.
        format_reward (`float`, *optional*, defaults to 0.0): added when the answer stops by itself (eos within
            `max_answer_length`) and is non-empty.
        train_compressor (`bool`, *optional*, defaults to `True`): also train the memory-token embedding and
            projections (and a `compressor` adapter if the model has one), through the blocks.
        logprob_batch_size (`int`, *optional*, defaults to 8): turns per teacher-forced forward.
    """

    num_generations: int = field(default=4, metadata={"help": "episodes per question (the group)"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature of episodes"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling of episodes (1: off, exact on-policy)"})
    top_k: int = field(default=0, metadata={"help": "top-k sampling of episodes (0: off, exact on-policy)"})
    max_completion_length: int | None = field(
        default=None, metadata={"help": "tokens per memory update (None: the model's memory budget)"}
    )
    max_answer_length: int | None = field(
        default=None, metadata={"help": "tokens of the final answer (None: the model's max_answer_tokens)"}
    )
    beta: float = field(default=0.0, metadata={"help": "KL coefficient against the adapter-free reference"})
    epsilon: float = field(default=0.2, metadata={"help": "lower clip of the ratio: 1 - epsilon"})
    epsilon_high: float = field(default=0.28, metadata={"help": "upper clip of the ratio: 1 + epsilon_high"})
    loss_type: str = field(
        default="dapo", metadata={"help": "token averaging over the batch (dapo) or per episode", "choices": LOSS_TYPES}
    )
    scale_rewards: str = field(
        default="group", metadata={"help": "divide advantages by this reward std", "choices": REWARD_SCALINGS}
    )
    reward: str = field(default="sub_em", metadata={"help": "answer reward", "choices": list(REWARDS)})
    format_reward: float = field(default=0.0, metadata={"help": "bonus for a non-empty answer that stops"})
    train_compressor: bool = field(
        default=True, metadata={"help": "also train the memory-token weights, through the blocks"}
    )
    logprob_batch_size: int = field(default=8, metadata={"help": "turns per teacher-forced forward"})
    learning_rate: float = training_default("learning_rate", 1e-5)
    num_train_epochs: float = training_default("num_train_epochs", 1.0, aliases=["--epochs"])
    per_device_train_batch_size: int = training_default("per_device_train_batch_size", 4)
    max_grad_norm: float = training_default("max_grad_norm", 1.0)
    logging_steps: float = training_default("logging_steps", 1)

    def __post_init__(self):
        super().__post_init__()
        if self.num_generations < 2:
            raise ValueError(
                f"num_generations must be at least 2 (advantages compare a group), got {self.num_generations}."
            )
        if self.per_device_train_batch_size % self.num_generations:
            raise ValueError(
                f"per_device_train_batch_size ({self.per_device_train_batch_size}) counts episodes and must be a "
                f"multiple of num_generations ({self.num_generations}): e.g. {self.num_generations} for one "
                "question per step."
            )
        for name, value, allowed in (
            ("loss_type", self.loss_type, LOSS_TYPES),
            ("scale_rewards", self.scale_rewards, REWARD_SCALINGS),
            ("reward", self.reward, tuple(REWARDS)),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}.")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive for sampling, got {self.temperature}.")
        if not 0 <= self.epsilon < 1 or self.epsilon_high < 0:
            raise ValueError(
                f"epsilon must be in [0, 1) and epsilon_high >= 0, got {self.epsilon}, {self.epsilon_high}."
            )

    @property
    def questions_per_device(self) -> int:
        return self.per_device_train_batch_size // self.num_generations


@dataclass
class Turn:
    """One generation of an episode: a memory update after block `block_index`, or the final answer (`None`).

    Attributes:
        block_index (`int` or `None`): the block read as prefix.
        prompt_ids (`torch.LongTensor`): (L,) the prompt after the block.
        completion_ids (`torch.LongTensor`): (T,) what was sampled, through the first stop id.
    """

    block_index: int | None
    prompt_ids: torch.LongTensor
    completion_ids: torch.LongTensor


@dataclass
class Episode:
    """One sampled trajectory: its turns (memory updates, then the final answer), answer text and reward."""

    turns: list[Turn]
    answer: str
    reward: float
    advantage: float = 0.0


@dataclass
class RolloutGroup:
    """The `num_generations` episodes of one question, and what recomputing their blocks needs."""

    example: QAExample
    context_ids: torch.LongTensor
    episodes: list[Episode] = field(default_factory=list)

    def kept_blocks(self) -> list[int]:
        return sorted({t.block_index for e in self.episodes for t in e.turns if t.block_index is not None})


RewardFunc = Callable[..., list[float]]


def episode_rewards(
    answers: list[str], stopped: list[bool], gold: list[str], config: LycheeGRPOConfig, reward_funcs=None
) -> list[float]:
    """Rewards of a group's final answers.

    The rule reward is `config.reward` (sub-EM, EM or F1 against `gold`), plus `format_reward` for a non-empty
    answer that ended with a stop id. `reward_funcs`, as in TRL, replace the rule: each is called as
    `func(completions=answers, answers=[gold] * len(answers))` and returns one float per answer; they are summed.
    """
    if reward_funcs:
        totals = [0.0] * len(answers)
        for func in reward_funcs:
            values = func(completions=answers, answers=[gold] * len(answers))
            if len(values) != len(answers):
                raise ValueError(f"reward function {func!r} returned {len(values)} rewards for {len(answers)} answers.")
            totals = [total + float(value) for total, value in zip(totals, values)]
        return totals
    return [
        REWARDS[config.reward](answer, gold) + (config.format_reward if done and answer.strip() else 0.0)
        for answer, done in zip(answers, stopped)
    ]


def sampling_configs(model, config: LycheeGRPOConfig) -> tuple[GenerationConfig, GenerationConfig]:
    """(final answer, memory update) decoding: the model's stop ids with the config's sampling settings."""
    answer = GenerationConfig.from_dict(model.generation_config.to_dict())
    answer.update(do_sample=True, temperature=config.temperature, top_p=config.top_p, top_k=config.top_k)
    answer.max_new_tokens = config.max_answer_length or model.config.max_answer_tokens
    memory = GenerationConfig.from_dict(answer.to_dict())
    memory.max_new_tokens = config.max_completion_length or model.config.memory_budget
    return answer, memory


@torch.no_grad()
def sample_group(model, tokenizer, example: QAExample, config: LycheeGRPOConfig, reward_funcs=None) -> RolloutGroup:
    """Samples `num_generations` episodes of `example` with the model's own loop and scores them.

    The document is compressed once (no gradients); every episode reads the same bank, and the gate decides
    per episode (a memory-reading gate may differ between episodes).
    """
    device = model.device
    context = torch.tensor([tokenizer.encode(example.context, add_special_tokens=False)], device=device)
    question = torch.tensor(tokenizer.encode(example.question, add_special_tokens=False), device=device)
    answer_config, memory_config = sampling_configs(model, config)
    bank = model.compress(context, show_progress=False)
    questions = question[None].expand(config.num_generations, -1)
    output = model.generate(
        input_ids=questions,
        memory=bank,
        generation_config=answer_config,
        memory_generation_config=memory_config,
        return_dict_in_generate=True,
        show_progress=False,
        # Each process samples alone: under FSDP2 the weights are gathered for the step (`gathered_for_step`), and
        # transformers' lockstep decoding across processes would deadlock on uneven numbers of turns.
        synced_gpus=False,
    )
    eos_ids, _ = stop_and_pad_ids(answer_config)
    group, answers, stops = RolloutGroup(example, context[0]), [], []
    for trace in output.trace:
        # Every turn's prompt as the loop fed it to generate (the trace records them), never rebuilt here.
        turns = [
            Turn(
                record.block_index,
                torch.tensor(record.prompt_ids, dtype=torch.long, device=device),
                torch.tensor(record.generated_ids, device=device),
            )
            for record in trace
            if record.kept
        ]
        completion = torch.tensor(trace.answer_ids, dtype=torch.long, device=device)  # through the first stop id
        stops.append(bool(trace.answer_ids) and trace.answer_ids[-1] in eos_ids)
        turns.append(Turn(None, torch.tensor(trace.answer_prompt_ids, dtype=torch.long, device=device), completion))
        answers.append(tokenizer.decode(completion, skip_special_tokens=True).strip())
        group.episodes.append(Episode(turns, answers[-1], 0.0))
    rewards = episode_rewards(answers, stops, example.answers, config, reward_funcs)
    for episode, reward in zip(group.episodes, rewards):
        episode.reward = reward
    return group


def assign_advantages(
    groups: list[RolloutGroup], scale_rewards: str = "group", batch_rewards: list[float] | None = None
) -> None:
    """Group-normalised advantages: reward minus the group mean, divided by the group's (or batch's) std.

    Args:
        batch_rewards (`list[float]`, *optional*): every reward of the global batch (all processes), whose std
            `scale_rewards="batch"` divides by (default: the rewards of `groups`).
    """
    rewards = torch.tensor([[e.reward for e in g.episodes] for g in groups], dtype=torch.float64)  # (Q, G)
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    if scale_rewards == "group":
        centred = centred / (rewards.std(dim=1, keepdim=True) + 1e-4)
    elif scale_rewards == "batch":
        spread = rewards.std() if batch_rewards is None else torch.tensor(batch_rewards, dtype=torch.float64).std()
        centred = centred / (spread + 1e-4)
    for group, advantages in zip(groups, centred.tolist()):
        for episode, advantage in zip(group.episodes, advantages):
            episode.advantage = advantage


def recompute_blocks(
    model, context_ids: torch.LongTensor, indices: list[int], grad: bool
) -> dict[int, LycheeMemoryBlock]:
    """Blocks `indices` of a document compressed again, with the compressor in the graph when `grad`.

    Args:
        model (`LycheeMemoryForCausalLM`): the unwrapped model.
        context_ids (`torch.LongTensor`): (N,) the document.
        indices (`list[int]`): which chunks (of `chunk_size` tokens) to compress.
        grad (`bool`): keep gradients (for end-to-end training of the compressor).
    """
    if not indices:
        return {}
    size = model.config.chunk_size
    spans = [(index * size, min((index + 1) * size, context_ids.numel())) for index in indices]
    with torch.set_grad_enabled(grad):
        blocks = model.compress_chunks([context_ids[start:end] for start, end in spans], spans)
    return dict(zip(indices, blocks))


def turn_logprobs(
    model,
    turns: list[Turn],
    blocks: list[LycheeMemoryBlock | None],
    temperature: float = 1.0,
    forward=None,
    role: str | None = "reasoner",
) -> list[torch.Tensor]:
    """Per-token log-probabilities of each turn's completion, teacher-forced, in one forward.

    Args:
        model (`LycheeMemoryForCausalLM`): the unwrapped model.
        turns (`list[Turn]`): all memory updates or all final answers (a forward reads blocks for every row or
            for none).
        blocks (`list`): the block each turn reads (`None` for final answers).
        temperature (`float`): logits are divided by it, as when sampling.
        forward (`nn.Module`, *optional*): what to call instead of `model` (a distributed wrapper).
        role (`str`, *optional*): the adapter to run with (`None`: every adapter off, the reference).

    Returns:
        `list[torch.Tensor]`: per turn, (T,) log-probs of its completion tokens.
    """
    forward = forward or model
    _, pad_id = stop_and_pad_ids(model.generation_config)
    sequences = [torch.cat([t.prompt_ids, t.completion_ids]) for t in turns]
    ids, mask = left_pad(sequences, pad_id)
    longest = max(t.completion_ids.numel() for t in turns)
    readings = {"memory_blocks": blocks} if blocks[0] is not None else {}
    with role_adapter(model, role):
        logits = forward(input_ids=ids, attention_mask=mask, logits_to_keep=longest + 1, **readings).logits
    # logits[:, j] predicts the token after position (length - longest - 1 + j): the last `longest` tokens.
    logprobs = torch.log_softmax(logits[:, :-1].float() / temperature, dim=-1)
    targets = ids[:, -longest:]
    token_logprobs = logprobs.gather(-1, targets[..., None])[..., 0]  # (B, longest)
    return [row[longest - t.completion_ids.numel() :] for row, t in zip(token_logprobs, turns)]


def episode_logprobs(
    model,
    group: RolloutGroup,
    blocks: dict[int, LycheeMemoryBlock],
    config: LycheeGRPOConfig,
    forward=None,
    role="reasoner",
) -> list[list[torch.Tensor]]:
    """Log-probs of every turn of every episode of `group`: per episode, per turn, (T,) tensors.

    Memory updates are batched `logprob_batch_size` at a time (each row reads its own block), final answers too.
    """
    flat = [(e, t, turn) for e, episode in enumerate(group.episodes) for t, turn in enumerate(episode.turns)]
    result: list[list] = [[None] * len(episode.turns) for episode in group.episodes]
    for with_block in (True, False):
        items = [item for item in flat if (item[2].block_index is not None) == with_block]
        for start in range(0, len(items), config.logprob_batch_size):
            batch = items[start : start + config.logprob_batch_size]
            turns = [turn for _, _, turn in batch]
            readings = [blocks[turn.block_index] if with_block else None for turn in turns]
            for (e, t, _), logprobs in zip(
                batch, turn_logprobs(model, turns, readings, config.temperature, forward, role)
            ):
                result[e][t] = logprobs
    return result


def grpo_loss(
    logprobs: list[list[torch.Tensor]],
    advantages: list[float],
    config: LycheeGRPOConfig,
    reference: list[list[torch.Tensor]] | None = None,
    token_normaliser: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The clipped policy-gradient loss (+ beta * KL) over the turns of a batch of episodes.

    Args:
        logprobs: per episode, per turn, (T,) log-probs with gradients.
        advantages: per episode, shared by all of its tokens.
        config: `epsilon`, `epsilon_high`, `beta`, `loss_type`.
        reference: the reference's log-probs, same layout (needed when `beta > 0`).
        token_normaliser: what the `dapo` token sum is divided by (default: this batch's completion tokens);
            under P processes the trainer passes the global batch's tokens / P, so that DDP's average of the P
            gradients is the gradient of one loss over the global batch.

    Returns:
        `(loss, stats)`: stats hold the clipped-token fraction and the mean KL.
    """
    per_episode, counts, clipped, kls = [], [], 0.0, []
    for e, (turns, advantage) in enumerate(zip(logprobs, advantages)):
        current = torch.cat(turns)  # (T_episode,)
        ratio = torch.exp(current - current.detach())  # one update per rollout batch: old = current, detached
        bounded = torch.clamp(ratio, 1 - config.epsilon, 1 + config.epsilon_high)
        per_token = -torch.minimum(ratio * advantage, bounded * advantage)
        clipped += float(((ratio < 1 - config.epsilon) | (ratio > 1 + config.epsilon_high)).sum())
        if config.beta:
            gap = torch.cat(reference[e]) - current
            kl = torch.exp(gap) - gap - 1
            per_token = per_token + config.beta * kl
            kls.append(float(kl.mean()))
        per_episode.append(per_token)
        counts.append(current.numel())
    total = sum(counts)
    if config.loss_type == "dapo":
        loss = torch.cat(per_episode).sum() / (token_normaliser or max(total, 1))
    else:
        loss = torch.stack([tokens.mean() for tokens in per_episode]).mean()
    stats = {"clip_ratio": clipped / max(total, 1), "kl": sum(kls) / len(kls) if kls else 0.0}
    return loss, stats


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


def rollout_seed(seed: int, step: int, index: int) -> int:
    """The sampling seed of one question's episodes: fixed by the run's seed, the optimizer step and the
    question's index in the dataset, so a global batch samples the same episodes on any number of processes."""
    digest = hashlib.sha256(f"{seed}:{step}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % 2**63


@contextlib.contextmanager
def seeded(seed: int, device: torch.device):
    """Runs the block with the torch RNG (CPU, and `device` if it is a GPU) seeded by `seed`, then restores it."""
    devices = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


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


@torch.no_grad()
def evaluate_policy(model, tokenizer, examples: list[QAExample], config: LycheeGRPOConfig) -> dict[str, float]:
    """Mean reward of `num_generations` sampled episodes per held-out example: what GRPO optimises, measured.

    Greedy accuracy can saturate while the sampled policy still improves; this reports the latter.

    Returns:
        `dict`: `reward` over all episodes, `reward/<task>` per task, and `n` (examples).
    """
    was_training = model.training
    model.eval()
    per_task: dict[str, list[float]] = {}
    for example in examples:
        group = sample_group(model, tokenizer, example, config)
        per_task.setdefault(example.task, []).extend(e.reward for e in group.episodes)
    model.train(was_training)
    everything = [r for rewards in per_task.values() for r in rewards]
    result = {"reward": sum(everything) / len(everything), "n": len(examples)}
    result.update({f"reward/{task}": sum(r) / len(r) for task, r in per_task.items()})
    return result
