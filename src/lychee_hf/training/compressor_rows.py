"""The rows of compressor pretraining: a chunk to compress and a token sequence read after its block, with the
tokens the loss scores.

Two sources, one row type (`ContinuationRow`), one collator:
- text windows (`continuation_rows`): a chunk and the next tokens of the same text, tokens 2..C scored. The
  default text is `offline_corpus()`, the English documentation that ships with CPython (`pydoc_data.topics`,
  ~170 help topics on the language): offline everywhere Python runs, deterministic, nothing downloaded at run
  time; topics are split by name into training and held-out text, so held-out windows are never trained on.
- reading rows (`reading_rows`): the reasoner's real use. A QA example's block, then the memory-update prompt and
  the memory the gold-fact teacher writes after that block, the memory (eos included) scored.
"""

from dataclasses import dataclass

import torch

from ..data import QAExample
from .reasoner import build_reasoner_steps
from .trainer_utils import IGNORE_INDEX


def offline_corpus(eval_fraction: float = 0.1) -> tuple[str, str]:
    """(training text, held-out text) from CPython's bundled documentation topics, split by topic name."""
    from pydoc_data.topics import topics

    names = sorted(topics)
    held_out = set(names[:: max(1, round(1 / eval_fraction))])
    train = "\n\n".join(topics[name] for name in names if name not in held_out)
    test = "\n\n".join(topics[name] for name in names if name in held_out)
    return train, test


@dataclass
class ContinuationRow:
    """A chunk to compress and the tokens the reasoner reads after its block.

    Attributes:
        chunk_ids (`torch.LongTensor`): (Lc,) the chunk, at most `chunk_size` tokens.
        continuation_ids (`torch.LongTensor`): (L,) what is read after the block.
        scored (`torch.BoolTensor`, *optional*): (L,) the tokens the loss predicts; `None`: tokens 2..L (a text
            window's continuation).
    """

    chunk_ids: torch.LongTensor
    continuation_ids: torch.LongTensor
    scored: torch.BoolTensor | None = None

    def scored_mask(self) -> torch.BoolTensor:
        if self.scored is not None:
            return self.scored
        mask = torch.ones(self.continuation_ids.numel(), dtype=torch.bool)
        mask[0] = False  # only the block comes before the first token
        return mask


def continuation_rows(tokenizer, text: str, chunk_size: int, continuation_tokens: int) -> list[ContinuationRow]:
    """Cuts `text` into consecutive, non-overlapping (chunk, continuation) windows."""
    ids = torch.tensor(tokenizer.encode(text, add_special_tokens=False), dtype=torch.long)
    window = chunk_size + continuation_tokens
    return [
        ContinuationRow(ids[start : start + chunk_size], ids[start + chunk_size : start + window])
        for start in range(0, ids.numel() - window + 1, window)
    ]


def reading_rows(
    model, tokenizer, examples: list[QAExample], unchanged_fraction: float = 1.0, seed: int = 0
) -> list[ContinuationRow]:
    """Rows of the reasoner's real reading: a block, then the memory-update prompt and the memory it writes.

    One row per block step of the gold-fact teacher (`build_reasoner_steps`; final-answer steps read no block and
    are left out): the step's chunk, then prompt + target, scored on the target only (the memory after the block,
    eos included). The first target token is predicted at the prompt's last token, so that is the first
    distribution the loss compares.

    Args:
        model (`LycheeMemoryForCausalLM`): the model (chunk size, prompts and memory budget).
        tokenizer: its tokenizer.
        examples (`list[QAExample]`): examples with `supporting` spans.
        unchanged_fraction (`float`, *optional*, defaults to 1.0): share of the steps whose memory does not change
            to keep (see `build_reasoner_steps`).
        seed (`int`, *optional*, defaults to 0): seeds which of those are kept.

    Returns:
        `list[ContinuationRow]` with `scored` masks.
    """
    rows = []
    for step in build_reasoner_steps(model, tokenizer, examples, unchanged_fraction, seed):
        if not step.reads_block:
            continue
        scored = torch.zeros(step.prompt_ids.numel() + step.target_ids.numel(), dtype=torch.bool)
        scored[step.prompt_ids.numel() :] = True
        rows.append(ContinuationRow(step.chunk_ids, torch.cat([step.prompt_ids, step.target_ids]), scored))
    return rows


def collate_continuations(rows: list[ContinuationRow]) -> dict:
    """A batch of rows of any length: chunks right-padded, sequences left-padded (as a block prefix wants).

    Returns:
        `dict` with `chunk_ids` (B, Lc) and `chunk_lengths` (B,); `input_ids`, `attention_mask` and `labels` (B, L),
        `labels` being `IGNORE_INDEX` except on scored tokens.
    """
    batch, chunk_length = len(rows), max(row.chunk_ids.numel() for row in rows)
    length = max(row.continuation_ids.numel() for row in rows)
    chunk_ids = torch.zeros((batch, chunk_length), dtype=torch.long)
    input_ids = torch.zeros((batch, length), dtype=torch.long)
    attention_mask = torch.zeros((batch, length), dtype=torch.long)
    labels = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long)
    for i, row in enumerate(rows):
        chunk_ids[i, : row.chunk_ids.numel()] = row.chunk_ids
        start = length - row.continuation_ids.numel()
        input_ids[i, start:] = row.continuation_ids
        attention_mask[i, start:] = 1
        labels[i, start:] = row.continuation_ids.masked_fill(~row.scored_mask(), IGNORE_INDEX)
    chunk_lengths = torch.tensor([row.chunk_ids.numel() for row in rows], dtype=torch.long)
    return {
        "chunk_ids": chunk_ids,
        "chunk_lengths": chunk_lengths,
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels,
    }
