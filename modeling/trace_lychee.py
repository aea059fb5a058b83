"""What `generate` tells about each answer: a record per block (gate, memory, prompts, seconds), the answer turn,
"not found", and the evidence quoted from the document. One schema (`to_dict`) for the API, the CLI and evaluation.
"""

from dataclasses import dataclass

from transformers.generation.utils import GenerateDecoderOnlyOutput

from .evidence_lychee import RARITY_BLOCKS, lacks_subject, missing_names, rank_evidence
from .first_stage_lychee import spread_sample


@dataclass(slots=True)
class LycheeBlockTrace:
    """What happened at one block of one row.

    A skipped block's empty id sequences are the shared empty tuple, not two new lists: a 1M-token bank makes
    about 4,000 records per question, and collecting their empty lists was half of its cost (slots save the
    per-record dict besides).

    Attributes:
        block_index (`int`): position of the block in the document.
        span (`tuple[int, int]`): the block's source tokens [start, end).
        gate_score (`float`): P(related) from the gate.
        kept (`bool`): whether the reasoner read the block.
        gate_decision (`str`): why: `"related"` / `"unrelated"` (score vs threshold), `"last block"`
            (`gate_keep_last`), `"block limit"` (related, but `gate_max_blocks` blocks were read already) or
            `"revisit"` (skipped by the scan, read on the second look against the final memory: `gate_revisit`),
            or `"not a candidate"` (the first stage did not name it: the gate never scored it).
        chosen_by (`str`): which stage put the block before the gate: `"full scan"` (every block is scored),
            `"index: question"` / `"index: memory"` (the lexical index matched the question / the working memory)
            or `"sample"` (spread over the document for the gate's calibration); `""` for a non-candidate.
        memory_ids (`list[int]`): the working memory after this step (unchanged when skipped).
        tokens_decoded (`int`): tokens the memory update generated (0 when skipped).
        generated_ids (`list[int]`): those tokens, through the first stop id (`()` when skipped): what the
            reasoner wrote, before pad/eos removal and the budget cut made it `memory_ids` (RL scores these).
        prompt_ids (`list[int]`): the memory update's prompt after the block, exactly as fed to `generate`
            (without the batch's left padding; `()` when skipped): update template, question, previous memory.
        prompt_tokens (`int`): prompt tokens the memory update prefilled after the block (0 when skipped).
        compress_seconds / gate_seconds / reason_seconds (`float`): this block's own wall time. The gate scores
            the blocks ahead in batched passes (again only when the memory changes); each block is charged an
            equal share of the pass that scored it, whether or not it is read; scores thrown away because a
            memory update changed the memory are charged to that update's block. So the records add up to the
            call's gate time. Compression and reasoning are batched across rows, so rows of one batch share
            those figures.
        row (`int`): the batch row this record belongs to.
    """

    block_index: int
    span: tuple[int, int]
    gate_score: float
    kept: bool
    memory_ids: list[int]
    gate_decision: str = ""
    chosen_by: str = ""
    tokens_decoded: int = 0
    generated_ids: list[int] | tuple = ()
    prompt_ids: list[int] | tuple = ()
    prompt_tokens: int = 0
    compress_seconds: float = 0.0
    gate_seconds: float = 0.0
    reason_seconds: float = 0.0
    row: int = 0

    def to_dict(self, tokenizer) -> dict:
        """The record as plain JSON values: what `lychee-hf ask --json` and evaluation's predictions write.

        Args:
            tokenizer (`PreTrainedTokenizerBase`): decodes the working memory into `memory`.

        Returns:
            `dict` with `block`, `span`, `gate_score` (4 decimals), `kept`, `gate_decision`, `chosen_by`,
            `memory_tokens`,
            `memory` (text), `tokens_decoded`, `prompt_ids`, `prompt_tokens`, `compress_seconds` and `seconds`
            (gate + reasoning, 3 decimals).
        """
        return {
            "block": self.block_index,
            "span": list(self.span),
            "gate_score": round(self.gate_score, 4),
            "kept": self.kept,
            "gate_decision": self.gate_decision,
            "chosen_by": self.chosen_by,
            "memory_tokens": len(self.memory_ids),
            "memory": tokenizer.decode(self.memory_ids, skip_special_tokens=True),
            "tokens_decoded": self.tokens_decoded,
            "prompt_ids": list(self.prompt_ids),
            "prompt_tokens": self.prompt_tokens,
            "compress_seconds": round(self.compress_seconds, 3),
            "seconds": round(self.gate_seconds + self.reason_seconds, 3),
        }


class LycheeTrace(list):
    """One row's trace: its `LycheeBlockTrace` records in reading order (a plain list of them), plus the final
    answer turn. The scan's records come first, one per block in document order; with `gate_revisit`, a record
    per block read on the second look follows them (that block's index appears twice).

    Attributes:
        answer_prompt_ids (`list[int]`): the final answer's prompt (final template, question, last working
            memory), exactly as fed to `generate`, without the batch's left padding.
        answer_ids (`list[int]`): the answer's tokens through the first stop id.
        answer_seconds (`float`): wall time of the final answer turn (rows of a batch share it). The blocks'
            `seconds` plus this add up to the call's time after compression.
        not_found (`bool`): the answer is the model's `unanswerable_answer` (`answer_not_found`), not a generated
            one: no block was read, the working memory held nothing new, or the question names or asks about
            something the document does not contain (`names_missing`, `subject_missing`).
        not_found_reason (`str`): with `not_found`, which of those tests held, in words; `""` otherwise.
        answer_source (`str`): where the answer comes from: `"memory"` (generated from the working memory) or
            `"evidence"` (copied from the best read passage: `answer_from="evidence"`, see `extract_lychee`).
        generated_answer_ids (`list[int]`): when the answer given is not the generated one ("not found", or copied
            from the evidence), the answer the model generated; empty otherwise.
        question_ids (`list[int]`): the question, as asked.
        document_text (`DocumentText`, *optional*): the bank's document text, when the bank keeps it; evidence
            (`evidence(tokenizer)`) quotes it.
    """

    def __init__(
        self,
        records=(),
        answer_prompt_ids: list[int] | None = None,
        answer_ids: list[int] | None = None,
        answer_seconds: float = 0.0,
    ):
        super().__init__(records)
        self.answer_prompt_ids = answer_prompt_ids or []
        self.answer_ids = answer_ids or []
        self.answer_seconds = answer_seconds
        self.not_found = False
        self.not_found_reason = ""
        self.answer_source = "memory"
        self.generated_answer_ids: list[int] = []
        self.question_ids: list[int] = []
        self.document_text = None

    def names_missing(self, tokenizer) -> bool:
        """Whether the question names something (a capitalised word or a number) that none of the read blocks'
        text contains: a question about another document, whatever the reasoner wrote. False when the bank keeps
        no text or nothing was read."""
        kept = sorted({record.block_index for record in self if record.kept})
        if self.document_text is None or not kept:
            return False
        read = " ".join(self.document_text.block_text(index)[1] for index in kept)
        return bool(missing_names(tokenizer.decode(self.question_ids, skip_special_tokens=True), read))

    def subject_missing(self, tokenizer) -> bool:
        """Whether `MISSING_SUBJECT_WORDS` or more of the question's subject words (not stop or framing words)
        occur nowhere in the document: a question about something it does not contain ("the monthly price of the
        priority support add-on"), even without a name. False when the bank keeps no text."""
        if self.document_text is None:
            return False
        question = tokenizer.decode(self.question_ids, skip_special_tokens=True)
        return lacks_subject(question, self.document_text.word_stems)

    def evidence(self, tokenizer, top_k: int = 3) -> list | None:
        """The passages of the read blocks that carry the answer (`evidence_lychee.Evidence`, best first), or None
        when the bank keeps no document text. Empty when nothing was read, the answer is "not found", or nothing
        matches."""
        if self.not_found:
            return None if self.document_text is None else []
        answer = tokenizer.decode(self.answer_ids, skip_special_tokens=True)
        return self.ranked_passages(tokenizer, answer, top_k)

    def ranked_passages(self, tokenizer, answer: str, top_k: int) -> list | None:
        """The read blocks' passages ranked against the question, the final memory and `answer` (`rank_evidence`;
        `answer=""` ranks them for finding an answer). None when the bank keeps no text; empty when nothing was read
        or nothing matches."""
        if self.document_text is None:
            return None
        scores = {}
        for record in self:
            if record.kept:
                scores[record.block_index] = max(scores.get(record.block_index, 0.0), record.gate_score)
        blocks = [(index, *self.document_text.chars[index], score) for index, score in sorted(scores.items())]
        if not blocks:
            return []
        memory = self[-1].memory_ids if len(self) else []
        decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
        spread = spread_sample(RARITY_BLOCKS, len(self.document_text.chars))
        rarity = [self.document_text.chars[index] for index in spread]
        return rank_evidence(
            self.document_text.text, blocks, decode(self.question_ids), answer, decode(memory), top_k, rarity
        )

    def to_dict(self, tokenizer) -> dict:
        """The row as plain JSON values.

        This is the one schema of a trace: `lychee-hf ask --json`, evaluation's predictions and the Python API
        write the same keys.

        Returns:
            `dict` with `answer` (decoded, special tokens skipped, stripped), `not_found`, `not_found_reason`,
            `answer_source`, `generated_answer` (what the model generated when the answer is another; `""`
            otherwise), `evidence` (a list of `Evidence.to_dict`: `start`, `end`, `text`, `block`, `gate_score`,
            `score`; `null` when the bank keeps no document text), `answer_prompt_ids`, `answer_prompt_tokens`,
            `answer_tokens` (decoded answer tokens through the first stop), `answer_seconds` (3 decimals) and
            `trace` (`LycheeBlockTrace.to_dict` of every block read or skipped).
        """
        evidence = self.evidence(tokenizer)
        return {
            "answer": tokenizer.decode(self.answer_ids, skip_special_tokens=True).strip(),
            "not_found": self.not_found,
            "not_found_reason": self.not_found_reason,
            "answer_source": self.answer_source,
            "generated_answer": tokenizer.decode(self.generated_answer_ids, skip_special_tokens=True).strip(),
            "evidence": None if evidence is None else [item.to_dict() for item in evidence],
            "answer_prompt_ids": list(self.answer_prompt_ids),
            "answer_prompt_tokens": len(self.answer_prompt_ids),
            "answer_tokens": len(self.answer_ids),
            "answer_seconds": round(self.answer_seconds, 3),
            "trace": [record.to_dict(tokenizer) for record in self],
        }


@dataclass
class LycheeGenerateOutput(GenerateDecoderOnlyOutput):
    """`GenerateDecoderOnlyOutput` of the final answer plus `trace`: one `LycheeTrace` per row."""

    trace: list[LycheeTrace] | None = None


__all__ = ["LycheeBlockTrace", "LycheeGenerateOutput", "LycheeTrace"]
