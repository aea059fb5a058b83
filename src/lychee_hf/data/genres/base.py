"""What every genre shares: the kinds of fact a genre states (`Kind`), the plan of one document (`Plan`: its topic,
its gold fact, its absent question and the values it may not repeat) and the writing of a plan into a context of a
target length in tokens (`write_document`).

A genre's document is built like a real one of its kind: a header, then sections of the same shape for as long as
the length asks, every section repeating the title or topic words and stating facts of the genre's kinds about
different subjects (other people, other amounts, other dates). One section holds the gold fact; the sentence (or
table row, or list item) stating it names another value of the answer's type too, so copying the wrong one is
wrong. The answer stands once in the document, verbatim; the absent question asks about a subject of the same
kinds that the document never names.
"""

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import count

from ..length_fit import FillerStream, Piece, Tail, fit_length
from . import words

_TRIES = 2000  # draws of a value before a plan gives up (a refused value is one containing the answer)


@dataclass(frozen=True)
class Kind:
    """A kind of fact a genre states again and again about different subjects, in several phrasings.

    Attributes:
        name (`str`): e.g. `"interim"` (who covers a role), unique within its genre.
        facts (`tuple[str, ...]`): fact templates; each states `{subject}` and `{answer}` verbatim and at least one
            other value of the answer's type (`{other}`), plus any slot of the document's topic or of `draw`.
        questions (`tuple[str, ...]`): question templates over the subject's slots and the document's topic slots.
        subjects (`tuple[dict[str, str], ...]`): what the questions ask about: the phrase `"subject"`, which every
            fact of the kind states verbatim, and any further slots the question templates use.
        draw (`Callable[[Plan, dict[str, str]], dict[str, str]]`): the values of one fact about a subject
            (`"answer"`, `"other"`, ...), drawn through the plan so that none repeats the document's answer.
    """

    name: str
    facts: tuple[str, ...]
    questions: tuple[str, ...]
    subjects: tuple[dict[str, str], ...]
    draw: Callable[["Plan", dict[str, str]], dict[str, str]]


def subjects(*phrases: str) -> tuple[dict[str, str], ...]:
    """Subjects that are a phrase only."""
    return tuple({"subject": phrase} for phrase in phrases)


def fill(template: str, slots: dict[str, str]) -> str:
    """`template` with its slots filled (as they are: a template starts with a capital or with a value that may
    not change case, such as a file name)."""
    return template.format(**slots)


@dataclass(frozen=True)
class Fact:
    """The gold fact of a document and the question that asks it."""

    kind: str
    subject: str
    answer: str
    text: str
    question: str
    fact_phrasing: str
    question_phrasing: str


class Plan:
    """One document of a genre being written, from one seeded `rng`.

    The constructor draws, in this order: the topic (`topic()`: the slots every section repeats), whatever else
    the genre draws once (`setup()`: a cast of people, a table layout), the gold fact (a kind, a subject and its
    values; its answer is refused to every later value), the absent subject and its question (refused to every
    later subject and value) and the closing sentences that top the document up to its length (`closing()`).
    Sections are drawn afterwards, one by one (`section(number, gold)`), each with new distractor facts
    (`fact(kind)`). What `topic` and `setup` draw is not checked against the answer: `write_document` rejects a
    document that states its answer twice.

    Subclasses set `kinds` and write `topic`, `header`, `section` and `closing` (`setup` and `state` optionally).

    Args:
        rng (`random.Random`): the only source of randomness: one seed, one document.
        kind (`str`, *optional*): the name of the gold fact's kind (default: drawn from `kinds`).
    """

    kinds: tuple[Kind, ...] = ()

    def __init__(self, rng: random.Random, kind: str | None = None):
        self.rng = rng
        self._refused: list[str] = []  # lower-cased texts no later value or subject may contain
        self._stated: dict[str, set[str]] = {}  # per kind: the subjects stated since the pool was last used up
        self._pools: dict[str, list[dict[str, str]]] = {}  # per kind: the subjects a distractor may have
        self.slots = self.topic()
        self.setup()
        self.gold = self._draw_gold(kind)
        self.absent_subject, self.absent_question, self.absent_phrasing = self._draw_absent()
        self.closing_sentences = self.closing()

    # What a genre writes.

    def topic(self) -> dict[str, str]:
        """The slots every section repeats; the first names the document's topic (an example's `meta["topic"]`)."""
        raise NotImplementedError

    def setup(self) -> None:
        """Draws what the whole document shares besides its topic (a cast of people, a table layout)."""

    def header(self) -> str:
        raise NotImplementedError

    def section(self, number: int, gold: bool) -> str:
        """Section `number` (from 1); `gold`: it states `self.gold.text` among its facts."""
        raise NotImplementedError

    def closing(self) -> list[str]:
        """Sentences without values that may end the document (cut at a word to hit its length)."""
        raise NotImplementedError

    def state(self, kind: Kind, phrasing: int, slots: dict[str, str]) -> str:
        """The text of a fact of `kind` in its `phrasing`-th template."""
        return fill(kind.facts[phrasing], slots)

    # Values: each drawn anew until it contains nothing refused.

    def fresh(self, make: Callable[[], str]) -> str:
        for _ in range(_TRIES):
            value = make()
            if self.allows(value):
                return value
        raise RuntimeError(f"no value in {_TRIES} draws avoids {self._refused}")

    def allows(self, text: str) -> bool:
        lowered = text.lower()
        return not any(refused in lowered for refused in self._refused)

    def two(self, make: Callable[[], str]) -> tuple[str, str]:
        """Two different values from `make`, neither containing the other."""
        first = self.fresh(make)
        for _ in range(_TRIES):
            second = self.fresh(make)
            if first.lower() not in second.lower() and second.lower() not in first.lower():
                return first, second
        raise RuntimeError(f"no second value in {_TRIES} draws differs from {first!r}")

    def choice(self, options: list[str]) -> str:
        return self.fresh(lambda: self.rng.choice(options))

    def person(self) -> str:
        return self.fresh(lambda: words.person(self.rng))

    def people(self) -> tuple[str, str]:
        return self.two(lambda: words.person(self.rng))

    def firm(self) -> str:
        return self.fresh(lambda: words.firm(self.rng))

    def dates(self, style: str = "long") -> tuple[str, str]:
        return self.two(lambda: words.date(self.rng, style))

    def date(self, style: str = "long") -> str:
        return self.fresh(lambda: words.date(self.rng, style))

    def amounts(self, low: int, high: int, currency: str = "£", step: int = 50) -> tuple[str, str]:
        return self.two(lambda: words.amount(self.rng, low, high, currency, step))

    def quantities(self, low: int, high: int, unit: str) -> tuple[str, str]:
        return self.two(lambda: words.quantity(self.rng, low, high, unit))

    def prices(self, low: int, high: int) -> tuple[str, str]:
        return self.two(lambda: words.price(self.rng, low, high))

    def percents(self) -> tuple[str, str]:
        return self.two(lambda: words.percent(self.rng))

    def files(self, stems: list[str], extensions: list[str], separator: str = "_") -> tuple[str, str]:
        return self.two(lambda: words.file_name(self.rng, stems, extensions, separator))

    # Facts.

    def fact(self, kind: Kind) -> str:
        """A distractor fact of `kind`: a subject not stated yet (never the gold or the absent one), new values."""
        return self.entry(kind)[1]

    def entry(self, kind: Kind, phrasing: int | None = None) -> tuple[dict[str, str], str]:
        """A distractor fact of `kind` (in its `phrasing`-th template, else a random one) and its subject's slots."""
        subject = self._subject(kind)
        slots = {**self.slots, **subject, **kind.draw(self, subject)}
        phrasing = self.rng.randrange(len(kind.facts)) if phrasing is None else phrasing
        return subject, self.state(kind, phrasing, slots)

    def gold_subject(self) -> dict[str, str]:
        """The slots of the gold fact's subject."""
        kind = next(kind for kind in self.kinds if kind.name == self.gold.kind)
        return next(subject for subject in kind.subjects if subject["subject"] == self.gold.subject)

    def _subject(self, kind: Kind) -> dict[str, str]:
        stated = self._stated.setdefault(kind.name, set())
        if kind.name not in self._pools:
            kept = self.gold.subject if kind.name == self.gold.kind else None
            self._pools[kind.name] = [s for s in kind.subjects if s["subject"] != kept and self.allows(s["subject"])]
        pool = self._pools[kind.name]
        fresh = [s for s in pool if s["subject"] not in stated]
        if not fresh:  # every subject stated once: a long document states them again, with new values
            stated.clear()
            fresh = pool
        subject = self.rng.choice(fresh)
        stated.add(subject["subject"])
        return subject

    def _draw_gold(self, name: str | None) -> Fact:
        kind = next(kind for kind in self.kinds if kind.name == name) if name else self.rng.choice(self.kinds)
        subject = self.rng.choice(kind.subjects)
        topic = " ".join(self.slots.values()).lower()
        for _ in range(_TRIES):
            values = kind.draw(self, subject)
            answer = values["answer"].lower()
            others = [value.lower() for value in values.values() if value != values["answer"]]
            if not any(answer in text for text in [*others, topic, subject["subject"].lower()]):
                break
        else:
            raise RuntimeError(f"no values of {kind.name} in {_TRIES} draws keep the answer unique")
        self._refused.append(answer)
        phrasing = self.rng.randrange(len(kind.facts))
        text = self.state(kind, phrasing, {**self.slots, **subject, **values})
        question = self.rng.choice(kind.questions)
        return Fact(
            kind.name, subject["subject"], values["answer"], text, fill(question, {**self.slots, **subject}),
            kind.facts[phrasing], question,
        )  # fmt: skip

    def _draw_absent(self) -> tuple[str, str, str]:
        stated = (self.gold.text + " " + " ".join(self.slots.values())).lower()
        kind = self.rng.choice(self.kinds)
        options = [s for s in kind.subjects if s["subject"] != self.gold.subject and s["subject"].lower() not in stated]
        subject = self.rng.choice(options)
        self._refused.append(subject["subject"].lower())
        question = self.rng.choice(kind.questions)
        return subject["subject"], fill(question, {**self.slots, **subject}), question


@dataclass(frozen=True)
class Written:
    """A plan written out: the context, its length in tokens, where the gold fact stands and in which section."""

    plan: Plan
    context: str
    length_tokens: int
    span: tuple[int, int]
    section: int


def write_document(make_plan: Callable[[], Plan], tokenizer, target: int, depth: float) -> Written | None:
    """Writes the plan `make_plan()` makes to about `target` tokens with its gold fact at relative `depth`.

    `make_plan` must make the same plan each time it is called: once to count the sections that fit, then to write
    the document with the gold section among them (again, a section earlier, if the gold section's extra length
    pushed it past the end).

    Returns:
        `Written`, or `None` when the fixed words of the document happen to repeat the answer or name the absent
        subject (the caller draws another plan).

    Raises:
        `ValueError`: if `target` is too short for the header and two sections.
    """
    plan = make_plan()
    probe = _SectionStream(tokenizer, _pieces(plan, None))
    sections = probe.count_within(target) - 1  # the first piece is the header
    if sections < 2:
        genre = type(plan).__name__.removesuffix("Plan").lower()
        raise ValueError(
            f"length_tokens={target} is too short for the {genre} genre: a header and two sections take "
            f"~{probe.prefix[3]} tokens"
        )
    gold_at = 1 + int(depth * (sections - 1))  # 1 .. sections - 1: the fit may drop the last section
    while True:
        plan = make_plan()
        stream = _SectionStream(tokenizer, _pieces(plan, gold_at))
        context, _, length = fit_length(tokenizer, target, stream, Tail(tokenizer, plan.closing_sentences), [])
        start = context.find(plan.gold.text)
        if start >= 0 or gold_at == 1:
            break
        gold_at -= 1  # the gold section, longer than the one it replaces, pushed itself past the end
    valid = (
        start >= 0
        and context.count(plan.gold.text) == 1
        and context.count(plan.gold.answer) == 1
        and plan.absent_subject.lower() not in context.lower()
    )
    if not valid:
        return None
    span = (start, start + len(plan.gold.text))
    return Written(plan, context, length, span, gold_at)


class _SectionStream(FillerStream):
    """A filler stream of whole sections, drawn a few at a time: a section costs tens of tokens to a few hundred,
    so the filler's batches of hundreds of sentences would draw far more document than the length needs."""

    def _grow_past(self, cost: float) -> None:
        while self.prefix[-1] <= cost:
            average = self.prefix[-1] / len(self.pieces) if self.pieces else 100.0
            self._grow(max(4, int((cost - self.prefix[-1]) / max(average, 1.0) * 1.1) + 2))


def _pieces(plan: Plan, gold_at: int | None) -> Iterator[Piece]:
    yield Piece(plan.header(), opens_paragraph=True)
    for number in count(1):
        yield Piece(plan.section(number, gold=number == gold_at), opens_paragraph=True)
