"""Where an example's gold facts fall in token space: the chunks that hold them, for any tokenizer and chunk size."""

import bisect

from .examples import QAExample


def supporting_chunks(example: QAExample, tokenizer, chunk_size: int) -> list[int]:
    """The indices of the chunks (token offset // `chunk_size`) that hold any part of a supporting span.

    Args:
        example (`QAExample`): the example whose `supporting` spans are located.
        tokenizer: the tokenizer that splits `example.context` into chunks; a fast tokenizer is located exactly
            through its offset mapping, a slow one by tokenizing the context prefix before and through each span.
        chunk_size (`int`): tokens per chunk.

    Returns:
        `list[int]`: sorted, unique chunk indices.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    spans = [(start, end) for start, end in example.supporting if end > start]
    if not spans:
        return []
    if getattr(tokenizer, "is_fast", False):
        token_ranges = _token_ranges_from_offsets(example.context, tokenizer, spans)
    else:
        token_ranges = _token_ranges_from_prefixes(example.context, tokenizer, spans)
    chunks = set()
    for first, last in token_ranges:
        if last >= first:
            chunks.update(range(first // chunk_size, last // chunk_size + 1))
    return sorted(chunks)


def _token_ranges_from_offsets(context: str, tokenizer, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    offsets = tokenizer(context, add_special_tokens=False, return_offsets_mapping=True, verbose=False)["offset_mapping"]
    starts = [start for start, _ in offsets]
    ends = [end for _, end in offsets]
    ranges = []
    for start, end in spans:
        first = bisect.bisect_right(ends, start)  # first token ending after the span starts
        last = bisect.bisect_left(starts, end) - 1  # last token starting before the span ends
        ranges.append((first, last))
    return ranges


def _token_ranges_from_prefixes(context: str, tokenizer, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    ranges = []
    for start, end in spans:
        before = token_ids(tokenizer, context[:start])
        through = token_ids(tokenizer, context[:end])
        # Tokens of the prefix that the span's text re-merges (" " + "The" -> " The") are the span's first tokens;
        # such merges only reach back a few tokens from the span's start.
        first = min(len(before), len(through))
        while first > 0 and before[first - 1] != through[first - 1]:
            first -= 1
        ranges.append((first, len(through) - 1))
    return ranges


def token_ids(tokenizer, text: str) -> list[int]:
    """`text`'s ids without special tokens (and without the tokenizer's too-long warning)."""
    return tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
