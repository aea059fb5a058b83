"""The document's own text beside its bank: what evidence quotes, with each block's character span.

A bank folder may hold `document.txt` (UTF-8, exactly the text that was tokenized) and, in `bank.json`, a `text`
record: `{"file": "document.txt", "sha256": ..., "chars": [[start, end], ...]}`, one `[start, end)` character span
per chunk of the document, in chunk order. The checksum proves that the text given back is the one compressed;
`chars` maps each block to the characters its tokens came from (from the tokenizer's offsets). Banks without the
record (all banks before evidence existed, or a bank compressed from token ids alone) still load; they answer
without evidence.
"""

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from .evidence_lychee import document_stems

TEXT_FILE = "document.txt"


class DocumentTextError(ValueError):
    """A document text that does not match its bank (wrong file, wrong spans)."""


@dataclass(frozen=True)
class DocumentText:
    """A document's text and each chunk's character span in it.

    Attributes:
        text (`str`): the whole document, exactly as tokenized.
        chars (`tuple[tuple[int, int], ...]`): per chunk (= block), its `[start, end)` characters in `text`.
    """

    text: str
    chars: tuple[tuple[int, int], ...]

    def __post_init__(self):
        end = 0
        for index, (start, stop) in enumerate(self.chars):
            if not (0 <= start <= stop <= len(self.text)) or start < end:
                raise DocumentTextError(
                    f"chunk {index}'s characters [{start}, {stop}) do not fit a {len(self.text)}-character text in "
                    "order: the text is not the one the bank was compressed from."
                )
            end = start

    @functools.cached_property
    def word_stems(self) -> frozenset[str]:
        """Every word stem of the text (`evidence_lychee.document_stems`), built on first use: the "not found"
        rule asks which of a question's words the document never uses, and a bank answers many questions."""
        return document_stems(self.text)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    def block_text(self, index: int) -> tuple[int, str]:
        """`(first character's offset, text)` of block `index`."""
        start, stop = self.chars[index]
        return start, self.text[start:stop]

    def record(self) -> dict:
        """The `text` entry of `bank.json`."""
        return {"file": TEXT_FILE, "sha256": self.sha256, "chars": [list(span) for span in self.chars]}


def chunk_char_spans(offsets: list[tuple[int, int]], chunk_size: int) -> list[tuple[int, int]]:
    """Per chunk of `chunk_size` tokens, the characters its tokens cover (from a fast tokenizer's offsets).

    Args:
        offsets (`list[tuple[int, int]]`): per token, its `[start, end)` characters (`return_offsets_mapping`).
        chunk_size (`int`): tokens per chunk (the model's `chunk_size`).
    """
    spans = []
    for first in range(0, len(offsets), chunk_size):
        part = offsets[first : first + chunk_size]
        spans.append((min(s for s, _ in part), max(e for _, e in part)))
    return spans


def write_text(directory: Path, document: DocumentText) -> None:
    """Writes `document.txt` atomically (flushed, then renamed)."""
    temporary = directory / (TEXT_FILE + ".tmp")
    with open(temporary, "w", encoding="utf-8", newline="") as handle:
        handle.write(document.text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, directory / TEXT_FILE)


def parse_text_record(value, where: str) -> dict | None:
    """The validated `text` record of a manifest (None when absent); raises `DocumentTextError`."""
    if value is None:
        return None
    ok = (
        isinstance(value, dict)
        and value.get("file") == TEXT_FILE
        and isinstance(value.get("sha256"), str)
        and isinstance(value.get("chars"), list)
        and all(
            isinstance(span, list) and len(span) == 2 and all(isinstance(x, int) and x >= 0 for x in span)
            for span in value["chars"]
        )
    )
    if not ok:
        raise DocumentTextError(f"{where}: the manifest's text record is invalid: recompress the document.")
    return value


def read_text(directory: Path, record: dict) -> DocumentText:
    """The document text a bank folder holds, checked against its record; raises `DocumentTextError`."""
    path = directory / TEXT_FILE
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DocumentTextError(f"{path} cannot be read ({error}): evidence is unavailable for this bank.") from error
    if hashlib.sha256(text.encode("utf-8")).hexdigest() != record["sha256"]:
        raise DocumentTextError(f"{path} is not the text this bank was compressed from (checksum mismatch).")
    return DocumentText(text, tuple(tuple(span) for span in record["chars"]))
