"""The service behind the HTTP routes: the model (loaded in the background), the document store, the compression
worker and the answer scheduler. Routes call these methods and turn their errors into responses; the answers come
from the library's `generate`, as the CLI's and the Python API's do."""

import asyncio
import logging
import threading
from pathlib import Path

from .compression import CompressionWorker
from .errors import BadRequest, Conflict, Forbidden, NotFound, TimedOut, TooLarge, TooManyRequests, Unavailable
from .limits import ServeLimits
from .metrics import ServeMetrics
from .scheduler import AnswerScheduler, BankUnavailable, Question, QueueFull, ShuttingDown
from .store import DocumentLimitReached, DocumentRecord, DocumentStore, text_sha256
from .turns import ModelTurns

log = logging.getLogger("lychee_hf.serve")


class Service:
    """Everything a server holds.

    Args:
        model_path (`str`, *optional*): checkpoint folder or Hub id (default: the embedded model).
        banks_dir (`str` or `Path`): the document store.
        limits (`ServeLimits`): the server's limits.
        loaded (`tuple`, *optional*): an already loaded `(model, tokenizer)` instead of `model_path`.
        dtype (`str`, *optional*): the model's dtype when loading.
    """

    def __init__(self, model_path, banks_dir, limits: ServeLimits, loaded=None, dtype: str | None = None):
        self.model_path, self.limits, self.dtype, self._loaded = model_path, limits, dtype, loaded
        self.store = DocumentStore(banks_dir)
        self.metrics = ServeMetrics()
        self.metrics.count_documents(self.store.statuses)
        self.model = self.tokenizer = self.scheduler = self.worker = None
        self.load_error: str | None = None
        self.turns, self.tokenizer_lock = ModelTurns(), threading.Lock()
        self._ready = threading.Event()
        self._stopping = False

    @property
    def model_name(self) -> str:
        return Path(self.model_path).name if self.model_path else "lychee-hf-default"

    # ------------------------------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Loads the model in a background thread (the server answers `/readyz` with 503 meanwhile)."""
        self.store.remove_orphans()
        threading.Thread(target=self._load, name="lychee-load", daemon=True).start()

    def _load(self) -> None:
        try:
            if self._loaded is not None:
                self.model, self.tokenizer = self._loaded
            else:
                from ..loading import load_pretrained

                self.model, self.tokenizer = load_pretrained(self.model_path, self.dtype, quiet=True)
            self.scheduler = AnswerScheduler(
                self.model, self.tokenizer, self.tokenizer_lock, self.turns, self.limits, self.metrics
            )
            self.worker = CompressionWorker(
                self.store, self.model, self.tokenizer, self.tokenizer_lock, self.turns,
                self.limits.chunks_per_write, self.metrics,
            )  # fmt: skip
        except Exception as error:
            self.load_error = f"the model failed to load: {error}"
            log.exception("the model failed to load")
            return
        if self._stopping:  # stopped while loading
            return
        self.scheduler.start()
        self.worker.start()
        for document_id in self.store.unfinished():  # cut short by a stop or a crash: resumed first
            self.worker.submit(document_id)
        self._ready.set()
        self.metrics.ready.set(1)
        log.info("model %s loaded: ready", self.model_name)

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    def check_ready(self) -> None:
        if not self.ready:
            raise Unavailable(self.load_error or "the model is still loading: retry shortly")

    def stop(self) -> None:
        """Stops the workers after their current step or batch (unfinished documents resume on the next start)."""
        self._stopping = True
        if self.worker is not None:
            self.worker.stop()
        if self.scheduler is not None:
            self.scheduler.stop()

    # ------------------------------------------------------------------------------------------- documents
    def add_document(self, owner: str, text: str, name: str | None = None) -> tuple[dict, bool]:
        """Stores a document and queues its compression: `(document, created)`; the same text uploaded again by
        the same owner is the same document."""
        self.check_ready()
        size = len(text.encode("utf-8"))
        if size > self.limits.max_upload_bytes:
            raise TooLarge(
                f"the document has {size} bytes, more than this server takes ({self.limits.max_upload_bytes})"
            )
        if not text.strip():
            raise BadRequest("the document is empty")
        existing = self.store.find(owner, text_sha256(text))
        if existing is None or existing.status == "failed":
            with self.tokenizer_lock:
                tokens = len(self.tokenizer.encode(text, add_special_tokens=False))
            if tokens > self.limits.max_document_tokens:
                raise TooLarge(
                    f"the document has {tokens} tokens, more than this server takes ({self.limits.max_document_tokens})"
                )
            if tokens == 0:
                raise BadRequest("the document is empty after tokenization")
            blocks = -(-tokens // self.model.config.chunk_size)
            try:
                existing, queue = self.store.add(
                    owner, text, tokens, blocks, self.limits.max_documents_per_key, name, self._disk_allowance()
                )
            except DocumentLimitReached as error:
                raise Forbidden(str(error)) from None
            if queue:
                self.worker.submit(existing.id)
            return self._public(existing), queue
        return self._public(existing), False

    def _disk_allowance(self) -> tuple[int, int]:
        """(bytes per block of the banks this server writes, bytes of banks a key may keep)."""
        from ..bank_tools import bank_bytes_per_block

        return bank_bytes_per_block(self.model), self.limits.max_disk_bytes_per_key

    def document(self, owner: str, document_id: str) -> dict:
        return self._public(self._record(owner, document_id))

    def documents(self, owner: str) -> list[dict]:
        return [self._public(record) for record in self.store.owned(owner)]

    def delete_document(self, owner: str, document_id: str) -> None:
        if not self.store.delete(owner, document_id):
            raise NotFound(f"no document {document_id!r}")

    def document_text(self, owner: str, document_id: str) -> str:
        self._record(owner, document_id)
        try:
            return self.store.source_text(document_id)
        except OSError:  # deleted meanwhile
            raise NotFound(f"no document {document_id!r}") from None

    def _record(self, owner: str, document_id: str) -> DocumentRecord:
        record = self.store.get(owner, document_id)
        if record is None:
            raise NotFound(f"no document {document_id!r}")
        return record

    def _public(self, record: DocumentRecord) -> dict:
        return record.public(self.store.blocks_done(record))

    # ------------------------------------------------------------------------------------------- questions
    def ask(self, owner: str, document_id: str, texts: list[str], options: tuple, listeners=None) -> list[Question]:
        """Queues questions over one of the owner's documents; await `answers(questions)` for the results.

        Args:
            listeners (`list`, *optional*): per question, a callable receiving its answer text as it is generated.
        """
        self.check_ready()
        record = self._record(owner, document_id)
        if record.status != "ready":
            detail = f": {record.error}" if record.error else " (GET the document for its progress)"
            raise Conflict(f"document {document_id} is {record.status}, not ready{detail}")
        self._check_questions(texts, dict(options))
        listeners = listeners or [None] * len(texts)
        bank_dir = self.store.bank_dir(document_id)
        questions = [Question(bank_dir, text, options, listener) for text, listener in zip(texts, listeners)]
        try:
            self.scheduler.submit(questions)
        except QueueFull as error:
            raise TooManyRequests(str(error), error.retry_after) from None
        return questions

    def _check_questions(self, texts: list[str], options: dict) -> None:
        limits = self.limits
        if not texts:
            raise BadRequest("no question given")
        if len(texts) > limits.max_questions_per_request:
            raise BadRequest(
                f"{len(texts)} questions in one request; this server takes {limits.max_questions_per_request}"
            )
        for text in texts:
            if not text.strip():
                raise BadRequest("a question is empty")
            if len(text) > limits.max_question_chars:
                raise BadRequest(
                    f"a question has {len(text)} characters; this server takes {limits.max_question_chars}"
                )
        if options.get("max_new_tokens", 0) > limits.max_new_tokens:
            raise BadRequest(
                f"max_new_tokens {options['max_new_tokens']} is above this server's {limits.max_new_tokens}"
            )

    async def answers(self, questions: list[Question]) -> list[dict]:
        """The questions' answers, within the request time limit (504 after; questions not started are dropped)."""
        futures = [asyncio.wrap_future(question.future) for question in questions]
        try:
            return await asyncio.wait_for(asyncio.gather(*futures), self.limits.request_timeout_s)
        except asyncio.TimeoutError:
            for question in questions:
                question.future.cancel()
            raise TimedOut(f"no answer within {self.limits.request_timeout_s} s: ask again later") from None
        except ShuttingDown as error:
            raise Unavailable(str(error)) from None
        except BankUnavailable as error:
            raise Conflict(f"the document's bank cannot be read: {error}") from None
        except ValueError as error:
            raise BadRequest(str(error)) from None
