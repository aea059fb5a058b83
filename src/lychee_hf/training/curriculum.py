"""Training questions for RL: the synthetic tasks over a length curriculum, or the user's MemAgent JSONL.

The curriculum is a list of stages, shortest documents first; each stage holds `n` examples of every task at
that length, interleaved in a seeded shuffle. Stage s draws its examples from generator seed `seed + s`, so no
fact repeats across stages, and `check_disjoint_seeds` refuses a training seed range that contains the seed of
the held-out evaluation rows (the evaluation runner's default seed is 0; training defaults to 1000).
"""

import random

from ..data import HELD_OUT_TASKS, TASKS, QAExample

TRAIN_SEED = 1000


def curriculum_examples(
    tokenizer, tasks: list[str], lengths: list[int], n: int, seed: int = TRAIN_SEED
) -> list[QAExample]:
    """`n` examples per task and length, stage by stage in the order of `lengths`.

    Args:
        tokenizer: the model's tokenizer (lengths count its tokens).
        tasks (`list[str]`): synthetic tasks (`mhqa`, `niah`, `vt`).
        lengths (`list[int]`): context lengths in tokens, one stage each, trained in this order.
        n (`int`): examples per task per stage.
        seed (`int`, *optional*, defaults to 1000): stage s uses generator seed `seed + s`.

    Returns:
        `list[QAExample]`: `len(lengths) * len(tasks) * n` examples in curriculum order.
    """
    check_trainable(tasks)
    if not lengths:
        raise ValueError("the curriculum needs at least one length.")
    examples = []
    for stage, length in enumerate(lengths):
        stage_examples = [example for task in tasks for example in TASKS[task](tokenizer, length, n, seed=seed + stage)]
        random.Random(f"lychee-rl/{seed}/{stage}").shuffle(stage_examples)
        examples += stage_examples
    return examples


def check_trainable(tasks: list[str]) -> None:
    """Refuses unknown task names and the held-out tasks (evaluation only), before any model is loaded."""
    unknown = [task for task in tasks if task not in TASKS]
    if unknown or not tasks:
        raise ValueError(f"unknown task(s) {unknown or tasks}: choose from {', '.join(TASKS)}")
    held_out = [task for task in tasks if task in HELD_OUT_TASKS]
    if held_out:
        trainable = ", ".join(task for task in TASKS if task not in HELD_OUT_TASKS)
        raise ValueError(
            f"task(s) {held_out} are held out: their families, phrasings or genres are kept for evaluation, so that "
            f"held-out accuracy means something. Train on {trainable}."
        )


def training_seeds(seed: int, stages: int) -> range:
    """The generator seeds a curriculum of `stages` stages starting at `seed` uses."""
    return range(seed, seed + stages)


def check_disjoint_seeds(seed: int, stages: int, held_out_seed: int) -> None:
    """Refuses a curriculum whose generator seeds include the held-out evaluation seed."""
    used = training_seeds(seed, stages)
    if held_out_seed in used:
        raise ValueError(
            f"training would use generator seeds {used.start}..{used.stop - 1}, which include the held-out seed "
            f"{held_out_seed}: pick a training --seed outside that range (default {TRAIN_SEED})."
        )
