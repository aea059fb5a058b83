"""The GRPO loss of a batch of rollouts: group-normalised advantages, log-probs recomputed with gradients, and the
clipped objective.

Log-probabilities are recomputed with gradients after sampling: the document's kept chunks are compressed again
with the compressor in the graph (`compressor` role), and every turn is one teacher-forced forward of the
reasoner (`reasoner` role) reading its block as prefix (`forward(memory_blocks=...)`, which keeps the prefix
under gradient checkpointing). So the gradient of the answer reward reaches the reasoner adapter and, through the
blocks' K/V, the memory-token embedding and projections: end to end, as in the paper. One policy update per batch
of rollouts (TRL's `num_iterations=1`), so the clipped ratio is 1 in the forward pass and matters through its
gradient only, exactly as in TRL at that setting.
"""

import torch

from ..modeling import LycheeMemoryBlock, left_pad, role_adapter, stop_and_pad_ids
from .rl_config import LycheeGRPOConfig
from .rollout import RolloutGroup, Turn


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
