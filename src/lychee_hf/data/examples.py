"""The row every part of lychee-hf shares: a long context, a question, its gold answers and where the gold facts are.

Task generators (`synthetic.py`), file loaders (`loaders.py`), the evaluation runner and the trainers all make or read
`QAExample`s.
"""

import re
from dataclasses import dataclass, field


@dataclass
class QAExample:
    """One long-context question with its gold answers and the location of its gold facts.

    Args:
        id (`str`): unique within a task, e.g. `"niah-7000-s0-3"`.
        task (`str`): `"mhqa"`, `"niah"`, `"vt"`, `"jsonl"` or `"hotpotqa"`.
        context (`str`): the long document.
        question (`str`): the question about it.
        answers (`list[str]`): gold answers; matching any one counts.
        supporting (`list[tuple[int, int]]`): character spans `[start, end)` in `context` of every gold fact.
        length_tokens (`int`): `len(tokenizer.encode(context, add_special_tokens=False))`; 0 when unknown.
        meta (`dict`): seed, target length and task-specific details (depths, keys, entities).
    """

    id: str
    task: str
    context: str
    question: str
    answers: list[str]
    supporting: list[tuple[int, int]]
    length_tokens: int
    meta: dict = field(default_factory=dict)


def parse_length(text: str) -> int:
    """Parses a length in tokens: `"7k"` -> 7000, `"112K"` -> 112000, `"1m"` -> 1000000, `"4096"` -> 4096.

    Args:
        text (`str`): digits (a decimal point allowed before a suffix), optionally followed by `k` or `m`.

    Returns:
        `int`: the positive number of tokens.

    Raises:
        `ValueError`: naming `text` when it is not such a length.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*", str(text))
    if match is None:
        raise ValueError(f"cannot parse length {text!r}: expected a number of tokens such as 4096, 7k, 112K or 1m")
    multiplier = {"": 1, "k": 1_000, "m": 1_000_000}[match.group(2).lower()]
    value = float(match.group(1)) * multiplier
    if value < 1 or value != int(value):
        raise ValueError(f"cannot parse length {text!r}: expected a positive whole number of tokens")
    return int(value)
