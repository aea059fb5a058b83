"""Rollouts of end-to-end GRPO: episodes sampled with the model's own loop, and the policy's sampled reward.

An episode is one question over one document, answered by the model's own loop (`generate(..., bank=bank)`):
every memory update after a kept block, then the final answer from the memory alone. `num_generations` episodes
are sampled per question (the group) and each is scored on its final answer (`rewards.py`). The gate is part of
the environment here: its decisions are taken as they came (it trains separately, as a classifier). Sampling is
plain temperature sampling (`top_k=0`, `top_p=1` by default), so the sampled distribution is the one the loss
scores. A question's episodes are sampled with a seed fixed by the run's seed, the step and the question's place
in the dataset (`rollout_seed`), so that a global batch samples the same episodes on any number of processes.
"""

import contextlib
import hashlib
from dataclasses import dataclass, field

import torch
from transformers import GenerationConfig

from ..data import QAExample
from ..modeling import stop_and_pad_ids
from .rewards import episode_rewards
from .rl_config import LycheeGRPOConfig


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
        bank=bank,
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
