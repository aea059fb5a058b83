"""Fact families: single facts and two-hop chains of many kinds, each stated and asked in several phrasings, in
narrative filler with distractor facts about other entities.

The synthetic tasks (`synthetic.py`) state one fact one way ("The special magic number for X is N."); a model trained
on them can learn that phrasing instead of reading. Here every relation (a code, a pet's name, a hometown, a year,
a colour, ...) has several fact phrasings and question phrasings, and both families and phrasings are split by
name into a **training** and a **held-out** set:

* `facts` / `twohop`: training families in their training phrasings (what training reads);
* `facts-rephrased`: training families in their held-out phrasings (does a trained model read, or match strings?);
* `facts-heldout` / `twohop-heldout`: families training never sees, in every phrasing (the figures to quote).

An example is one question about one invented entity; the context holds its fact (or both facts of a chain) at
random depths, distractor facts of the same relations about other invented entities, and filler paragraphs mixing
the town chronicle (`narrative.py`) with the synthetic tasks' filler sentences. Every name the question or answer
uses is invented and appears nowhere else in the context, so the answer follows from the gold facts alone.
"""

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .examples import QAExample
from .narrative import chronicle_paragraph
from .synthetic import (
    FillerStream,
    Gold,
    GoldNameMaker,
    NameMaker,
    Piece,
    Tail,
    check_sizes,
    example_rng,
    filler_sentence,
    fit_length,
    tail_for,
)

TRAIN, HELD_OUT = "train", "heldout"
_DISTRACTORS = 3  # facts of the same relation(s) about other entities, per example

# Answer vocabularies: no word here occurs in the filler (chronicle or synthetic), so a copied filler word never
# matches an answer by accident.
_ANIMALS = ["goat", "parrot", "hound", "tortoise", "ferret", "donkey", "owl", "goose", "hare", "pony"]
_GARMENTS = ["scarf", "cloak", "hat", "waistcoat", "shawl", "apron", "coat", "bonnet"]
_COLOURS = ["crimson", "amber", "teal", "ochre", "scarlet", "indigo", "silver", "copper", "ivory", "maroon"]
_HERDS = ["sheep", "geese", "goats", "hens", "cows", "pigs", "ducks", "horses"]
_TRADES = [
    "lamplighter", "saddler", "cooper", "chandler", "wheelwright", "falconer", "locksmith", "apothecary",
    "thatcher", "tanner", "engraver", "fletcher",
]  # fmt: skip
_INSTRUMENTS = ["cello", "oboe", "harp", "lute", "flute", "bassoon", "viola", "zither", "trumpet", "fiddle"]
_BUILDINGS = ["watchtower", "tide mill", "covered market", "grain store", "toll house", "bell tower", "lock house"]
_VESSELS = ["boat", "barge", "sloop", "skiff", "ketch"]


@dataclass(frozen=True)
class Phrasing:
    """One way to state a fact or ask a question; `split` is `"train"` or `"heldout"`."""

    text: str
    split: str = TRAIN


@dataclass(frozen=True)
class Relation:
    """A kind of fact about a subject, with the slot (`answer_slot`) whose value answers its question.

    `facts` and `questions` are templates over slots (`{subject}`, `{value}` and relation-specific ones such as
    `{animal}`); `make_slots(rng, names)` draws fresh slot values for one fact.
    """

    name: str
    facts: tuple[Phrasing, ...]
    questions: tuple[Phrasing, ...]
    make_slots: Callable[[random.Random, GoldNameMaker], dict[str, str]]

    def phrasings(self, kind: str, split: str | None) -> list[Phrasing]:
        return in_split(self.facts if kind == "fact" else self.questions, split)


def in_split(phrasings: tuple[Phrasing, ...], split: str | None) -> list[Phrasing]:
    """The phrasings of `split` (`None`: all of them)."""
    return [p for p in phrasings if split is None or p.split == split]


@dataclass(frozen=True)
class Family:
    """A single relation (`hops == 1`) or a chain of two (`hops == 2`: the first relation's value is the second
    relation's subject, and `chain_question` asks for the second relation's value from the first's subject)."""

    name: str
    split: str
    relations: tuple[Relation, ...]
    chain_questions: tuple[Phrasing, ...] = ()

    @property
    def hops(self) -> int:
        return len(self.relations)


def _person(rng: random.Random, names: GoldNameMaker) -> str:
    return names.reserve(names.person)


def _code(rng: random.Random) -> str:
    return str(rng.randint(2000, 9999))  # 1700-1899 are the chronicle's years


def _relation(name, facts, questions, make_slots) -> Relation:
    return Relation(name, tuple(facts), tuple(questions), make_slots)


CODE = _relation(
    "code",
    [
        Phrasing("The code that opens the strongbox of {subject} is {value}."),
        Phrasing("To open the strongbox of {subject}, one had to enter the code {value}."),
        Phrasing("{subject} set the lock of the strongbox to the number {value}.", HELD_OUT),
    ],
    [
        Phrasing("What is the code that opens the strongbox of {subject}?"),
        Phrasing("Which code opens the strongbox of {subject}?"),
        Phrasing("What number unlocks the strongbox of {subject}?", HELD_OUT),
    ],
    lambda rng, names: {"subject": _person(rng, names), "value": _code(rng)},
)
PET = _relation(
    "pet",
    [
        Phrasing("{subject} had a {animal} named {value}."),
        Phrasing("The {animal} that belonged to {subject} was called {value}."),
        Phrasing("Everyone knew {value}, the {animal} of {subject}.", HELD_OUT),
    ],
    [
        Phrasing("What was the name of the {animal} of {subject}?"),
        Phrasing("What was the {animal} of {subject} called?"),
        Phrasing("What did {subject} call the {animal}?", HELD_OUT),
    ],
    lambda rng, names: {
        "subject": _person(rng, names),
        "animal": rng.choice(_ANIMALS),
        "value": names.reserve(names.word),
    },
)
HOMETOWN = _relation(
    "hometown",
    [
        Phrasing("{subject} grew up in {value}."),
        Phrasing("{subject} spent a whole childhood in the town of {value}."),
        Phrasing("{value} was the town where {subject} grew up.", HELD_OUT),
    ],
    [
        Phrasing("Where did {subject} grow up?"),
        Phrasing("In which town did {subject} grow up?"),
        Phrasing("Which town was the childhood home of {subject}?", HELD_OUT),
    ],
    lambda rng, names: {"subject": _person(rng, names), "value": names.reserve(names.city)},
)
YEAR_BUILT = _relation(
    "year_built",
    [
        Phrasing("The {building} of {subject} was finished in {value}."),
        Phrasing("Work on the {building} of {subject} ended in the year {value}."),
        Phrasing("In {value}, the builders completed the {building} of {subject}.", HELD_OUT),
    ],
    [
        Phrasing("In which year was the {building} of {subject} finished?"),
        Phrasing("When was the {building} of {subject} completed?"),
        Phrasing("What year did work on the {building} of {subject} end?", HELD_OUT),
    ],
    lambda rng, names: {
        "subject": names.reserve(names.city),
        "building": rng.choice(_BUILDINGS),
        "value": str(rng.randint(1500, 1699)),
    },
)
PROFESSION = _relation(
    "profession",
    [
        Phrasing("{subject} worked as a {value}."),
        Phrasing("By trade, {subject} was a {value}."),
        Phrasing("{subject} earned a living as a {value}.", HELD_OUT),
    ],
    [
        Phrasing("What was the profession of {subject}?"),
        Phrasing("What did {subject} do for a living?"),
        Phrasing("Which trade did {subject} follow?", HELD_OUT),
    ],
    lambda rng, names: {"subject": _person(rng, names), "value": rng.choice(_TRADES)},
)
OWNER = _relation(
    "owner",
    [
        Phrasing("The {vessel} called {subject} belonged to {value}."),
        Phrasing("{value} owned the {vessel} called {subject}."),
        Phrasing("The owner of the {vessel} called {subject} was {value}.", HELD_OUT),
    ],
    [
        Phrasing("Who owned the {vessel} called {subject}?"),
        Phrasing("To whom did the {vessel} called {subject} belong?"),
        Phrasing("Whose {vessel} was the one called {subject}?", HELD_OUT),
    ],
    lambda rng, names: {
        "subject": names.reserve(names.word),
        "vessel": rng.choice(_VESSELS),
        "value": _person(rng, names),
    },
)
COLOUR = _relation(
    "colour",
    [
        Phrasing("{subject} always wore a {value} {garment}."),
        Phrasing("The {garment} that {subject} wore was {value}."),
        Phrasing("{subject} was known around town for a {value} {garment}."),
    ],
    [
        Phrasing("What colour was the {garment} of {subject}?"),
        Phrasing("Which colour was the {garment} that {subject} wore?"),
    ],
    lambda rng, names: {
        "subject": _person(rng, names),
        "garment": rng.choice(_GARMENTS),
        "value": rng.choice(_COLOURS),
    },
)
HERD = _relation(
    "herd_size",
    [
        Phrasing("{subject} kept {value} {herd} on the farm."),
        Phrasing("On the farm of {subject} there were {value} {herd}."),
    ],
    [
        Phrasing("How many {herd} did {subject} keep?"),
        Phrasing("How many {herd} were there on the farm of {subject}?"),
    ],
    lambda rng, names: {"subject": _person(rng, names), "herd": rng.choice(_HERDS), "value": str(rng.randint(12, 97))},
)
SPOUSE = _relation(
    "spouse",
    [
        Phrasing("{subject} married {value}."),
        Phrasing("{subject} was married to {value}."),
        Phrasing("{value} and {subject} were wed in the spring."),
    ],
    [
        Phrasing("Who did {subject} marry?"),
        Phrasing("Who was {subject} married to?"),
    ],
    lambda rng, names: {"subject": _person(rng, names), "value": _person(rng, names)},
)
INSTRUMENT = _relation(
    "instrument",
    [
        Phrasing("{subject} played the {value}."),
        Phrasing("In the evenings, {subject} practised the {value}."),
    ],
    [
        Phrasing("Which instrument did {subject} play?"),
        Phrasing("What instrument did {subject} practise?"),
    ],
    lambda rng, names: {"subject": _person(rng, names), "value": rng.choice(_INSTRUMENTS)},
)
BIRTHPLACE = _relation(
    "birthplace",
    [
        Phrasing("{subject} was born in {value}."),
        Phrasing("The birthplace of {subject} was {value}."),
        Phrasing("{subject} came into the world in {value}.", HELD_OUT),
    ],
    [Phrasing("Where was {subject} born?")],
    lambda rng, names: {"subject": _person(rng, names), "value": names.reserve(names.city)},
)
COUNTRY = _relation(
    "country",
    [
        Phrasing("{subject} lies in {value}."),
        Phrasing("The town of {subject} is part of {value}."),
        Phrasing("{subject} belongs to the country of {value}.", HELD_OUT),
    ],
    [Phrasing("In which country is {subject}?")],
    lambda rng, names: {"subject": names.reserve(names.city), "value": names.reserve(names.country)},
)
AUTHOR = _relation(
    "author",
    [
        Phrasing("The book {subject} was written by {value}."),
        Phrasing("{value} wrote the book {subject}."),
    ],
    [Phrasing("Who wrote the book {subject}?")],
    lambda rng, names: {"subject": names.reserve(names.word), "value": _person(rng, names)},
)
BIRTH_YEAR = _relation(
    "birth_year",
    [
        Phrasing("{subject} was born in the year {value}."),
        Phrasing("The year {subject} was born was {value}."),
    ],
    [Phrasing("In which year was {subject} born?")],
    lambda rng, names: {"subject": _person(rng, names), "value": str(rng.randint(1500, 1699))},
)

FAMILIES: dict[str, Family] = {
    family.name: family
    for family in [
        Family("code", TRAIN, (CODE,)),
        Family("pet", TRAIN, (PET,)),
        Family("hometown", TRAIN, (HOMETOWN,)),
        Family("year_built", TRAIN, (YEAR_BUILT,)),
        Family("profession", TRAIN, (PROFESSION,)),
        Family("owner", TRAIN, (OWNER,)),
        Family("colour", HELD_OUT, (COLOUR,)),
        Family("herd_size", HELD_OUT, (HERD,)),
        Family("spouse", HELD_OUT, (SPOUSE,)),
        Family("instrument", HELD_OUT, (INSTRUMENT,)),
        Family(
            "birthplace_country",
            TRAIN,
            (BIRTHPLACE, COUNTRY),
            (
                Phrasing("In which country was {subject} born?"),
                Phrasing("{subject} was born in a town of which country?", HELD_OUT),
            ),
        ),
        Family(
            "owner_profession",
            TRAIN,
            (OWNER, PROFESSION),
            (
                Phrasing("What was the profession of the owner of the {vessel} called {subject}?"),
                Phrasing("What did the owner of the {vessel} called {subject} do for a living?", HELD_OUT),
            ),
        ),
        Family(
            "owner_hometown",
            TRAIN,
            (OWNER, HOMETOWN),
            (
                Phrasing("Where did the owner of the {vessel} called {subject} grow up?"),
                Phrasing("In which town did the owner of the {vessel} called {subject} grow up?", HELD_OUT),
            ),
        ),
        Family(
            "author_birth_year",
            HELD_OUT,
            (AUTHOR, BIRTH_YEAR),
            (
                Phrasing("In which year was the author of the book {subject} born?"),
                Phrasing("When was the writer of the book {subject} born?"),
            ),
        ),
        Family(
            "spouse_instrument",
            HELD_OUT,
            (SPOUSE, INSTRUMENT),
            (
                Phrasing("Which instrument did the spouse of {subject} play?"),
                Phrasing("What did the person {subject} married play?"),
            ),
        ),
    ]
}


def families(hops: int, split: str) -> list[Family]:
    """The families with `hops` relations in `split` (`"train"` or `"heldout"`), in a fixed order."""
    return [family for family in FAMILIES.values() if family.hops == hops and family.split == split]


def make_facts(tokenizer, length_tokens: int, n: int, seed: int = 0) -> list[QAExample]:
    """Single-fact questions from the training families, in their training phrasings.

    Args:
        tokenizer: the tokenizer whose tokens `length_tokens` counts.
        length_tokens (`int`): target context length in tokens.
        n (`int`): number of examples, cycling through the families.
        seed (`int`, *optional*, defaults to 0): example `i` depends only on (`seed`, `i`), not on `n`.

    Returns:
        `list[QAExample]`: `n` examples; `meta` names the family and the phrasings used.
    """
    return _make("facts", families(1, TRAIN), TRAIN, tokenizer, length_tokens, n, seed)


def make_facts_rephrased(tokenizer, length_tokens: int, n: int, seed: int = 0) -> list[QAExample]:
    """Single-fact questions from the training families in their held-out phrasings (arguments as `make_facts`)."""
    rephrasable = [f for f in families(1, TRAIN) if f.relations[0].phrasings("fact", HELD_OUT)]
    return _make("facts-rephrased", rephrasable, HELD_OUT, tokenizer, length_tokens, n, seed)


def make_facts_heldout(tokenizer, length_tokens: int, n: int, seed: int = 0) -> list[QAExample]:
    """Single-fact questions from the held-out families, every phrasing (arguments as `make_facts`)."""
    return _make("facts-heldout", families(1, HELD_OUT), None, tokenizer, length_tokens, n, seed)


def make_twohop(tokenizer, length_tokens: int, n: int, seed: int = 0) -> list[QAExample]:
    """Two-hop questions from the training chains, in their training phrasings (arguments as `make_facts`)."""
    return _make("twohop", families(2, TRAIN), TRAIN, tokenizer, length_tokens, n, seed)


def make_twohop_heldout(tokenizer, length_tokens: int, n: int, seed: int = 0) -> list[QAExample]:
    """Two-hop questions from the held-out chains, every phrasing (arguments as `make_facts`)."""
    return _make("twohop-heldout", families(2, HELD_OUT), None, tokenizer, length_tokens, n, seed)


# Tasks built from held-out families or phrasings: evaluation only. Every held-out accuracy claim rests on no
# training run ever seeing them, so the training entry points refuse them (`lychee_hf.training.check_trainable`).
HELD_OUT_TASKS = ("facts-rephrased", "facts-heldout", "twohop-heldout")

FAMILY_TASKS = {
    "facts": make_facts,
    "facts-rephrased": make_facts_rephrased,
    "facts-heldout": make_facts_heldout,
    "twohop": make_twohop,
    "twohop-heldout": make_twohop_heldout,
}


def _make(task, pool, split, tokenizer, length_tokens, n, seed) -> list[QAExample]:
    check_sizes(length_tokens, n)
    return [_example(task, pool[index % len(pool)], split, tokenizer, length_tokens, seed, index) for index in range(n)]


@dataclass
class _Chain:
    """The slot values of one family instance: one dict per relation, linked (a relation's value is the next one's
    subject)."""

    slots: list[dict[str, str]]

    @property
    def answer(self) -> str:
        return self.slots[-1]["value"]


def _draw_chain(family: Family, rng: random.Random, names: GoldNameMaker) -> _Chain:
    slots = []
    for relation in family.relations:
        drawn = relation.make_slots(rng, names)
        if slots:
            drawn["subject"] = slots[-1]["value"]  # the link: the bridge entity
        slots.append(drawn)
    return _Chain(slots)


def _state(relation: Relation, slots: dict[str, str], rng: random.Random, split: str | None) -> tuple[str, str]:
    phrasing = rng.choice(relation.phrasings("fact", split))
    return _capitalised(phrasing.text.format(**slots)), phrasing.text


def _ask(family: Family, chain: _Chain, rng: random.Random, split: str | None) -> tuple[str, str]:
    if family.hops == 1:
        pool = family.relations[0].phrasings("question", split)
        slots = chain.slots[0]
    else:
        pool = in_split(family.chain_questions, split)
        slots = {**chain.slots[1], **chain.slots[0]}  # the first hop's subject and its own slots name the entity
    phrasing = rng.choice(pool)
    return _capitalised(phrasing.text.format(**slots)), phrasing.text


def _capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


def _narrative_filler(rng: random.Random, names: NameMaker) -> Iterator[Piece]:
    """Paragraphs alternating at random between the town chronicle and the synthetic filler sentences."""
    while True:
        if rng.random() < 0.5:
            sentences = _sentences(chronicle_paragraph(rng))
        else:
            sentences = [filler_sentence(rng, names) for _ in range(rng.randint(3, 6))]
        for number, sentence in enumerate(sentences):
            yield Piece(sentence, opens_paragraph=number == 0)


def _sentences(paragraph: str) -> list[str]:
    parts = [part.strip() for part in paragraph.replace(". ", ".\n").split("\n")]
    return [part for part in parts if part]


def _example(task, family, split, tokenizer, target, seed, index) -> QAExample:
    rng = example_rng(task, seed, index)
    gold_names = GoldNameMaker(rng)
    chain = _draw_chain(family, rng, gold_names)
    distractors = [_draw_chain(family, rng, gold_names) for _ in range(_DISTRACTORS)]
    gold_facts = [_state(relation, slots, rng, split) for relation, slots in zip(family.relations, chain.slots)]
    golds = [Gold(Piece(text), rng.random()) for text, _ in gold_facts]
    for other in distractors:
        golds += [
            Gold(Piece(_state(relation, slots, rng, split)[0]), rng.random())
            for relation, slots in zip(family.relations, other.slots)
        ]
    question, question_template = _ask(family, chain, rng, split)
    filler_rng = example_rng(task, seed, index, "filler")
    names = NameMaker(filler_rng, forbidden=gold_names.forbidden)
    stream = FillerStream(tokenizer, _narrative_filler(filler_rng, names))
    tail = Tail(tokenizer, tail_for(filler_rng, names))
    context, spans, length = fit_length(tokenizer, target, stream, tail, golds)
    return QAExample(
        id=f"{task}-{target}-s{seed}-{index}",
        task=task,
        context=context,
        question=question,
        answers=[chain.answer],
        supporting=sorted(spans[: family.hops]),
        length_tokens=length,
        meta={
            "seed": seed,
            "index": index,
            "target_tokens": target,
            "family": family.name,
            "family_split": family.split,
            "hops": family.hops,
            "fact_phrasings": [template for _, template in gold_facts],
            "question_phrasing": question_template,
            "depths": [gold.depth for gold in golds[: family.hops]],
        },
    )
