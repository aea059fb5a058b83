"""Every task by name: the generated ones (`TASKS`: `lychee-hf eval --task`, training curricula), those training
refuses (`HELD_OUT_TASKS`) and `load_examples`, which gives the examples of a task, generated or read from the
user's file."""

from pathlib import Path

from .examples import QAExample
from .families import FAMILY_HELD_OUT_TASKS, FAMILY_TASKS
from .genres import GENRE_HELD_OUT_TASKS, GENRE_TASKS
from .loaders import load_hotpotqa_json, load_memagent_jsonl
from .synthetic import SYNTHETIC_TASKS

TASKS = {**SYNTHETIC_TASKS, **FAMILY_TASKS, **GENRE_TASKS}

# Tasks built from held-out families, phrasings or genres: evaluation only. Every held-out accuracy claim rests on no
# training run ever seeing them, so the training entry points refuse them (`lychee_hf.training.check_trainable`).
HELD_OUT_TASKS = (*FAMILY_HELD_OUT_TASKS, *GENRE_HELD_OUT_TASKS)


def load_examples(
    task: str, tokenizer, length: int, n: int, seed: int = 0, data: str | Path | None = None
) -> list[QAExample]:
    """The examples of `task`: the first `n` of the user's file for `"jsonl"` / `"hotpotqa"` (`data`), otherwise `n`
    generated at `length` tokens from generator `seed` (`TASKS`).

    Args:
        task (`str`): a generated task name, `"jsonl"` (MemAgent schema) or `"hotpotqa"`.
        tokenizer: the model's tokenizer (generated lengths count its tokens).
        length (`int`): context length in tokens of generated examples.
        n (`int`): how many examples.
        seed (`int`, *optional*, defaults to 0): generator seed.
        data (`str` or `Path`, *optional*): the file of `"jsonl"` / `"hotpotqa"`.

    Returns:
        `list[QAExample]`.
    """
    if task == "jsonl":
        return load_memagent_jsonl(data)[:n]
    if task == "hotpotqa":
        return load_hotpotqa_json(data)[:n]
    return TASKS[task](tokenizer, length, n, seed=seed)
