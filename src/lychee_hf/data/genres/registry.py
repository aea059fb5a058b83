"""The genres by name, split into training and held-out genres (as the fact families are), and the tasks built on
them:

* `genres`: documents of the training genres;
* `genres-heldout`: documents of the held-out genres, every phrasing (the figures to quote);
* `genres-heldout:<genre>`: one held-out genre;
* `genres-heldout-unanswerable`: the `genres-heldout` documents, each asked about a subject of its genre's kinds
  that it never names (gold `answers` empty, `meta["unanswerable"]` True).

Example `i` of a task is of genre `i % len(genres)`, its gold fact of that genre's kinds in turn, and it depends
only on (task, seed, `i`).
"""

from dataclasses import dataclass

from ..examples import QAExample
from ..relations import HELD_OUT, TRAIN
from ..synthetic import check_sizes, example_rng
from .base import Plan, write_document
from .changelog import ChangelogPlan
from .contract import ContractPlan
from .email import EmailPlan
from .faq import FaqPlan
from .manual import ManualPlan
from .minutes import MinutesPlan
from .report import ReportPlan

_ATTEMPTS = 8  # plans drawn per example before giving up (a plan fails when fixed words repeat its answer)


@dataclass(frozen=True)
class Genre:
    """A kind of document, on the training or the held-out side (`split`), written by its `plan` class."""

    name: str
    split: str
    plan: type[Plan]
    description: str


GENRES: dict[str, Genre] = {
    genre.name: genre
    for genre in [
        Genre("minutes", TRAIN, MinutesPlan, "a project board's minutes: attendees, agenda items, actions"),
        Genre("manual", TRAIN, ManualPlan, "a command's reference page: options with defaults, files, variables"),
        Genre("email", TRAIN, EmailPlan, "an e-mail thread: headers, greetings, quoted dates and attachments"),
        Genre("changelog", TRAIN, ChangelogPlan, "release notes: versions, dates, changed defaults and fixes"),
        Genre("contract", HELD_OUT, ContractPlan, "a services agreement: numbered clauses, days, amounts, parties"),
        Genre("report", HELD_OUT, ReportPlan, "a quarterly report: tables of sites, lists of figures, milestones"),
        Genre("faq", HELD_OUT, FaqPlan, "a service's frequently asked questions: prices, periods, contacts"),
    ]
}


def genres(split: str) -> list[Genre]:
    """The genres of `split` (`"train"` or `"heldout"`), in a fixed order."""
    return [genre for genre in GENRES.values() if genre.split == split]


def make_genre_examples(
    task: str, pool: list[Genre], tokenizer, length_tokens: int, n: int, seed: int = 0, unanswerable: bool = False
) -> list[QAExample]:
    """`n` documents cycling through the genres of `pool`, each asked its gold question (or, with `unanswerable`,
    its absent question: the same documents, since they depend on `task`, `seed` and the index only).

    Args:
        task (`str`): the task name the documents are drawn under (`"genres-heldout"`, ...).
        pool (`list[Genre]`): the genres, cycled through.
        tokenizer: the tokenizer whose tokens `length_tokens` counts.
        length_tokens (`int`): target context length in tokens.
        n (`int`): number of examples.
        seed (`int`, *optional*, defaults to 0): generator seed.
        unanswerable (`bool`, *optional*, defaults to `False`): ask each document about what it does not contain.

    Returns:
        `list[QAExample]`: `meta` names the genre, the fact kind and the phrasings used.
    """
    check_sizes(length_tokens, n)
    return [_example(task, pool, tokenizer, length_tokens, seed, i, unanswerable) for i in range(n)]


def make_genres(tokenizer, length_tokens: int, n: int, seed: int = 0) -> list[QAExample]:
    """Documents of the training genres (arguments as `make_genre_examples`)."""
    return make_genre_examples("genres", genres(TRAIN), tokenizer, length_tokens, n, seed)


def make_genres_heldout(tokenizer, length_tokens: int, n: int, seed: int = 0) -> list[QAExample]:
    """Documents of the held-out genres, which training never sees (arguments as `make_genre_examples`)."""
    return make_genre_examples("genres-heldout", genres(HELD_OUT), tokenizer, length_tokens, n, seed)


def make_genres_heldout_unanswerable(tokenizer, length_tokens: int, n: int, seed: int = 0) -> list[QAExample]:
    """The `genres-heldout` documents, each asked about a subject of its genre that it never names."""
    return make_genre_examples("genres-heldout", genres(HELD_OUT), tokenizer, length_tokens, n, seed, True)


def _one_genre(name: str):
    def make(tokenizer, length_tokens: int, n: int, seed: int = 0) -> list[QAExample]:
        return make_genre_examples(f"genres-heldout:{name}", [GENRES[name]], tokenizer, length_tokens, n, seed)

    make.__doc__ = f"Documents of the held-out genre {name!r} only (arguments as `make_genre_examples`)."
    return make


GENRE_TASKS = {
    "genres": make_genres,
    "genres-heldout": make_genres_heldout,
    "genres-heldout-unanswerable": make_genres_heldout_unanswerable,
    **{f"genres-heldout:{genre.name}": _one_genre(genre.name) for genre in genres(HELD_OUT)},
}
# Evaluation only: training refuses them (`lychee_hf.training.check_trainable`).
GENRE_HELD_OUT_TASKS = tuple(task for task in GENRE_TASKS if task != "genres")


def _example(task, pool, tokenizer, target, seed, index, unanswerable) -> QAExample:
    genre = pool[index % len(pool)]
    kinds = genre.plan.kinds
    kind = kinds[index // len(pool) % len(kinds)].name  # every kind of the genre in turn
    depth = example_rng(task, seed, index, "depth").random()
    for attempt in range(_ATTEMPTS):
        written = write_document(
            lambda attempt=attempt: genre.plan(example_rng(task, seed, index, f"document/{attempt}"), kind),
            tokenizer, target, depth,
        )  # fmt: skip
        if written is not None:
            break
    else:
        raise RuntimeError(f"no {genre.name} document of {task} #{index} in {_ATTEMPTS} plans keeps its answer unique")
    plan, gold = written.plan, written.plan.gold
    meta = {
        "seed": seed,
        "index": index,
        "target_tokens": target,
        "family": f"genre:{genre.name}",
        "genre": genre.name,
        "genre_split": genre.split,
        "topic": next(iter(plan.slots.values())),
        "kind": gold.kind,
        "subject": gold.subject,
        "fact_phrasing": gold.fact_phrasing,
        "question_phrasing": gold.question_phrasing,
        "section": written.section,
        "depth": written.span[0] / max(1, len(written.context)),
        "attempt": attempt,
    }
    example_id = f"{task}-{target}-s{seed}-{index}"
    if unanswerable:
        meta.update(unanswerable=True, absent=plan.absent_subject, question_phrasing=plan.absent_phrasing)
        name = task.replace(":", "-unanswerable:") if ":" in task else f"{task}-unanswerable"
        return QAExample(
            f"{example_id}-unanswerable", name, written.context, plan.absent_question, [], [], written.length_tokens,
            meta,
        )  # fmt: skip
    return QAExample(
        example_id, task, written.context, gold.question, [gold.answer], [written.span], written.length_tokens, meta
    )
