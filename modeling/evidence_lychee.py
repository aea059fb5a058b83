"""Evidence: the passages of the read blocks that carry the answer, quoted with their characters in the document.

The reasoner already narrows the document to the blocks the gate kept; inside those (256 tokens each on the
default) the evidence is the sentences or lines that share the most rare words with the question, the answer and
the final working memory. Words are weighted by their rarity in the document (an IDF over the passages of the read
blocks and of up to `RARITY_BLOCKS` blocks spread over the rest), so the title phrase repeated in every block weighs
little and a name or number weighs much. (Counted over the read blocks alone, a contract's parties and service
name looked rare whenever two or three clauses were read, and outranked the clause that answers.) Every passage is
quoted exactly as the document has it, with `[start, end)` character offsets into the text the user gave.
"""

import math
import re
from dataclasses import dataclass

_WORD = re.compile(r"\w+", re.UNICODE)
# Where passages end: after a sentence's final punctuation followed by space, or at a line break.
_BOUNDARY = re.compile(r"(?<=[.!?])\s+|\s*\n\s*")
_STOP = frozenset(
    "a an and are as at be by did do does for from had has have he her his how in is it its of on or she that the "
    "their them they this to was were what when where which who whom whose why will with you your".split()
)
# How much a word counts by where it comes from: the answer names the fact, the question asks for it, the memory
# is what the reasoner kept (it may hold other facts too).
_WEIGHTS = {"answer": 2.0, "question": 1.0, "memory": 0.5}
# Blocks whose passages set the words' rarity besides the read ones: enough to see the document's common words,
# bounded so that evidence costs the same at 1M tokens as at 8K.
RARITY_BLOCKS = 64
# How far past a block's edge a cut sentence is followed to its end (a long table row or sentence is cut there).
SENTENCE_REACH = 400


@dataclass
class Evidence:
    """One quoted passage.

    Attributes:
        start / end (`int`): `[start, end)` characters in the document text.
        text (`str`): `document[start:end]`, exactly.
        block_index (`int`): the block it lies in.
        gate_score (`float`): that block's gate score.
        score (`float`): the passage's lexical match (higher is better; passages are ranked by it).
    """

    start: int
    end: int
    text: str
    block_index: int
    gate_score: float
    score: float

    def to_dict(self) -> dict:
        return {
            "start": self.start,
            "end": self.end,
            "text": self.text,
            "block": self.block_index,
            "gate_score": round(self.gate_score, 4),
            "score": round(self.score, 3),
        }


def words(text: str) -> list[str]:
    """Lower-cased word tokens without stop words."""
    return [w for w in (m.group(0).lower() for m in _WORD.finditer(text)) if w not in _STOP]


def passages(offset: int, text: str) -> list[tuple[int, int]]:
    """`[start, end)` document characters of the sentences / lines of `text` (which starts at `offset`)."""
    pieces, start = [], 0
    for match in _BOUNDARY.finditer(text):
        pieces.append((start, match.start()))
        start = match.end()
    pieces.append((start, len(text)))
    spans = []
    for begin, end in pieces:
        piece = text[begin:end]
        stripped = piece.strip()
        if len(_WORD.findall(stripped)) >= 2:
            first = begin + len(piece) - len(piece.lstrip())
            spans.append((offset + first, offset + first + len(stripped)))
    return spans


def sentence_bounds(document: str, start: int, end: int) -> tuple[int, int]:
    """`[start, end)` widened to the start of the sentence (or line) around `start` and the end of the one around
    `end - 1`, looking at most `SENTENCE_REACH` characters beyond either end."""
    before = document[max(0, start - SENTENCE_REACH) : start]
    if before:
        ends = [match.end() for match in _BOUNDARY.finditer(before)]
        start = start - len(before) + ends[-1] if ends else start
    if end < len(document) and not (end > 0 and _BOUNDARY.match(document, end - 1)):
        after = _BOUNDARY.search(document, end, min(len(document), end + SENTENCE_REACH))
        end = after.start() if after else min(len(document), end + SENTENCE_REACH)
    return start, end


def following_passage(document: str, end: int) -> tuple[int, int] | None:
    """The `[start, end)` characters of the passage after the one ending at `end` (None at the document's end)."""
    after = _BOUNDARY.search(document, end)  # the next passage starts after the boundary that ends this one
    if after is None:
        return None
    first, last = sentence_bounds(document, after.end(), min(len(document), after.end() + 1))
    spans = [span for span in passages(first, document[first:last]) if span[0] >= end]
    return spans[0] if spans else None


def rank_evidence(
    document: str,
    blocks: list[tuple[int, int, int, float]],
    question: str,
    answer: str,
    memory: str,
    top_k: int = 3,
    rarity_spans: list[tuple[int, int]] | None = None,
) -> list[Evidence]:
    """The `top_k` passages of the read blocks that best match the question, the answer and the memory.

    Args:
        document (`str`): the whole document text.
        blocks (`list[tuple[int, int, int, float]]`): per read block, `(block_index, start, end, gate_score)` with
            its character span.
        question / answer / memory (`str`): decoded texts.
        top_k (`int`): passages returned at most.
        rarity_spans (`list[tuple[int, int]]`, *optional*): character spans of more of the document (other
            blocks) whose passages count, beside the read ones, in each word's rarity (default: none).

    Returns:
        `list[Evidence]`, best first; empty when nothing matches (no shared word).
    """
    candidates, seen = [], set()
    for index, block_start, block_end, score in blocks:
        # A block ends where its tokens do, mid-sentence: read its first and last sentences whole.
        first, last = sentence_bounds(document, block_start, block_end)
        for span in passages(first, document[first:last]):
            if span not in seen:
                seen.add(span)
                candidates.append((index, score, *span))
    if not candidates:
        return []
    bags = [set(words(document[start:end])) for _, _, start, end in candidates]
    read = {(start, end) for _, start, end, _ in blocks}
    others = [
        set(words(document[start:end]))
        for span in rarity_spans or []
        if tuple(span) not in read
        for start, end in passages(span[0], document[span[0] : span[1]])
    ]
    frequency: dict[str, int] = {}
    for bag in bags + others:
        for word in bag:
            frequency[word] = frequency.get(word, 0) + 1
    weights: dict[str, float] = {}
    for source, text in (("memory", memory), ("question", question), ("answer", answer)):
        for word in words(text):
            weights[word] = max(weights.get(word, 0.0), _WEIGHTS[source])
    total = len(bags) + len(others)
    ranked = []
    for (index, gate_score, start, end), bag in zip(candidates, bags):
        score = sum(weight * math.log(1 + total / frequency[word]) for word, weight in weights.items() if word in bag)
        if score > 0:
            ranked.append(Evidence(start, end, document[start:end], index, gate_score, score))
    ranked.sort(key=lambda e: (-e.score, -e.gate_score, e.start))
    return ranked[:top_k]


_NAME = re.compile(r"\b(?:[A-Z][\w'-]*|\d[\d.,:/-]*)")
# Words that frame a question rather than name its subject ("What *figure* did X *reach*?", "Who *should* I contact
# about Y?"): a document that answers may word them otherwise, so they never count as missing.
_FRAME = frozenset(
    "according also am any apply applies asked being can could current currently day days date deadline detail "
    "details document expected figure file files finish finished given go happen happens has latest long made make "
    "many may might much must name named new now number option options part people period person place point role "
    "set shall should still such take taken there thing things time times under until use used uses using value "
    "would".split()
)
# A question counts as about something the document lacks when this many of its subject words never occur in it.
MISSING_SUBJECT_WORDS = 2
_SUFFIXES = ("ing", "es", "ed", "er", "s", "ly")


def missing_names(question: str, text: str) -> list[str]:
    """The names (capitalised words after the first word, and numbers) of `question` that `text` never contains
    (case-insensitive, as whole words)."""
    first = _WORD.search(question)
    names = [m.group(0).strip(".,:/-'") for m in _NAME.finditer(question) if not first or m.start() != first.start()]
    present = set(w.lower() for w in _WORD.findall(text))
    return [name for name in names if name and name.lower() not in _STOP and not _all_present(name, present)]


def _all_present(name: str, present: set[str]) -> bool:
    return all(part.lower() in present for part in _WORD.findall(name))


def stem(word: str) -> str:
    """A crude stem for telling whether a document uses a question's word: one common suffix off, then a final
    "e", then at most five letters ("expenses" and "expense" agree, so do "founder" and "founded", "bake" and
    "baked")."""
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    if word.endswith("e") and len(word) > 3:
        word = word[:-1]
    return word[:5]


def document_stems(text: str) -> frozenset[str]:
    """The stems of every word of `text` (see `stem`), once per document."""
    return frozenset(stem(word.lower()) for word in _WORD.findall(text))


def missing_subject(question: str, stems: frozenset[str]) -> list[str]:
    """The question's subject words (not stop or framing words, not numbers, three letters or more) whose stem the
    document (`document_stems`) never uses."""
    subject = [w for w in words(question) if len(w) >= 3 and not w.isdigit() and w not in _FRAME]
    return [word for word in subject if stem(word) not in stems]


def lacks_subject(question: str, stems: frozenset[str]) -> bool:
    """Whether `MISSING_SUBJECT_WORDS` or more of the question's subject words never occur in the document whose
    stems (`document_stems`) are given: a question about something it does not contain."""
    return len(missing_subject(question, stems)) >= MISSING_SUBJECT_WORDS
