"""Synthetic long-context QA tasks, generated offline and seeded, at a target length in tokens of a given tokenizer.

Three tasks, after RULER:

* `mhqa`: two-hop questions over invented people, cities and countries ("X was born in Y." + "Y is the capital of
  Z." -> "In which country was X born?"), the two gold documents hidden among distractor documents built from the
  same templates with other entities.
* `niah`: needle(s) "The special magic number for {key} is {number}." in varied filler sentences.
* `vt`: variable tracking, chains "VAR A = 12345." -> "VAR B = VAR A." hidden in filler, with distractor chains.

Every example records the character spans of its gold facts (`supporting`), so that the chunks holding them can be
found for any tokenizer and chunk size (`spans.supporting_chunks`).

Contexts are assembled to their target length by `length_fit.py`, from the words of `vocabulary.py`.
"""

import random
import string
from collections.abc import Iterator

from .examples import QAExample
from .length_fit import FillerStream, Gold, Piece, Tail, fit_length
from .vocabulary import (
    BORN_TEMPLATE,
    CAPITAL_TEMPLATE,
    PERSON_BIOS,
    PLACE_BIOS,
    GoldNameMaker,
    NameMaker,
    bio_sentences,
    filler_sentence,
    plain_filler,
    tail_for,
    titled_filler_sentence,
)


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
_VT_DISTRACTOR_CHAINS = 2


def _mhqa_distractors(rng: random.Random, names: NameMaker) -> Iterator[Piece]:
    """Distractor documents: other births, other capitals (some forming other two-hop chains) and plain filler."""
    capitals: list[str] = []
    while True:
        kind = rng.random()
        if kind < 0.35:
            city, country = names.unique(names.city), names.unique(names.country)
            capitals.append(city)
            title, first = city, CAPITAL_TEMPLATE.format(city=city, country=country)
            rest = bio_sentences(rng, names, PLACE_BIOS, city, rng.randint(0, 2))
        elif kind < 0.7:
            person = names.unique(names.person)
            # A city used as a birthplace is either a stated capital or a fresh name never made a capital later.
            city = rng.choice(capitals) if capitals and rng.random() < 0.5 else names.unique(names.city)
            title, first = person, BORN_TEMPLATE.format(person=person, city=city)
            rest = bio_sentences(rng, names, PERSON_BIOS, person, rng.randint(0, 2))
        else:
            title, first = titled_filler_sentence(rng, names)
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
        [BORN_TEMPLATE.format(person=person, city=city)]
        + bio_sentences(rng, gold_names, PERSON_BIOS, person, rng.randint(0, 2))
    )
    answer = " ".join(
        [CAPITAL_TEMPLATE.format(city=city, country=country)]
        + bio_sentences(rng, gold_names, PLACE_BIOS, city, rng.randint(0, 2))
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
    stream = FillerStream(tokenizer, plain_filler(filler_rng, names))
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
    stream = FillerStream(tokenizer, plain_filler(filler_rng, names_maker))
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
