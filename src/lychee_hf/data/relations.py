"""The tables of the fact families: relations (a kind of fact, with several fact and question phrasings, each on
the training or the held-out side) and the families built from them (`FAMILIES`: single relations and two-hop
chains). `families.py` generates examples from them."""

import random
from collections.abc import Callable
from dataclasses import dataclass

from .vocabulary import GoldNameMaker

TRAIN, HELD_OUT = "train", "heldout"

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
