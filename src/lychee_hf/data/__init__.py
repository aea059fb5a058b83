"""The data layer under training and evaluation: the shared row (`QAExample`, `examples.py`), seeded task
generators (`synthetic.py`, `families.py` over the tables of `relations.py`, and the real-document genres of
`genres/`), the words and invented names their contexts are made of (`vocabulary.py`, `narrative.py`), the
assembly of a context to a length in tokens (`length_fit.py`), file loaders (`loaders.py`), every task by name
(`tasks.py`) and the supporting-span logic (`spans.py`). Evaluation (`lychee_hf.eval`) and training
(`lychee_hf.training`) both stand on it; neither imports the other."""

from .examples import QAExample, parse_length
from .families import FAMILY_TASKS
from .genres import GENRE_TASKS, GENRES
from .loaders import load_hotpotqa_json, load_memagent_jsonl
from .relations import FAMILIES
from .spans import supporting_chunks
from .synthetic import SYNTHETIC_TASKS, make_mhqa, make_niah, make_vt
from .tasks import HELD_OUT_TASKS, TASKS, load_examples

__all__ = [
    "FAMILIES",
    "FAMILY_TASKS",
    "GENRES",
    "GENRE_TASKS",
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
