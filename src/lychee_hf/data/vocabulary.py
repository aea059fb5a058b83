"""The words generated contexts are made of: English words and sentence templates for filler, the templates of
the `mhqa` facts, syllables for invented names (`NameMaker`, and `GoldNameMaker` for names that appear nowhere
else), and the filler sentences and paragraphs built from them."""

import random
import string
from collections.abc import Callable, Iterator, Sequence

from .length_fit import Piece

_ADJECTIVES = [
    "quiet", "narrow", "ancient", "bright", "hollow", "gentle", "crooked", "dusty", "patient", "restless",
    "faded", "steep", "modest", "curious", "heavy", "distant", "tidy", "weathered", "stubborn", "cheerful",
    "drowsy", "polished", "brittle", "sturdy", "humble", "peculiar", "spacious", "careful", "muddy", "noisy",
]  # fmt: skip
_NOUNS = [
    "lantern", "orchard", "bridge", "harbor", "meadow", "workshop", "ledger", "carriage", "fountain", "library",
    "kettle", "garden", "chapel", "staircase", "market", "tapestry", "windmill", "ferry", "quarry", "archive",
    "cottage", "barn", "clock tower", "courtyard", "granary", "boathouse", "bakery", "well", "gate", "footpath",
]  # fmt: skip
_JOBS = [
    "weaver", "potter", "carpenter", "ferryman", "baker", "clockmaker", "cartographer", "glassblower", "beekeeper",
    "blacksmith", "shepherd", "bookbinder", "stonemason", "tailor", "miller", "innkeeper", "scribe", "gardener",
]  # fmt: skip
_TIMES = ["spring", "summer", "autumn", "winter", "evening", "morning", "harvest", "rainy season", "long night"]
_COLORS = ["pale green", "deep blue", "rusty red", "soft yellow", "dark grey", "bright orange", "faint violet"]
_HOBBIES = [
    "chess", "sailing", "old maps", "folk songs", "pressed flowers", "riddles", "kite flying", "bird watching",
    "wood carving", "long walks", "card games", "astronomy",
]  # fmt: skip

_FILLER_TEMPLATES = [
    "The {adj} {noun} near the {noun2} stayed {adj2} for most of the {time}.",
    "{person} spent the {time} repairing an old {noun} beside the {noun2}.",
    "Visitors to {place} often remark on the {adj} {noun} and the {adj2} {noun2}.",
    "Every {time}, the people of {place} gather around the {noun} to trade stories.",
    "{person} kept a {adj} {noun} on the shelf above the {noun2}.",
    "A {adj} wind crossed the {noun} and rattled the shutters of the {noun2}.",
    "Nobody in {place} could explain why the {noun} had turned so {adj}.",
    "{person} and {person2} argued at length about the {adj} {noun}.",
    "The road from {place} to {place2} passes a {adj} {noun} and a {adj2} {noun2}.",
    "Late in the {time}, {person} painted the {noun} a {color} shade.",
    "Some say the {noun} in {place} was built by a {adj} {job}.",
    "{person} once sold a {adj} {noun} to a {job} from {place}.",
    "The {job} of {place} rarely speaks about the {adj} {noun}.",
    "After the {time} rains, the {noun} behind the {noun2} looked {adj} again.",
    "{person} wrote a long letter about {hobby} and the {adj} {noun}.",
    "Children in {place} like to race from the {noun} to the {noun2}.",
    "Nothing about the {adj} {noun} surprised {person} anymore.",
    "In the {time}, the {noun} is {adj} and the {noun2} is {adj2}.",
]
PERSON_BIOS = [
    "{name} worked as a {job} for many years.",
    "{name} was fond of {hobby}.",
    "{name} later became a respected {job}.",
    "Friends remember {name} as {adj} and {adj2}.",
    "{name} kept a {adj} {noun} in the kitchen.",
    "{name} rarely missed a chance to talk about {hobby}.",
]
PLACE_BIOS = [
    "{name} is known for its {adj} {noun}.",
    "{name} sits beside a {adj} river.",
    "The streets of {name} are lined with {adj} trees.",
    "{name} holds a small festival every {time}.",
    "Most houses in {name} are painted {color}.",
    "Travellers describe {name} as {adj} but {adj2}.",
]
BORN_TEMPLATE = "{person} was born in {city}."
CAPITAL_TEMPLATE = "{city} is the capital of {country}."

_SYLLABLES = [
    "ka", "ro", "vel", "mi", "dor", "tha", "lun", "bre", "zan", "ko", "shi", "vor", "ne", "gal", "tri", "os", "fen",
    "ra", "qui", "lo", "mar", "de", "sul", "ba", "nor", "ith", "ve", "cor", "pa", "zel", "du", "hal", "ty", "wen",
    "gri", "em", "sa", "tor", "yl", "qua", "ser", "ob", "li", "ash", "rin", "mo", "kev", "ul",
]  # fmt: skip
_CITY_SUFFIXES = ["", "mora", "vale", "dun", "heim", "stead", "ford", "ora", "wick", "ton"]
_COUNTRY_SUFFIXES = ["ia", "land", "ar", "istan", "onia", "esh", "ovia", "eth"]

# Every fixed word a context may contain besides invented names: a gold name inside it would not be unique.
_FIXED_TEXT = " ".join(
    [
        *_ADJECTIVES, *_NOUNS, *_JOBS, *_TIMES, *_COLORS, *_HOBBIES, *_FILLER_TEMPLATES, *PERSON_BIOS, *PLACE_BIOS,
        BORN_TEMPLATE, CAPITAL_TEMPLATE, "Document",
    ]
).lower()  # fmt: skip


class NameMaker:
    """Invented names from syllables, avoiding the forbidden words (reserved for gold entities) inside any name."""

    def __init__(self, rng: random.Random, forbidden: Sequence[str] = ()):
        self.rng = rng
        self.forbidden = list(forbidden)
        self.used: set[str] = set()

    def word(self, min_syllables: int = 2, max_syllables: int = 3, suffixes: Sequence[str] = ("",)) -> str:
        while True:
            count = self.rng.randint(min_syllables, max_syllables)
            syllables = "".join(self.rng.choice(_SYLLABLES) for _ in range(count))
            candidate = (syllables + self.rng.choice(suffixes)).capitalize()
            if self.allowed(candidate):
                return candidate

    def allowed(self, candidate: str) -> bool:
        lowered = candidate.lower()
        return not any(word.lower() in lowered for word in self.forbidden)

    def person(self) -> str:
        return f"{self.word()} {self.word()}"

    def city(self) -> str:
        return self.word(2, 3, _CITY_SUFFIXES)

    def country(self) -> str:
        return self.word(1, 2, _COUNTRY_SUFFIXES)

    def unique(self, make: Callable[[], str]) -> str:
        """A fresh name from `make`, never returned before by `unique` (one birthplace per person, etc.)."""
        while True:
            name = make()
            if name not in self.used:
                self.used.add(name)
                return name


class GoldNameMaker(NameMaker):
    """Names that are no substring of the fixed vocabulary nor of (nor containing) each other."""

    def allowed(self, candidate: str) -> bool:
        lowered = candidate.lower()
        if lowered in _FIXED_TEXT:
            return False
        return not any(word.lower() in lowered or lowered in word.lower() for word in self.forbidden)

    def reserve(self, make: Callable[[], str]) -> str:
        name = make()
        self.forbidden.extend(name.split())
        return name


def _fill_template(template: str, rng: random.Random, names: NameMaker, **fixed: str) -> str:
    slots = {
        "adj": lambda: rng.choice(_ADJECTIVES),
        "adj2": lambda: rng.choice(_ADJECTIVES),
        "noun": lambda: rng.choice(_NOUNS),
        "noun2": lambda: rng.choice(_NOUNS),
        "job": lambda: rng.choice(_JOBS),
        "time": lambda: rng.choice(_TIMES),
        "color": lambda: rng.choice(_COLORS),
        "hobby": lambda: rng.choice(_HOBBIES),
        "person": names.person,
        "person2": names.person,
        "place": names.city,
        "place2": names.city,
    }
    wanted = [name for _, name, _, _ in string.Formatter().parse(template) if name]
    values = {name: fixed[name] if name in fixed else slots[name]() for name in wanted}
    return template.format(**values)


def filler_sentence(rng: random.Random, names: NameMaker) -> str:
    return _fill_template(rng.choice(_FILLER_TEMPLATES), rng, names)


def titled_filler_sentence(rng: random.Random, names: NameMaker) -> tuple[str, str]:
    """An invented person or place and a filler sentence about them, to open a plain filler document."""
    slot, title = ("person", names.person()) if rng.random() < 0.5 else ("place", names.city())
    templates = [template for template in _FILLER_TEMPLATES if "{" + slot + "}" in template]
    return title, _fill_template(rng.choice(templates), rng, names, **{slot: title})


def bio_sentences(rng: random.Random, names: NameMaker, templates: list[str], name: str, count: int) -> list[str]:
    return [_fill_template(template, rng, names, name=name) for template in rng.sample(templates, count)]


def tail_for(rng: random.Random, names: NameMaker) -> list[str]:
    # Enough words to bridge the largest gap between two filler pieces (a document header and its first sentence).
    return [filler_sentence(rng, names) for _ in range(6)]


def plain_filler(rng: random.Random, names: NameMaker) -> Iterator[Piece]:
    """Filler sentences in paragraphs of 3 to 7, without digits, hyphens or all-capital words."""
    while True:
        for number in range(rng.randint(3, 7)):
            yield Piece(filler_sentence(rng, names), opens_paragraph=number == 0)
