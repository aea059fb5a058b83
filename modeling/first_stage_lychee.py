"""The first stage: a few candidate blocks from a lexical index, so a question costs the same however long the
document is.

Without it (`first_stage="full_scan"`, the paper's setting) the gate scores every block of the document for every
question: one forward of the question over each block's K/V, so a question over 4,000 blocks (1M tokens) costs
4,000 gate passes. With `first_stage="lexical"`, a BM25 index over the blocks' own text (the bank keeps it since
evidence: `document.txt` and per-block character spans) names the `first_stage_candidates` blocks whose words best
match the question, in milliseconds; the gate scores those only, plus `first_stage_sample` blocks spread evenly
over the document. The sample keeps the query-likelihood gate's z-scores honest (its median and spread need blocks
that are *not* about the question) and lets the gate catch a fact the index ranks low. When the gate reads the
working memory and the memory changes, the index is asked again with the memory's words: the blocks ahead that
match it join the candidates (the second fact of a chain names an entity only the memory holds); with
`gate_revisit`, the second look asks it once more with the final memory, over the whole document.

On real documents, questions share rare words (names, option names, section terms) with the passage that answers
them, which a 135M model's likelihood weighs less sharply (`shared/reference/retrieval-notes.md`: BM25 ranked the
answering passage in the top 10 for all of 10 held-back questions, in milliseconds over 1,743 passages).

The index is `bm25s` (a maintained BM25 package; numpy only; its saved form is `.npy` + JSON, no pickle). It is
built from the bank's text on first use and kept with the bank object. A bank without text (saved before evidence
existed, or compressed from token ids alone) has no index: its questions take the full scan, and the trace says so.
"""

import re
import warnings
from dataclasses import dataclass

import torch

FIRST_STAGES = ("full_scan", "lexical")
# Why a block was scored by the gate (`LycheeBlockTrace.chosen_by`).
CHOSEN_BY_SCAN = "full scan"
CHOSEN_BY_QUESTION = "index: question"
CHOSEN_BY_MEMORY = "index: memory"
CHOSEN_BY_SAMPLE = "sample"
NOT_A_CANDIDATE = "not a candidate"


def check_first_stage(first_stage, candidates, sample) -> None:
    """Raises a ValueError naming the fix for a first-stage setting that cannot work."""
    if first_stage not in FIRST_STAGES:
        raise ValueError(f"first_stage must be one of {FIRST_STAGES}, got {first_stage!r}.")
    for name, value, least in (("first_stage_candidates", candidates, 1), ("first_stage_sample", sample, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}.")


def _bm25s():
    try:
        import bm25s
    except ImportError as error:
        raise ImportError(
            "first_stage='lexical' needs the bm25s package: pip install bm25s (or use first_stage='full_scan')."
        ) from error
    return bm25s


_EVERY_BLOCK = "lycheeblockmarker"


def _words(texts: list[str]):
    """Lower-cased word tokens without English stop words, as the index and its queries both read them."""
    return _bm25s().tokenize(texts, stopwords="en", return_ids=False, show_progress=False)


class LexicalIndex:
    """BM25 over one document's blocks (or a corpus's), by their text.

    Args:
        passages (`list[str]`): one text per block, in block order.
    """

    def __init__(self, passages: list[str]):
        self.size = len(passages)
        self.passages = passages
        self._retriever = _bm25s().BM25()
        # Every passage gets one word no query holds, so that a block without words still has a row (rows stay
        # block indices) and the vocabulary is never empty.
        self._retriever.index(_words([f"{p} {_EVERY_BLOCK}" for p in passages]), show_progress=False)

    def search(self, text: str, k: int, among: list[int] | None = None) -> list[tuple[int, float]]:
        """The `k` best-matching blocks with a positive score, best first: `[(block, score), ...]`.

        A candidate set adds `split_neighbours` of these: the block that finishes a sentence a hit begins.

        Args:
            text (`str`): the question (or working memory) in plain text.
            k (`int`): how many blocks at most.
            among (`list[int]`, *optional*): only these blocks may be returned (default: all).
        """
        query = [[word for word in _words([text])[0] if word != _EVERY_BLOCK]]
        if self.size == 0 or not query[0]:
            return []
        mask = None
        if among is not None:
            if not among:
                return []
            mask = torch.zeros(self.size).index_fill_(0, torch.tensor(among, dtype=torch.long), 1.0).numpy()
        k = min(k, self.size if among is None else len(among))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # bm25s warns when fewer than k blocks match
            blocks, scores = self._retriever.retrieve(query, k=k, show_progress=False, weight_mask=mask)
        return [(int(b), float(s)) for b, s in zip(blocks[0], scores[0]) if s > 0]

    def save(self, directory) -> None:
        """Writes the index to `directory` (bm25s's own `.npy` + JSON files, no pickle); the passages are not
        written (they are the banks' text, read back with them)."""
        self._retriever.save(str(directory), allow_pickle=False)

    @classmethod
    def load(cls, directory, passages: list[str]) -> "LexicalIndex":
        """An index `save` wrote, for these passages (memory-mapped: a large corpus is not read whole).

        Raises:
            `ValueError`: when the saved index has another number of passages (the corpus changed since).
        """
        index = cls.__new__(cls)
        index.size, index.passages = len(passages), passages
        index._retriever = _bm25s().BM25.load(str(directory), mmap=True, allow_pickle=False)
        rows = int(index._retriever.scores["num_docs"])
        if rows != len(passages):
            raise ValueError(f"the index in {directory} covers {rows} blocks, not {len(passages)}: rebuild it")
        return index

    def split_neighbours(self, text: str, blocks: list[int]) -> list[int]:
        """The neighbours of `blocks` that finish (or begin) a sentence holding a word of `text`: a fact cut by a
        block boundary needs both blocks (the name in one, the answer in the next)."""
        words = set(_words([text])[0])
        neighbours = []
        for block in blocks:
            for first, second in ((block, block + 1), (block - 1, block)):
                if first < 0 or second >= self.size or {first, second} <= set(blocks) | set(neighbours):
                    continue
                head = re.split(r"[.!?\n]", self.passages[first])[-1]  # the sentence the first block ends in
                tail = re.split(r"[.!?\n]", self.passages[second])[0]  # and its end in the second block
                if head.strip() and words & set(_words([f"{head} {tail}"])[0]):  # a cut sentence that matches
                    neighbours.append(second if first == block else first)
        return neighbours


def lexical_index(bank) -> LexicalIndex | None:
    """The bank's index (built from its text on first use and kept on the bank, under any read-through wrapper
    that holds it as `.bank`), or None without text."""
    owner = getattr(bank, "bank", bank)
    cached = getattr(owner, "_lexical_index", None)
    if cached is not None and cached.size == len(owner):
        return cached
    text = getattr(owner, "document_text", None)
    if text is None:
        return None
    index = LexicalIndex([text.block_text(i)[1] for i in range(len(owner))])
    owner._lexical_index = index
    return index


def spread_sample(count: int, total: int) -> list[int]:
    """`count` block indices spread evenly over `0..total-1` (deterministic: the same blocks for every question)."""
    if count <= 0 or total <= 0:
        return []
    if count >= total:
        return list(range(total))
    return sorted({int((i + 0.5) * total / count) for i in range(count)})


@dataclass
class Candidates:
    """One row's blocks the gate may score, and why each is one.

    Attributes:
        chosen_by (`dict[int, str]`): block index -> `CHOSEN_BY_*`; a block not in it is not a candidate.
        index (`LexicalIndex`, *optional*): where more candidates come from (None: the full scan).
        total (`int`): blocks in the document.
    """

    chosen_by: dict[int, str]
    index: LexicalIndex | None
    total: int

    @classmethod
    def full_scan(cls, total: int) -> "Candidates":
        return cls(dict.fromkeys(range(total), CHOSEN_BY_SCAN), None, total)

    @classmethod
    def for_question(cls, index: LexicalIndex, question: str, total: int, k: int, sample: int) -> "Candidates":
        """The index's `k` best blocks for the question, plus `sample` blocks spread over the document."""
        if k + sample >= total:  # the first stage would keep every block anyway
            return cls.full_scan(total)
        chosen = {block: CHOSEN_BY_SAMPLE for block in spread_sample(sample, total)}
        found = [block for block, _ in index.search(question, k)]
        chosen.update(dict.fromkeys(found + index.split_neighbours(question, found), CHOSEN_BY_QUESTION))
        return cls(chosen, index, total)

    @property
    def blocks(self) -> list[int]:
        """The candidates in document order."""
        return sorted(self.chosen_by)

    def add_for_memory(self, memory: str, after: int, k: int) -> list[int]:
        """Adds the index's `k` best blocks after block `after` for the memory's words; returns the new ones."""
        if self.index is None:
            return []
        ahead = [b for b in range(after + 1, self.total) if b not in self.chosen_by]
        found = [block for block, _ in self.index.search(memory, k, among=ahead)]
        new = [b for b in found + self.index.split_neighbours(memory, found) if b > after and b not in self.chosen_by]
        self.chosen_by.update(dict.fromkeys(new, CHOSEN_BY_MEMORY))
        return new


class BlockView:
    """Some blocks of a bank, in document order, read as a bank of their own (`len`, `block(i)`, `spans`): what
    the gate scores when a first stage picked candidates. Position `i` of the view is block `indices[i]` of the
    bank.

    Args:
        bank (`LycheeMemoryBank`): the document.
        indices (`list[int]`): the blocks, ascending.
    """

    def __init__(self, bank, indices: list[int]):
        self.bank, self.indices = bank, list(indices)
        self.position = {block: i for i, block in enumerate(self.indices)}

    def __len__(self) -> int:
        return len(self.indices)

    def block(self, position: int):
        return self.bank.block(self.indices[position])

    @property
    def spans(self) -> list[tuple[int, int]]:
        spans = self.bank.spans
        return [spans[i] for i in self.indices]

    def first_at_or_after(self, block: int) -> int:
        """The view position of the first candidate at or after document block `block` (len(view) if none)."""
        return next((i for i, b in enumerate(self.indices) if b >= block), len(self.indices))


FIRST_STAGE_KWARGS = ("first_stage", "first_stage_candidates", "first_stage_sample")


@dataclass
class FirstStage:
    """One `generate` call's first stage: how each row's candidate blocks are chosen.

    Attributes:
        name (`str`): `"full_scan"` or `"lexical"`.
        candidates_k (`int`): blocks the index names per question and per memory update.
        sample (`int`): blocks spread over the document that are scored beside them.
        tokenizer (`PreTrainedTokenizerBase`, *optional*): turns the question and memory ids into the words the
            index matches.
    """

    name: str = "full_scan"
    candidates_k: int = 8
    sample: int = 4
    tokenizer: object = None

    @classmethod
    def from_config(cls, config, tokenizer, overrides: dict) -> "FirstStage":
        """The config's first stage with this call's overrides (`first_stage=`, ...).

        Raises:
            `ValueError`: a bad setting, or `first_stage="lexical"` asked for in the call without `tokenizer=`.
        """
        name = overrides.get("first_stage", config.first_stage)
        stage = cls(
            name,
            overrides.get("first_stage_candidates", config.first_stage_candidates),
            overrides.get("first_stage_sample", config.first_stage_sample),
            tokenizer,
        )
        check_first_stage(stage.name, stage.candidates_k, stage.sample)
        if stage.name == "lexical" and tokenizer is None:
            if "first_stage" in overrides:
                raise ValueError(
                    "first_stage='lexical' matches the question's words against the blocks' text: pass "
                    "tokenizer=tokenizer to generate (or first_stage='full_scan')."
                )
            warnings.warn(
                "The config's first_stage is 'lexical' but generate got no tokenizer to read the question's words: "
                "every block is scored (full scan). Pass tokenizer=tokenizer to use the index.",
                UserWarning,
                stacklevel=4,
            )
            stage.name = "full_scan"
        return stage

    def decode(self, ids: torch.LongTensor) -> str:
        return self.tokenizer.decode(ids.tolist(), skip_special_tokens=True)

    def candidates(self, bank, question_ids: torch.LongTensor) -> Candidates | None:
        """The row's candidates, or None for the full scan (asked for, or the bank keeps no text to index)."""
        if self.name == "full_scan":
            return None
        index = lexical_index(bank)
        if index is None:
            return None
        return Candidates.for_question(index, self.decode(question_ids), len(bank), self.candidates_k, self.sample)
