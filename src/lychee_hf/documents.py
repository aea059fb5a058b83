"""Reading the user's context files: plain text, or JSONL with one document per line."""

import json
from pathlib import Path

from .files import check_input_file

DEFAULT_FIELD = "context"


def read_documents(path: str | Path, field: str = DEFAULT_FIELD, encoding: str = "utf-8") -> list[str]:
    """The documents in `path`: the whole file for text, one per line (`field` of each object) for `.jsonl`. A
    byte-order mark at the start is dropped.

    Args:
        path (`str` or `Path`): the file.
        field (`str`): the JSONL field holding each document.
        encoding (`str`): the file's text encoding; bytes that do not decode are an error, never replaced.

    Raises:
        `FileNotFoundError` if the file is missing; `IsADirectoryError` for a folder; `ValueError` for a pipe or
        device, a binary file, text that is not in `encoding`, an empty context, a malformed line, a line without
        `field`, or a `field` other than the default for a plain-text file (it has no fields).
    """
    path = Path(path)
    check_input_file(path, "context", "a text or .jsonl file")
    if path.suffix != ".jsonl" and field != DEFAULT_FIELD:
        raise ValueError(f"--field {field} names a JSONL field, but {path} is plain text (not .jsonl): drop --field")
    text = decode_text(path.read_bytes(), path, encoding)
    if path.suffix != ".jsonl":
        if not text.strip():
            raise ValueError(f"context file {path} is empty")
        return [text]
    documents = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number} is not valid JSON ({error.msg})") from error
        value = record.get(field) if isinstance(record, dict) else None
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{path}:{number} has no non-empty string field {field!r} (choose it with --field)")
        documents.append(value)
    if not documents:
        raise ValueError(f"context file {path} holds no documents")
    return documents


def decode_text(data: bytes, path: Path, encoding: str) -> str:
    """`data` decoded strictly (a leading byte-order mark dropped): a binary file or text in another encoding is
    refused with the fix."""
    if b"\x00" in data[:8192]:
        raise ValueError(f"context file {path} looks binary (it holds NUL bytes): pass a plain-text or .jsonl file")
    try:
        return data.decode(encoding).removeprefix("\ufeff")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"context file {path} is not valid {encoding} (byte 0x{data[error.start]:02x} at offset {error.start}): "
            "pass its encoding, e.g. --encoding latin-1"
        ) from None
    except LookupError:
        raise ValueError(
            f"unknown text encoding {encoding!r}: use a Python codec name such as utf-8 or latin-1"
        ) from None
