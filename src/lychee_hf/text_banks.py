"""Compressing a document given as text, so that its bank keeps the text and each block's characters (evidence).

bank = compress_text(model, tokenizer, open("report.txt").read())
out = model.generate(input_ids=question_ids, bank=bank, return_dict_in_generate=True)
out.trace[0].to_dict(tokenizer)["evidence"]   # quoted passages with character offsets into the text

with text_bank(model, tokenizer, open("long.txt").read()) as bank:   # in memory, or on disk when large
    out = model.generate(input_ids=question_ids, bank=bank)
"""

import contextlib
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch

from .modeling import DocumentText, LycheeMemoryBank, MemoryBankError, default_bank_dtype

# A one-off bank (`text_bank`, `lychee-hf ask --context`) larger than this goes to a temporary folder on disk.
DEFAULT_MAX_BANK_MEMORY = 512 * 10**6


def encode_document(
    tokenizer, text: str, chunk_size: int, source: str = "the document"
) -> tuple[torch.LongTensor, DocumentText | None]:
    """The document's (1, N) token ids and its `DocumentText` (None when the tokenizer gives no character offsets:
    a slow tokenizer; the bank then answers without evidence).

    A text longer than `PIECE_CHARS` is tokenized piece by piece, so that memory does not grow with it (a fast
    tokenizer holds some 400 bytes per token while it encodes); the ids and offsets are those of the whole text
    (see `_encode_in_pieces`).

    Raises:
        `ValueError` when the text is empty after tokenization (naming `source`, e.g. "context report.txt").
    """
    encoded = _encode_in_pieces(tokenizer, text) if len(text) > PIECE_CHARS else None
    ids, offsets = encoded if encoded is not None else _encode(tokenizer, text)
    if not ids.numel():
        raise ValueError(f"{source} is empty after tokenization")
    document = DocumentText(text, _chunk_chars(offsets, chunk_size)) if offsets is not None else None
    return ids[None], document


# A long text is tokenized in pieces of about this many characters, cut where a word starts: at a space between a
# non-space and a letter (where byte-level BPE and SentencePiece tokenizers start a token anyway).
PIECE_CHARS = 100_000
_WORD_START = re.compile(r"(?<=\S) (?=[^\W\d_])")
# Each cut is checked: the tokens within SEAM_COMPARED characters of it must be those of the text tokenized across
# it (SEAM_CHARS characters on each side).
SEAM_CHARS, SEAM_COMPARED = 2_000, 200


def _encode(tokenizer, text: str) -> tuple[torch.LongTensor, torch.LongTensor | None]:
    """(N,) ids and (N, 2) character offsets of `text` (offsets None for a tokenizer that gives none)."""
    try:
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except (NotImplementedError, TypeError, ValueError):
        encoded = None
    if encoded is None or "offset_mapping" not in encoded:
        return torch.tensor(tokenizer.encode(text, add_special_tokens=False), dtype=torch.long), None
    offsets = torch.tensor(encoded["offset_mapping"], dtype=torch.long).reshape(-1, 2)
    return torch.tensor(encoded["input_ids"], dtype=torch.long), offsets


def _encode_in_pieces(tokenizer, text: str) -> tuple[torch.LongTensor, torch.LongTensor] | None:
    """`_encode` of `text` piece by piece; None when the text has no place to cut, the tokenizer gives no offsets,
    or a cut changes the tokens around it (a tokenizer whose tokens span words): then the text is tokenized whole."""
    cuts, position = [], PIECE_CHARS
    while (match := _WORD_START.search(text, position)) is not None:
        cuts.append(match.start())
        position = match.start() + PIECE_CHARS
    if not cuts:
        return None
    ids, offsets = [], []
    for start, end in zip([0, *cuts], [*cuts, len(text)]):
        piece_ids, piece_offsets = _encode(tokenizer, text[start:end])
        if piece_offsets is None:
            return None
        ids.append(piece_ids)
        offsets.append(piece_offsets + start)
    ids, offsets = torch.cat(ids), torch.cat(offsets)
    for cut in cuts:
        first = max(0, cut - SEAM_CHARS)
        across_ids, across_offsets = _encode(tokenizer, text[first : cut + SEAM_CHARS])
        if not _same_near(cut, (ids, offsets), (across_ids, across_offsets + first)):
            return None
    return ids, offsets


def _same_near(cut: int, encoded, reference) -> bool:
    """Whether two encodings have the same tokens (ids and offsets) within SEAM_COMPARED characters of `cut`."""
    near = []
    for ids, offsets in (encoded, reference):
        keep = (offsets[:, 0] >= cut - SEAM_COMPARED) & (offsets[:, 1] <= cut + SEAM_COMPARED)
        near.append((ids[keep], offsets[keep]))
    (ids, offsets), (reference_ids, reference_offsets) = near
    return bool(ids.numel()) and torch.equal(ids, reference_ids) and torch.equal(offsets, reference_offsets)


def _chunk_chars(offsets: torch.LongTensor, chunk_size: int) -> tuple[tuple[int, int], ...]:
    """Per chunk of `chunk_size` tokens, the characters its tokens cover (as `chunk_char_spans` over a list)."""
    return tuple(
        (int(part[:, 0].min()), int(part[:, 1].max())) for part in torch.split(offsets, chunk_size) if len(part)
    )


def compress_text(model, tokenizer, text: str, source: str = "the document", **compress_kwargs) -> LycheeMemoryBank:
    """`model.compress` of `text`, with the text kept in the bank (`bank.document_text`) for evidence.

    Args:
        model (`LycheeMemoryForCausalLM`): the model.
        tokenizer: its tokenizer (a fast one gives the character offsets evidence needs).
        text (`str`): the document.
        source (`str`): how an error names the document (e.g. "context report.txt").
        **compress_kwargs: for `model.compress` (`show_progress`, `bank_dtype`, `offload_to_cpu`, `bank_dir`).
    """
    ids, document = encode_document(tokenizer, text, model.config.chunk_size, source)
    return _with_text(model.compress(ids, **compress_kwargs), document)


@contextlib.contextmanager
def text_bank(
    model,
    tokenizer,
    text: str,
    source: str = "the document",
    max_memory: int = DEFAULT_MAX_BANK_MEMORY,
    bank_dtype: str | None = None,
    show_progress: bool | None = None,
) -> Iterator[LycheeMemoryBank]:
    """A one-off bank of `text` (kept with it for evidence) for the `with` block, whose host memory does not grow
    with the document: `compress_text` in memory when the blocks take at most `max_memory` bytes, else the blocks
    are streamed into a temporary folder as they are made (`model.compress(..., bank_dir=...)`) and read back from
    disk one at a time. The folder (under `TMPDIR`) is removed when the block ends, also on an error or Ctrl-C.

    Args:
        model (`LycheeMemoryForCausalLM`), tokenizer, text, source: as for `compress_text`.
        max_memory (`int`): bytes of blocks kept in memory at most (0: always on disk).
        bank_dtype (`str`, *optional*): the blocks' storage format, in memory and on disk alike, so both answer
            the same (default: float16 for float32 models, else the model's dtype).
        show_progress (`bool`, *optional*): a progress bar over the chunks (default: on for 8+ chunks).

    Raises:
        `MemoryBankError` when the bank would go to disk but the temporary folder's disk has no room for it.
    """
    from .bank_tools import bank_bytes_per_block

    ids, document = encode_document(tokenizer, text, model.config.chunk_size, source)
    bank_dtype = bank_dtype or default_bank_dtype(model.dtype)
    size = -(-ids.shape[1] // model.config.chunk_size) * bank_bytes_per_block(model, bank_dtype)
    if size <= max_memory:
        yield _with_text(model.compress(ids, show_progress=show_progress, bank_dtype=bank_dtype), document)
        return
    with tempfile.TemporaryDirectory(prefix="lychee-hf-bank-") as folder:
        _check_room(Path(folder), size)
        bank = model.compress(ids, show_progress=show_progress, bank_dtype=bank_dtype, bank_dir=folder)
        del ids
        try:
            yield _with_text(bank, document)
        finally:
            bank.close()  # no shard left open while the folder goes


def _with_text(bank: LycheeMemoryBank, document: DocumentText | None) -> LycheeMemoryBank:
    if document is not None:
        bank.attach_text(document.text, list(document.chars))
    return bank


def _check_room(folder: Path, size: int) -> None:
    free = shutil.disk_usage(folder).free
    if size > free:
        raise MemoryBankError(
            f"this document's bank takes {size / 2**30:.1f} GiB and goes to disk, but {folder.parent} has "
            f"{free / 2**30:.1f} GiB free: point TMPDIR to a disk with room, keep the bank in memory "
            "(--max-bank-memory / max_memory), or store it smaller (--bank-dtype int8)"
        )
