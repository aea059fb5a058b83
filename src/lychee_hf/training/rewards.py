"""What an episode earns: the rule reward of its final answer (sub-EM, EM or token F1 against the gold answers,
plus an optional format term), or TRL-style reward functions in its place."""

from collections.abc import Callable

from .rl_config import REWARDS, LycheeGRPOConfig

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
