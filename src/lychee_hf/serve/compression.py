"""Background compression: each uploaded document is compressed into its bank by one worker thread, a step at a
time, resumably; documents left unfinished in the store (a stop, a `kill -9`, another server process that died)
are picked up again.

A document is compressed by the process holding its lock (`DocumentStore.compression_lock`): several servers on
one store never compress the same document at once, and a document is served only once its bank is complete.
"""

import errno
import logging
import queue
import shutil
import threading

import torch

from ..bank_tools import compress_to_disk
from ..modeling import MANIFEST_NAME
from ..text_banks import encode_document
from .store import UNFINISHED, DocumentStore

log = logging.getLogger("lychee_hf.serve")


class Stopped(Exception):
    """Compression stopped between two steps: the server is stopping, or the document was deleted."""


class _StepModel:
    """The model as `compress_to_disk` sees it: every compression step waits for the model's turn (questions go
    first), and stops the compression when `should_stop()` says so (the steps written so far stay: resumable)."""

    def __init__(self, model, turns, should_stop):
        self._model, self._turns, self._should_stop = model, turns, should_stop

    def __getattr__(self, name: str):
        return getattr(self._model, name)

    def compress(self, *args, **kwargs):
        if self._should_stop():
            raise Stopped
        with self._turns.compressing(), torch.inference_mode():
            return self._model.compress(*args, **kwargs)


class CompressionWorker:
    """Compresses queued documents of `store` in a background thread.

    Args:
        store (`DocumentStore`): where the texts and banks are.
        model / tokenizer: the loaded model and its tokenizer (`tokenizer_lock` guards encoding).
        turns (`ModelTurns`): the model's turns, shared with the answer scheduler.
        chunks_per_write (`int`): chunks per compression step.
        metrics (`ServeMetrics`): counts jobs.
        scan_seconds (`float`): how often an idle worker looks for unfinished documents in the store.
    """

    def __init__(
        self,
        store: DocumentStore,
        model,
        tokenizer,
        tokenizer_lock,
        turns,
        chunks_per_write,
        metrics,
        scan_seconds: float = 2.0,
    ):
        self.store, self.model, self.tokenizer = store, model, tokenizer
        self.tokenizer_lock, self.turns, self.metrics = tokenizer_lock, turns, metrics
        self.chunks_per_write, self.scan_seconds = chunks_per_write, scan_seconds
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lychee-compression", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, document_id: str) -> None:
        self._queue.put(document_id)

    def stop(self, timeout: float = 30.0) -> None:
        """Stops after the current step (the document resumes on the next start)."""
        self._stopping.set()
        self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                document_id = self._queue.get(timeout=self.scan_seconds)
            except queue.Empty:
                for document_id in self.store.unfinished():  # left by a stop, a crash, or another process
                    if self._stopping.is_set():
                        break
                    self.compress(document_id)
                continue
            if document_id is not None:
                self.compress(document_id)

    def compress(self, document_id: str) -> None:
        """Compresses (or resumes) one document unless another process is on it or it is done."""
        try:
            with self.store.compression_lock(document_id) as held:
                record = self.store.record(document_id) if held else None
                if record is not None and record.status in UNFINISHED:
                    self._compress(document_id)
        except Exception:  # never lose the worker; the document's own failure was recorded
            log.exception("compression of %s failed", document_id)

    def _compress(self, document_id: str) -> None:
        store = self.store
        store.update(document_id, status="compressing")
        self.metrics.compressions_running.inc()
        outcome = "failed"
        bank_dir = store.bank_dir(document_id)
        if not (bank_dir / MANIFEST_NAME).is_file():  # stopped before its first manifest: start afresh
            shutil.rmtree(bank_dir, ignore_errors=True)
        try:
            with self.tokenizer_lock:
                ids, text = encode_document(
                    self.tokenizer, store.source_text(document_id), self.model.config.chunk_size
                )
            stepper = _StepModel(
                self.model, self.turns, lambda: self._stopping.is_set() or not store.exists(document_id)
            )
            compress_to_disk(
                stepper,
                ids,
                bank_dir,
                self.chunks_per_write,
                show_progress=False,
                resume=True,
                text=text,
            )
            outcome = "ready" if store.update(document_id, status="ready") else "deleted"
        except Stopped:
            outcome = "deleted" if not store.exists(document_id) else "interrupted"
        except Exception as error:
            shutil.rmtree(bank_dir, ignore_errors=True)  # a retry starts afresh
            store.update(document_id, status="failed", error=failure_message(error))
            log.warning("compression of %s failed: %s", document_id, error)
        finally:
            self.metrics.compressions_running.dec()
            self.metrics.compressions.labels(outcome).inc()
        if outcome == "deleted":
            store.remove_folder(document_id)


def failure_message(error: Exception) -> str:
    """What a failed document's status says: a full disk named as such, with the fix."""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return (
            "the server's disk is full: the document could not be compressed (nothing of it was kept); upload it "
            "again once space is freed"
        )
    return str(error) or type(error).__name__
