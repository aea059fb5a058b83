"""Small file helpers of the scale-out paths: JSONL lines read one at a time with their own errors, and writes
that replace a file only once its new content is complete."""

import codecs
import json
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass
class JsonLine:
    """One non-blank line of a JSONL file: its 1-based number, and the object or why there is none."""

    number: int
    record: dict | None
    error: str | None = None


def read_json_lines(path: str | Path, what: str, encoding: str = "utf-8") -> list[JsonLine]:
    """Every non-blank line of `path` as a `JsonLine`; a line that is not `encoding` text (never read with
    replacement characters) or not a JSON object gets an `error` instead of stopping the others.

    Raises:
        `FileNotFoundError` if `path` is missing; `ValueError` for an unknown encoding or a file without lines.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {path} does not exist")
    try:
        encoding = codecs.lookup(encoding).name
    except LookupError:
        raise ValueError(f"unknown text encoding {encoding!r}: name one Python knows (e.g. utf-8, latin-1)") from None
    lines = []
    for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError as error:
            lines.append(JsonLine(number, None, f"bad encoding: not {encoding} at byte {error.start}"))
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as error:
            lines.append(JsonLine(number, None, f"not valid JSON ({error.msg})"))
            continue
        if not isinstance(record, dict):
            lines.append(JsonLine(number, None, f"not a JSON object (got {type(record).__name__})"))
            continue
        lines.append(JsonLine(number, record))
    if not lines:
        raise ValueError(f"{what} file {path} holds no lines")
    return lines


def write_atomically(path: str | Path, text: str) -> None:
    """Writes `text` to `path` through a temporary file next to it, so a reader never sees half of it."""
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def write_json_atomically(path: str | Path, value) -> None:
    write_atomically(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")
