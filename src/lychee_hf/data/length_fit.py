"""Assembly of a context to a target length in tokens of a given tokenizer: filler pieces around gold facts placed
at relative depths.

The length is hit without re-tokenizing the whole context repeatedly: filler pieces are tokenized one by one (in
batches) to estimate their cost, the context is assembled and tokenized once, and the measured error rescales the
estimate for at most two more assemblies. A last filler sentence cut at a word boundary gives word-level precision.
The generators (`synthetic.py`, `families.py`) supply the pieces: their words come from `vocabulary.py`.
"""

import bisect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from .spans import token_ids

# At most this many tokenizations of a whole context per example.
_MAX_FULL_TOKENIZATIONS = 3
_FILLER_BATCH = 256


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
