"""The data layer under training and evaluation: the shared row (`QAExample`), seeded task generators, file loaders,
narrative filler and the supporting-span logic. Evaluation (`lychee_hf.eval`) and training (`lychee_hf.training`)
both stand on it; neither imports the other."""

from .examples import QAExample, parse_length
from .families import FAMILIES, FAMILY_TASKS, HELD_OUT_TASKS
from .loaders import load_examples, load_hotpotqa_json, load_memagent_jsonl
from .spans import supporting_chunks
from .synthetic import SYNTHETIC_TASKS, make_mhqa, make_niah, make_vt

# Every generated task by name: `lychee-hf eval --task`, training curricula.
TASKS = {**SYNTHETIC_TASKS, **FAMILY_TASKS}

__all__ = [
    "FAMILIES",
    "FAMILY_TASKS",
    "HELD_OUT_TASKS",
    "SYNTHETIC_TASKS",
    "TASKS",
    "QAExample",
    "load_examples",
    "load_hotpotqa_json",
    "load_memagent_jsonl",
    "make_mhqa",
    "make_niah",
    "make_vt",
    "parse_length",
    "supporting_chunks",
]
