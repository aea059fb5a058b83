"""File locks between server processes sharing one store: the index's (a writer waits its turn) and each
document's compression lock (a second compressor does not wait: it leaves the document to the first).

`flock` locks belong to the open file: the operating system drops them when the process ends, however it ends, so
a server killed mid-compression leaves no stale lock. (POSIX only, as the server is.)
"""

import contextlib
import fcntl
import os
from pathlib import Path


@contextlib.contextmanager
def exclusive(path: Path, wait: bool = True):
    """Holds an exclusive lock on `path` (created if missing) for the `with` block.

    Yields:
        `True` when the lock is held; with `wait=False`, `False` at once when another process holds it.
    """
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(handle)  # closing the file releases its lock
