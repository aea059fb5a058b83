"""Synthetic long-context QA tasks, generated offline and seeded, at a target length in tokens of a given tokenizer.

Three tasks, after RULER:

* `mhqa`: two-hop questions over invented people, cities and countries ("X was born in Y." + "Y is the capital of
  Z." -> "In which country was X born?"), the two gold documents hidden among distractor documents built from the
  same templates with other entities.
* `niah`: needle(s) "The special magic number for {key} is {number}." in varied filler sentences.
* `vt`: variable tracking, chains "VAR A = 12345." -> "VAR B = VAR A." hidden in filler, with distractor chains.

Every example records the character spans of its gold facts (`supporting`), so that the chunks holding them can be
found for any tokenizer and chunk size (`spans.supporting_chunks`).

The length is hit without re-tokenizing the whole context repeatedly: filler pieces are tokenized one by one (in
batches) to estimate their cost, the context is assembled and tokenized once, and the measured error rescales the
estimate for at most two more assemblies. A last filler sentence cut at a word boundary gives word-level precision.
"""

import bisect
import random
import string
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from .examples import QAExample
from .spans import token_ids

# At most this many tokenizations of a whole context per example.
_MAX_FULL_TOKENIZATIONS = 3
_FILLER_BATCH = 256


def make_mhqa(tokenizer, length_tokens: int, n: int, seed: int = 0) -> list[QAExample]:
    """Two-hop questions ("In which country was X born?") over invented entities, RULER-HQA style.

    The context is a list of "Document i:" paragraphs (title line, then text). Two are gold: "X was born in Y." and
    "Y is the capital of Z.", at random depths. The others are distractors from the same templates about other
    people, cities and countries, and plain filler about invented people and places. X, Y and Z appear nowhere but
    in the gold documents, so the answer follows from them alone and nothing contradicts them.

    Args:
        tokenizer: the tokenizer whose tokens `length_tokens` counts.
        length_tokens (`int`): target context length in tokens.
        n (`int`): number of examples.
        seed (`int`, *optional*, defaults to 0): example `i` depends only on (`seed`, `i`), not on `n`.

    Returns:
        `list[QAExample]`: `n` examples; `supporting` holds the spans of the two gold documents.
    """
    check_sizes(length_tokens, n)
    return [_mhqa_example(tokenizer, length_tokens, seed, index) for index in range(n)]


def make_niah(
    tokenizer, length_tokens: int, n: int, seed: int = 0, num_keys: int = 1, depth: float | None = None
) -> list[QAExample]:
    """Needle in a haystack: "The special magic number for {key} is {7 digits}." hidden in filler sentences.

    Args:
        tokenizer: the tokenizer whose tokens `length_tokens` counts.
        length_tokens (`int`): target context length in tokens.
        n (`int`): number of examples.
        seed (`int`, *optional*, defaults to 0): example `i` depends only on (`seed`, `i`), not on `n`.
        num_keys (`int`, *optional*, defaults to 1): needles per context, each with its own key and number; one is
            asked, the others are distractors.
        depth (`float`, *optional*): relative position in [0, 1] of the asked needle; random per example if `None`.

    Returns:
        `list[QAExample]`: `n` examples; `supporting` holds the span of the asked needle only.
    """
    check_sizes(length_tokens, n)
    if num_keys < 1:
        raise ValueError(f"num_keys must be at least 1, got {num_keys}")
    if depth is not None and not 0.0 <= depth <= 1.0:
        raise ValueError(f"depth must lie in [0, 1], got {depth}")
    return [_niah_example(tokenizer, length_tokens, seed, index, num_keys, depth) for index in range(n)]


def make_vt(tokenizer, length_tokens: int, n: int, seed: int = 0, hops: int = 2) -> list[QAExample]:
    """Variable tracking: which variables end up holding a value through a chain of assignments.

    The asked chain "VAR A = 12345." "VAR B = VAR A." ... (`hops` assignments after the first) and distractor
    chains with other values are interleaved, each in its own order, at random positions in filler sentences.

    Args:
        tokenizer: the tokenizer whose tokens `length_tokens` counts.
        length_tokens (`int`): target context length in tokens.
        n (`int`): number of examples.
        seed (`int`, *optional*, defaults to 0): example `i` depends only on (`seed`, `i`), not on `n`.
        hops (`int`, *optional*, defaults to 2): chain length minus one.

    Returns:
        `list[QAExample]`: `n` examples; the answer is the chain's variable names in order, joined by ", ";
        `supporting` holds the span of every statement of the asked chain.
    """
    check_sizes(length_tokens, n)
    if hops < 0:
        raise ValueError(f"hops must be non-negative, got {hops}")
    return [_vt_example(tokenizer, length_tokens, seed, index, hops) for index in range(n)]


SYNTHETIC_TASKS = {"mhqa": make_mhqa, "niah": make_niah, "vt": make_vt}


def check_sizes(length_tokens: int, n: int) -> None:
    if length_tokens < 1:
        raise ValueError(f"length_tokens must be positive, got {length_tokens}")
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")


def example_rng(task: str, seed: int, index: int, stream: str = "") -> random.Random:
    # String seeds are hashed with SHA-512 by `random`, so they are stable across processes and Python versions.
    return random.Random(f"lychee-eval/{task}/{seed}/{index}/{stream}")


# ---------------------------------------------------------------------------------------------------------------
# Vocabulary: English words for filler, syllables for invented names.
# ---------------------------------------------------------------------------------------------------------------

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
_PERSON_BIOS = [
    "{name} worked as a {job} for many years.",
    "{name} was fond of {hobby}.",
    "{name} later became a respected {job}.",
    "Friends remember {name} as {adj} and {adj2}.",
    "{name} kept a {adj} {noun} in the kitchen.",
    "{name} rarely missed a chance to talk about {hobby}.",
]
_PLACE_BIOS = [
    "{name} is known for its {adj} {noun}.",
    "{name} sits beside a {adj} river.",
    "The streets of {name} are lined with {adj} trees.",
    "{name} holds a small festival every {time}.",
    "Most houses in {name} are painted {color}.",
    "Travellers describe {name} as {adj} but {adj2}.",
]
_BORN_TEMPLATE = "{person} was born in {city}."
_CAPITAL_TEMPLATE = "{city} is the capital of {country}."
_MHQA_QUESTION = "In which country was {person} born?"
_NEEDLE_TEMPLATE = "The special magic number for {key} is {number}."
_NIAH_QUESTION = "What is the special magic number for {key}?"
_VT_QUESTION = "Which variables are assigned the value {value}? List all of them."
_KEY_COLORS = [
    "amber", "crimson", "ivory", "olive", "scarlet", "teal", "cobalt", "indigo", "coral", "saffron", "jade", "ochre",
]  # fmt: skip
_KEY_ANIMALS = [
    "falcon", "otter", "heron", "lynx", "badger", "walrus", "gecko", "marten", "ibis", "bison", "newt", "osprey",
]  # fmt: skip

_SYLLABLES = [
    "ka", "ro", "vel", "mi", "dor", "tha", "lun", "bre", "zan", "ko", "shi", "vor", "ne", "gal", "tri", "os", "fen",
    "ra", "qui", "lo", "mar", "de", "sul", "ba", "nor", "ith", "ve", "cor", "pa", "zel", "du", "hal", "ty", "wen",
    "gri", "em", "sa", "tor", "yl", "qua", "ser", "ob", "li", "ash", "rin", "mo", "kev", "ul",
]  # fmt: skip
_CITY_SUFFIXES = ["", "mora", "vale", "dun", "heim", "stead", "ford", "ora", "wick", "ton"]
_COUNTRY_SUFFIXES = ["ia", "land", "ar", "istan", "onia", "esh", "ovia", "eth"]
_VT_DISTRACTOR_CHAINS = 2

# Every fixed word a context may contain besides invented names: a gold name inside it would not be unique.
_FIXED_TEXT = " ".join(
    [
        *_ADJECTIVES, *_NOUNS, *_JOBS, *_TIMES, *_COLORS, *_HOBBIES, *_FILLER_TEMPLATES, *_PERSON_BIOS, *_PLACE_BIOS,
        _BORN_TEMPLATE, _CAPITAL_TEMPLATE, "Document",
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


def _titled_filler_sentence(rng: random.Random, names: NameMaker) -> tuple[str, str]:
    """An invented person or place and a filler sentence about them, to open a plain filler document."""
    slot, title = ("person", names.person()) if rng.random() < 0.5 else ("place", names.city())
    templates = [template for template in _FILLER_TEMPLATES if "{" + slot + "}" in template]
    return title, _fill_template(rng.choice(templates), rng, names, **{slot: title})


def _bio_sentences(rng: random.Random, names: NameMaker, templates: list[str], name: str, count: int) -> list[str]:
    return [_fill_template(template, rng, names, name=name) for template in rng.sample(templates, count)]


# ---------------------------------------------------------------------------------------------------------------
# Assembly to a target length.
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Piece:
    """A sentence of the context, or the start of a paragraph (a "Document i:" one when it has a title)."""

    text: str
    opens_paragraph: bool = False
    title: str | None = None


def _separator(piece: Piece, first: bool) -> str:
    if first:
        return ""
    return "\n\n" if piece.opens_paragraph else " "


def _header(piece: Piece, document_number: int) -> str:
    return f"Document {document_number}:\n{piece.title}\n" if piece.title is not None else ""


def _render(pieces: Sequence[Piece]) -> tuple[str, list[tuple[int, int]]]:
    """Joins pieces into a context; returns it and the span of every piece (a paragraph's header included)."""
    parts: list[str] = []
    spans: list[tuple[int, int]] = []
    position = 0
    documents = 0
    for piece in pieces:
        if piece.title is not None:
            documents += 1
        separator = _separator(piece, first=not parts)
        text = separator + _header(piece, documents) + piece.text
        start = position + len(separator)
        parts.append(text)
        position += len(text)
        spans.append((start, position))
    return "".join(parts), spans


def _count_tokens(tokenizer, text: str) -> int:
    return len(token_ids(tokenizer, text))


def _batch_costs(tokenizer, texts: list[str]) -> list[int]:
    if not texts:
        return []
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]]


class FillerStream:
    """Filler pieces drawn lazily from a seeded iterator, with their estimated token costs (tokenized in batches)."""

    def __init__(self, tokenizer, pieces: Iterator[Piece]):
        self.tokenizer = tokenizer
        self.source = pieces
        self.pieces: list[Piece] = []
        self.prefix = [0]  # prefix[k]: estimated tokens of the first k pieces
        self.documents = 0

    def _grow(self, count: int) -> None:
        texts = []
        for _ in range(count):
            piece = next(self.source)
            if piece.title is not None:
                self.documents += 1
            texts.append(_separator(piece, first=not self.pieces) + _header(piece, self.documents) + piece.text)
            self.pieces.append(piece)
        for cost in _batch_costs(self.tokenizer, texts):
            self.prefix.append(self.prefix[-1] + cost)

    def _grow_past(self, cost: float) -> None:
        while self.prefix[-1] <= cost:
            if not self.pieces:
                self._grow(_FILLER_BATCH)
                continue
            average = max(self.prefix[-1] / len(self.pieces), 1.0)
            missing_pieces = (cost - self.prefix[-1]) / average
            self._grow(max(_FILLER_BATCH, int(missing_pieces * 1.05) + 1))

    def count_within(self, cost: float) -> int:
        """The most leading pieces whose estimated cost stays within `cost`."""
        if cost < 0:
            return 0
        self._grow_past(cost)
        return bisect.bisect_right(self.prefix, cost) - 1

    def index_at(self, cost: float, limit: int) -> int:
        """The first piece index (at most `limit`) whose preceding pieces cost at least `cost`."""
        return min(bisect.bisect_left(self.prefix, cost), limit)

    def next_paragraph(self, index: int, limit: int) -> int:
        """The paragraph start nearest after `index` among the first `limit` pieces, else the one before."""
        for candidate in range(index, limit):
            if self.pieces[candidate].opens_paragraph:
                return candidate
        for candidate in range(min(index, limit) - 1, -1, -1):
            if self.pieces[candidate].opens_paragraph:
                return candidate
        return 0


class Tail:
    """A filler sentence cut after `w` words: the word-level remainder that tops the context up to its target."""

    def __init__(self, tokenizer, sentences: list[str]):
        self.words = " ".join(sentences).split()
        texts = [" " + self.text(count) for count in range(1, len(self.words) + 1)]
        self.costs = [0, *_batch_costs(tokenizer, texts)]

    def text(self, count: int) -> str:
        text = " ".join(self.words[:count]).rstrip(",")
        return text if not text or text.endswith(".") else text + "."

    def best_count(self, cost: float) -> int:
        return min(range(len(self.costs)), key=lambda count: (abs(self.costs[count] - cost), count))


@dataclass
class Gold:
    """A gold or distractor fact placed at a relative depth among the filler."""

    piece: Piece
    depth: float


def _assemble(
    stream: FillerStream, tail: Tail, golds: list[Gold], count: int, words: int, whole_paragraphs: bool
) -> tuple[str, list[tuple[int, int]]]:
    """The context from `count` filler pieces, the golds at their depths and a `words`-word tail; gold spans."""
    filler_cost = stream.prefix[count]
    insertions: dict[int, list[int]] = {}
    for number, gold in enumerate(golds):
        index = stream.index_at(gold.depth * filler_cost, limit=count)
        if whole_paragraphs:
            index = stream.next_paragraph(index, limit=count)
        insertions.setdefault(index, []).append(number)
    pieces: list[Piece] = []
    gold_positions = [0] * len(golds)
    for index in range(count + 1):
        for number in insertions.get(index, []):
            gold_positions[number] = len(pieces)
            pieces.append(golds[number].piece)
        if index < count:
            pieces.append(stream.pieces[index])
    if words:
        pieces.append(Piece(tail.text(words)))
    context, spans = _render(pieces)
    return context, [spans[position] for position in gold_positions]


def fit_length(
    tokenizer,
    target: int,
    stream: FillerStream,
    tail: Tail,
    golds: list[Gold],
    whole_paragraphs: bool = False,
) -> tuple[str, list[tuple[int, int]], int]:
    """Assembles a context of about `target` tokens around the golds; returns it, the gold spans and its length.

    Raises:
        `ValueError`: if the golds alone are longer than `target`.
    """
    gold_texts = [" " + _header(gold.piece, 1) + gold.piece.text for gold in golds]
    fixed = sum(_batch_costs(tokenizer, gold_texts))
    if fixed > target:
        raise ValueError(f"length_tokens={target} is too short for this task: its gold facts alone take ~{fixed}")
    tolerance = max(1, target // 1000)
    scale = 1.0
    best = None
    tried = set()
    choice = _choose_sizes(stream, tail, fixed, target, scale)
    for _ in range(_MAX_FULL_TOKENIZATIONS):
        tried.add(choice)
        context, spans = _assemble(stream, tail, golds, *choice, whole_paragraphs)
        length = _count_tokens(tokenizer, context)
        if best is None or abs(length - target) < abs(best[2] - target):
            best = (context, spans, length)
        if abs(length - target) <= tolerance:
            break
        count, words = choice
        scale = length / max(1, fixed + stream.prefix[count] + tail.costs[words])
        choice = _choose_sizes(stream, tail, fixed, target, scale)
        if choice in tried:
            break
    return best


def _choose_sizes(stream: FillerStream, tail: Tail, fixed: int, target: int, scale: float) -> tuple[int, int]:
    """(filler pieces, tail words) whose estimated cost, times `scale`, comes closest to `target`."""
    budget = target / scale - fixed
    count = stream.count_within(budget)
    words = tail.best_count(budget - stream.prefix[count])
    overshoot = stream.prefix[count + 1] - budget if count + 1 < len(stream.prefix) else float("inf")
    if overshoot < abs(budget - stream.prefix[count] - tail.costs[words]):
        return count + 1, 0
    return count, words


def tail_for(rng: random.Random, names: NameMaker) -> list[str]:
    # Enough words to bridge the largest gap between two filler pieces (a document header and its first sentence).
    return [filler_sentence(rng, names) for _ in range(6)]


# ---------------------------------------------------------------------------------------------------------------
# Tasks.
# ---------------------------------------------------------------------------------------------------------------


def _plain_filler(rng: random.Random, names: NameMaker) -> Iterator[Piece]:
    """Filler sentences in paragraphs of 3 to 7, without digits, hyphens or all-capital words."""
    while True:
        for number in range(rng.randint(3, 7)):
            yield Piece(filler_sentence(rng, names), opens_paragraph=number == 0)


def _mhqa_distractors(rng: random.Random, names: NameMaker) -> Iterator[Piece]:
    """Distractor documents: other births, other capitals (some forming other two-hop chains) and plain filler."""
    capitals: list[str] = []
    while True:
        kind = rng.random()
        if kind < 0.35:
            city, country = names.unique(names.city), names.unique(names.country)
            capitals.append(city)
            title, first = city, _CAPITAL_TEMPLATE.format(city=city, country=country)
            rest = _bio_sentences(rng, names, _PLACE_BIOS, city, rng.randint(0, 2))
        elif kind < 0.7:
            person = names.unique(names.person)
            # A city used as a birthplace is either a stated capital or a fresh name never made a capital later.
            city = rng.choice(capitals) if capitals and rng.random() < 0.5 else names.unique(names.city)
            title, first = person, _BORN_TEMPLATE.format(person=person, city=city)
            rest = _bio_sentences(rng, names, _PERSON_BIOS, person, rng.randint(0, 2))
        else:
            title, first = _titled_filler_sentence(rng, names)
            rest = [filler_sentence(rng, names) for _ in range(rng.randint(0, 2))]
        yield Piece(first, opens_paragraph=True, title=title)
        for sentence in rest:
            yield Piece(sentence)


def _mhqa_example(tokenizer, target: int, seed: int, index: int) -> QAExample:
    rng = example_rng("mhqa", seed, index)
    gold_names = GoldNameMaker(rng)
    person = gold_names.reserve(gold_names.person)
    city = gold_names.reserve(gold_names.city)
    country = gold_names.reserve(gold_names.country)
    bridge = " ".join(
        [_BORN_TEMPLATE.format(person=person, city=city)]
        + _bio_sentences(rng, gold_names, _PERSON_BIOS, person, rng.randint(0, 2))
    )
    answer = " ".join(
        [_CAPITAL_TEMPLATE.format(city=city, country=country)]
        + _bio_sentences(rng, gold_names, _PLACE_BIOS, city, rng.randint(0, 2))
    )
    depths = {"bridge": rng.random(), "answer": rng.random()}
    golds = [
        Gold(Piece(bridge, opens_paragraph=True, title=person), depths["bridge"]),
        Gold(Piece(answer, opens_paragraph=True, title=city), depths["answer"]),
    ]
    filler_rng = example_rng("mhqa", seed, index, "filler")
    names = NameMaker(filler_rng, forbidden=gold_names.forbidden)
    stream = FillerStream(tokenizer, _mhqa_distractors(filler_rng, names))
    tail = Tail(tokenizer, tail_for(filler_rng, names))
    context, spans, length = fit_length(tokenizer, target, stream, tail, golds, whole_paragraphs=True)
    return QAExample(
        id=f"mhqa-{target}-s{seed}-{index}",
        task="mhqa",
        context=context,
        question=_MHQA_QUESTION.format(person=person),
        answers=[country],
        supporting=sorted(spans),
        length_tokens=length,
        meta={
            "seed": seed,
            "index": index,
            "target_tokens": target,
            "depths": depths,
            "person": person,
            "city": city,
            "country": country,
        },
    )


def _niah_example(tokenizer, target: int, seed: int, index: int, num_keys: int, depth: float | None) -> QAExample:
    rng = example_rng("niah", seed, index)
    pairs = rng.sample([(color, animal) for color in _KEY_COLORS for animal in _KEY_ANIMALS], num_keys)
    keys = [f"{color}-{animal}" for color, animal in pairs]
    numbers = [str(number) for number in rng.sample(range(1_000_000, 10_000_000), num_keys)]
    asked = rng.randrange(num_keys)
    asked_depth = rng.random() if depth is None else depth
    depths = [asked_depth if number == asked else rng.random() for number in range(num_keys)]
    golds = [
        Gold(Piece(_NEEDLE_TEMPLATE.format(key=key, number=value)), needle_depth)
        for key, value, needle_depth in zip(keys, numbers, depths)
    ]
    filler_rng = example_rng("niah", seed, index, "filler")
    names = NameMaker(filler_rng)
    stream = FillerStream(tokenizer, _plain_filler(filler_rng, names))
    tail = Tail(tokenizer, tail_for(filler_rng, names))
    context, spans, length = fit_length(tokenizer, target, stream, tail, golds)
    return QAExample(
        id=f"niah-{target}-s{seed}-{index}",
        task="niah",
        context=context,
        question=_NIAH_QUESTION.format(key=keys[asked]),
        answers=[numbers[asked]],
        supporting=[spans[asked]],
        length_tokens=length,
        meta={
            "seed": seed,
            "index": index,
            "target_tokens": target,
            "depth": asked_depth,
            "num_keys": num_keys,
            "keys": keys,
            "asked_key": keys[asked],
            "distractor_depths": [d for number, d in enumerate(depths) if number != asked],
        },
    )


def _variable_names(rng: random.Random, count: int) -> list[str]:
    names: list[str] = []
    while len(names) < count:
        name = "".join(rng.choice(string.ascii_uppercase) for _ in range(5))
        if name not in names and "VAR" not in name:
            names.append(name)
    return names


def _chain_statements(variables: list[str], value: str) -> list[str]:
    first = f"VAR {variables[0]} = {value}."
    return [first] + [f"VAR {current} = VAR {previous}." for previous, current in zip(variables, variables[1:])]


def _vt_example(tokenizer, target: int, seed: int, index: int, hops: int) -> QAExample:
    rng = example_rng("vt", seed, index)
    chains = 1 + _VT_DISTRACTOR_CHAINS
    variables = _variable_names(rng, chains * (hops + 1))
    values = [str(value) for value in rng.sample(range(10_000, 100_000), chains)]
    golds: list[Gold] = []
    asked_depths: list[float] = []
    for chain in range(chains):
        names = variables[chain * (hops + 1) : (chain + 1) * (hops + 1)]
        depths = sorted(rng.random() for _ in names)  # each chain in assignment order
        golds.extend(Gold(Piece(statement), d) for statement, d in zip(_chain_statements(names, values[chain]), depths))
        if chain == 0:
            asked_depths = depths
    filler_rng = example_rng("vt", seed, index, "filler")
    names_maker = NameMaker(filler_rng)
    stream = FillerStream(tokenizer, _plain_filler(filler_rng, names_maker))
    tail = Tail(tokenizer, tail_for(filler_rng, names_maker))
    context, spans, length = fit_length(tokenizer, target, stream, tail, golds)
    asked_chain = variables[: hops + 1]
    return QAExample(
        id=f"vt-{target}-s{seed}-{index}",
        task="vt",
        context=context,
        question=_VT_QUESTION.format(value=values[0]),
        answers=[", ".join(asked_chain)],
        supporting=spans[: hops + 1],
        length_tokens=length,
        meta={
            "seed": seed,
            "index": index,
            "target_tokens": target,
            "hops": hops,
            "variables": asked_chain,
            "value": values[0],
            "depths": asked_depths,
            "distractor_values": values[1:],
        },
    )
