"""Small file helpers shared by the CLI, the data loaders and the scale-out paths: JSONL lines read one at a time
with their own errors, an output file checked before any work is done, writes that replace a file only once its
new content is complete, and a folder lock (one writer at a time)."""

import codecs
import contextlib
import json
import os
import socket
import tempfile
import time
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
    replacement characters) or not a JSON object gets an `error` instead of stopping the others. A byte-order mark
    before the first line is dropped; CRLF line ends are read as LF.

    Raises:
        `FileNotFoundError` if `path` is missing; `IsADirectoryError` for a folder; `ValueError` for something that
        is not a regular file (a pipe, a device), an unknown encoding, a file without lines, or a file in an
        encoding whose line ends are not the byte `\\n` (UTF-16, UTF-32) that does not decode as a whole.
    """
    path = Path(path)
    check_input_file(path, what, "a JSONL file")
    try:
        encoding = codecs.lookup(encoding).name
    except LookupError:
        raise ValueError(f"unknown text encoding {encoding!r}: name one Python knows (e.g. utf-8, latin-1)") from None
    lines = []
    for number, text in _numbered_lines(path, encoding):
        if isinstance(text, UnicodeDecodeError):
            lines.append(JsonLine(number, None, f"bad encoding: not {encoding} at byte {text.start}"))
            continue
        if number == 1:
            text = text.removeprefix("\ufeff")
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as error:
            lines.append(JsonLine(number, None, f"not valid JSON ({error.msg})"))
            continue
        except ValueError:  # an integer of more digits than Python converts (sys.get_int_max_str_digits)
            lines.append(JsonLine(number, None, "not valid JSON (a number with too many digits)"))
            continue
        except RecursionError:
            lines.append(JsonLine(number, None, "not valid JSON (nested too deeply)"))
            continue
        if not isinstance(record, dict):
            lines.append(JsonLine(number, None, f"not a JSON object (got {type(record).__name__})"))
            continue
        lines.append(JsonLine(number, record))
    if not lines:
        raise ValueError(f"{what} file {path} holds no lines")
    return lines


def _numbered_lines(path: Path, encoding: str):
    """(1-based number, text or the `UnicodeDecodeError` of that line) for every line of `path`. Lines are split on
    the byte `\\n` and decoded one by one (a bad line fails alone) where the encoding writes `\\n` as that byte;
    otherwise (UTF-16, UTF-32) the whole file is decoded first."""
    data = path.read_bytes()
    if "\n\n".encode(encoding).endswith(b"\n\n"):
        for number, raw in enumerate(data.split(b"\n"), start=1):
            if raw.strip():
                try:
                    yield number, raw.decode(encoding)
                except UnicodeDecodeError as error:
                    yield number, error
        return
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not valid {encoding} (at byte {error.start}): pass its encoding") from None
    yield from enumerate(text.split("\n"), start=1)


def check_input_file(path: Path, what: str, expected: str) -> None:
    """Refuses an input that is missing, a folder, or not a regular file (a pipe or device is read only once),
    naming `what` it is and the `expected` kind of file."""
    if path.is_dir():
        raise IsADirectoryError(f"{what} {path} is a folder: pass {expected}")
    if not path.exists():
        raise FileNotFoundError(f"{what} file {path} does not exist")
    if not path.is_file():
        raise ValueError(f"{what} {path} is not a regular file (a pipe or a device): save it to a file and pass that")


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


class FolderLockedError(RuntimeError):
    """Another process holds the lock of the folder a command would write."""


@contextlib.contextmanager
def folder_lock(folder: str | Path, name: str = ".lock"):
    """Holds an exclusive lock on `folder/name` for the `with` block, so that one process at a time writes `folder`.

    The operating system releases the lock when the process ends, however it ends (no stale lock after a crash);
    the file itself stays, holding who took it last (removing it would let two writers lock two different files).

    Raises:
        `FolderLockedError` at once, naming the lock file and the process holding it, when another process does;
        `PermissionError` naming `folder` when it cannot be written.
    """
    folder, path = Path(folder), Path(folder) / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+", encoding="utf-8")
    except PermissionError as error:
        raise PermissionError(
            f"cannot write in {folder} ({error.strerror}): choose a folder you may write in"
        ) from None
    with handle:
        handle.seek(0)
        try:
            _lock_file(handle)
        except (BlockingIOError, PermissionError):  # held elsewhere (flock: EWOULDBLOCK; msvcrt: EACCES)
            raise FolderLockedError(
                f"{folder} is being written by another run ({_lock_holder(handle)}; lock file {path}): wait for it "
                "to finish, or choose another folder"
            ) from None
        handle.seek(0)
        handle.truncate()
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        handle.write(f"process {os.getpid()} on {socket.gethostname()} since {started}\n")
        handle.flush()
        yield path


def _lock_file(handle) -> None:
    """A non-blocking exclusive lock on the open file (`flock`; `msvcrt.locking` where there is no `fcntl`)."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        return
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


def _lock_holder(handle) -> str:
    try:
        handle.seek(0)
        return handle.read().strip() or "process unknown"
    except OSError:
        return "process unknown"
