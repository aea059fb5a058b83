"""Small file helpers shared by the CLI, the data loaders and the scale-out paths: JSONL lines read one at a time
with their own errors, an output file checked before any work is done, and writes that replace a file only once
its new content is complete."""

import codecs
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass
class JsonLine:
    """One non-blank line of a JSONL file: its 1-based number, and the object or why there is none."""

    number: int
    record: dict | None
    error: str | None = None

    def checked(self, path: str | Path) -> dict:
        """The object, or a `ValueError` naming `path:number` and what is wrong with the line."""
        if self.error is None:
            return self.record
        raise ValueError(f"{path}:{self.number}{' is ' if self.error.startswith('not ') else ': '}{self.error}")


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


def check_output_file(path: str | Path, overwrite: bool = False, option: str = "--json") -> None:
    """Refuses an output file that exists (unless `overwrite`), is a folder, sits in a missing folder or cannot be
    written, before any work is done; `option` is the flag that named it, for the message."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{option} {path} is a folder: name a file")
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{path} exists: pass --overwrite to replace it, or name a new file (nothing is overwritten)"
        )
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"{option} {path}: folder {folder} does not exist")
    try:  # the only reliable writability test (permissions, read-only mounts, root)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".lychee-hf-write-test-"):
            pass
    except OSError as error:
        raise PermissionError(f"{option} {path}: cannot write in {folder} ({error.strerror})") from None


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
