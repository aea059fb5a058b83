"""What `lychee-hf eval` evaluates: one dataclass whose defaults the CLI reads, so each exists once.

Light on purpose (no torch or transformers at import): `lychee-hf --help` builds the eval parser from it.
"""

from dataclasses import MISSING, dataclass, field, fields


@dataclass
class EvalSettings:
    """What to evaluate. Lengths are ignored for loaded data (`task` "jsonl" / "hotpotqa").

    Args:
        task (`str`): a generated task (`lychee_hf.data.TASKS`), or `"jsonl"` / `"hotpotqa"` reading `data`.
        lengths (`list[int]`, *optional*, defaults to `[7000]`): context lengths in tokens of generated examples.
        n (`int`, *optional*, defaults to 8): examples per length.
        methods (`list[str]`, *optional*, defaults to `["lychee"]`): methods compared (`eval.baselines.METHODS`).
        seed (`int`, *optional*, defaults to 0): generator seed; 0 is the held-out seed training never uses.
        data (`str`, *optional*): the file `task` "jsonl" / "hotpotqa" reads.
        max_new_tokens (`int`, *optional*): answer length (default: the model's `max_answer_tokens`).
        memagent_chunk_tokens (`int`, *optional*, defaults to 5000): raw tokens per chunk of the MemAgent loop.
        bank_dtype (`str`, *optional*): storage format of lychee's blocks (`"int4"`, ...; default: as computed).
    """

    task: str
    lengths: list[int] = field(default_factory=lambda: [7000])
    n: int = 8
    methods: list[str] = field(default_factory=lambda: ["lychee"])
    seed: int = 0
    data: str | None = None
    max_new_tokens: int | None = None
    memagent_chunk_tokens: int = 5000
    bank_dtype: str | None = None

    def __post_init__(self):
        from ..data import TASKS
        from .baselines import METHODS

        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}: choose from {', '.join(METHODS)}")
        if self.task not in (*TASKS, "jsonl", "hotpotqa"):
            raise ValueError(f"unknown task {self.task!r}: choose from {', '.join((*TASKS, 'jsonl', 'hotpotqa'))}")
        if self.bank_dtype is not None:
            from ..modeling import check_bank_dtype

            check_bank_dtype(self.bank_dtype)
        if self.task in ("jsonl", "hotpotqa") and not self.data:
            raise ValueError(f"task {self.task} reads your data: pass --data FILE")


def default(name: str):
    """The default of `EvalSettings` field `name` (a fresh one for list fields)."""
    (spec,) = [f for f in fields(EvalSettings) if f.name == name]
    return spec.default_factory() if spec.default is MISSING else spec.default
