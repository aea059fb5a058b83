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
The relations, their phrasings and the families are tables in `relations.py`.
"""

import random
import re
from collections.abc import Iterator
from dataclasses import dataclass

from .examples import QAExample
from .length_fit import FillerStream, Gold, Piece, Tail, fit_length
from .narrative import chronicle_paragraph
from .relations import HELD_OUT, TRAIN, Family, Relation, families, in_split
from .synthetic import check_sizes, example_rng
from .vocabulary import GoldNameMaker, NameMaker, filler_sentence, tail_for

_DISTRACTORS = 3  # facts of the same relation(s) about other entities, per example


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


def make_facts_heldout_unanswerable(tokenizer, length_tokens: int, n: int, seed: int = 0) -> list[QAExample]:
    """Questions the document cannot answer: each held-out facts document asked another example's question, whose
    entity and answer it does not contain (gold `answers` is empty; `meta["unanswerable"]` is True). Measures
    whether the model says "not found" instead of inventing an answer."""
    examples = make_facts_heldout(tokenizer, length_tokens, n + 1, seed)
    return [unanswerable_variant(examples[i], examples[i + 1 :] + examples[:i]) for i in range(n)]


def unanswerable_variant(example: QAExample, others: list[QAExample]) -> QAExample:
    """`example`'s document with the first question of `others` that names nothing the document contains."""
    context = example.context.lower()
    for other in others:
        named = [word for word in re.findall(r"\b[A-Z][a-z]+\b", other.question) if word.lower() not in STOP_NAMES]
        if all(answer.lower() not in context for answer in other.answers) and not any(
            word.lower() in context for word in named
        ):
            meta = {**example.meta, "unanswerable": True, "question_from": other.id}
            return QAExample(
                f"{example.id}-unanswerable", f"{example.task}-unanswerable", example.context, other.question, [],
                [], example.length_tokens, meta,
            )  # fmt: skip
    raise ValueError(f"no question of the other examples is unanswerable over {example.id}")


# Capitalised question words that are not names (sentence starts).
STOP_NAMES = {"what", "who", "which", "where", "when", "how", "in", "on", "the", "whom", "whose", "of", "at"}

# Tasks built from held-out families or phrasings: evaluation only (`tasks.HELD_OUT_TASKS` gathers every such task).
FAMILY_HELD_OUT_TASKS = ("facts-rephrased", "facts-heldout", "twohop-heldout", "facts-heldout-unanswerable")

FAMILY_TASKS = {
    "facts": make_facts,
    "facts-rephrased": make_facts_rephrased,
    "facts-heldout": make_facts_heldout,
    "facts-heldout-unanswerable": make_facts_heldout_unanswerable,
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
