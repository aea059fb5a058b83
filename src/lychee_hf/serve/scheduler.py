"""The answer scheduler: questions arriving within a short window share one `generate` call, over one bank or
several (one bank per row), in one thread that owns the model's answering turn. Never a process per request.

Questions with the same generation options are batched together (up to `max_batch`); each batch reads every
bank it uses through `SharedBlocks`, so questions over the same document read each block once per batch. A batch
the model refuses (a question too long for the context, say) is answered one question at a time, so only the
offending question gets the error.
"""

import logging
import math
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..modeling import MANIFEST_NAME, LycheeMemoryBank, left_pad, stop_and_pad_ids
from ..scale.questions import SharedBlocks
from .streaming import RowStreamer

log = logging.getLogger("lychee_hf.serve")
OPEN_BANKS = 32  # banks kept open between batches (by folder and manifest time)


class QueueFull(Exception):
    """More questions are waiting than the server allows; `retry_after` seconds is a fair wait."""

    def __init__(self, retry_after: int):
        super().__init__(f"the server has too many questions waiting: retry in {retry_after} s")
        self.retry_after = retry_after


class ShuttingDown(Exception):
    """The server stopped before the question was answered."""


class BankUnavailable(Exception):
    """The question's bank cannot be read (deleted meanwhile, or made by another model)."""


@dataclass
class Question:
    """One question waiting for an answer.

    Attributes:
        bank_dir (`Path`): the bank to answer over (a complete one).
        text (`str`): the question.
        options (`tuple`): sorted `(name, value)` generation options (`GenerationOptions.as_kwargs`).
        on_token (`callable`, *optional*): receives the answer's text as it is generated.
        future (`Future`): resolves to the answer (`answer_dict`) or the error.
    """

    bank_dir: Path
    text: str
    options: tuple = ()
    on_token: Callable[[str], None] | None = None
    future: Future = field(default_factory=Future)


def answer_dict(trace, tokenizer) -> dict:
    """`LycheeTrace.to_dict`, the one trace schema, without the prompts' token ids (their counts stay)."""
    result = trace.to_dict(tokenizer)
    del result["answer_prompt_ids"]
    for record in result["trace"]:
        del record["prompt_ids"]
    return result


class AnswerScheduler:
    """Collects questions for `window_s` (or until `max_batch` wait) and answers them in shared `generate` calls.

    Args:
        model / tokenizer: the loaded model and tokenizer (`tokenizer_lock` guards encoding).
        turns (`ModelTurns`): the model's turns (compression steps wait for answers).
        limits (`ServeLimits`): `max_queue`, `max_batch`, `batch_window_ms`.
        metrics (`ServeMetrics`): questions, batch sizes, queue depth.
    """

    def __init__(self, model, tokenizer, tokenizer_lock, turns, limits, metrics):
        self.model, self.tokenizer, self.tokenizer_lock, self.turns = model, tokenizer, tokenizer_lock, turns
        self.limits, self.metrics = limits, metrics
        self.fingerprint = model.memory_fingerprint()
        self._queue: queue.Queue[Question] = queue.Queue()
        self._pending = 0
        self._lock = threading.Lock()
        self._batch_seconds = 1.0  # running estimate, for Retry-After
        self._banks: OrderedDict[tuple, LycheeMemoryBank] = OrderedDict()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lychee-answers", daemon=True)

    @property
    def pending(self) -> int:
        return self._pending

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finishes the batch in progress; questions still waiting get `ShuttingDown`."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        while True:
            try:
                question = self._queue.get_nowait()
            except queue.Empty:
                break
            if question.future.set_running_or_notify_cancel():
                question.future.set_exception(ShuttingDown("the server is stopping: ask again"))

    def submit(self, questions: list[Question]) -> None:
        """Queues the questions of one request, all or none.

        Raises:
            `QueueFull` when they would make the queue longer than `max_queue`.
        """
        with self._lock:
            if self._pending + len(questions) > self.limits.max_queue:
                batches = math.ceil((self._pending + len(questions)) / self.limits.max_batch)
                raise QueueFull(max(1, math.ceil(batches * self._batch_seconds)))
            self._pending += len(questions)
            for question in questions:
                self._queue.put(question)
        self.metrics.queue_depth.set(self._pending)

    # ------------------------------------------------------------------------------------------- the thread
    def _run(self) -> None:
        while not self._stopping.is_set():
            batch = self._collect()
            groups: dict[tuple, list[Question]] = {}
            for question in batch:
                groups.setdefault(question.options, []).append(question)
            for group in groups.values():
                live = [q for q in group if q.future.set_running_or_notify_cancel()]  # skips timed-out requests
                if live:
                    self._answer(live)

    def _collect(self) -> list[Question]:
        """The first waiting question, and those arriving within the window after it (up to `max_batch`)."""
        try:
            batch = [self._queue.get(timeout=0.2)]
        except queue.Empty:
            return []
        closes = time.monotonic() + self.limits.batch_window_ms / 1000
        while len(batch) < self.limits.max_batch:
            try:
                batch.append(self._queue.get(timeout=max(0.0, closes - time.monotonic())))
            except queue.Empty:
                break
        with self._lock:
            self._pending -= len(batch)
        self.metrics.queue_depth.set(self._pending)
        return batch

    def _answer(self, questions: list[Question]) -> None:
        """Answers the questions in one call; a refused batch is answered one question at a time."""
        readable = []
        for question in questions:
            try:
                self._open(question.bank_dir)
                readable.append(question)
            except (OSError, ValueError) as error:
                question.future.set_exception(BankUnavailable(str(error)))
        if not readable:
            return
        questions = readable
        try:
            results = self._generate(questions)
        except ValueError as error:  # the model refused the inputs (too long, an option the model cannot use)
            if len(questions) > 1:
                for question in questions:
                    self._answer([question])
                return
            questions[0].future.set_exception(error)
            return
        except Exception as error:  # never lose the thread; the requests get the error
            log.exception("a batch of %d questions failed", len(questions))
            for question in questions:
                if not question.future.done():
                    question.future.set_exception(error)
            return
        for question, result in zip(questions, results):
            question.future.set_result(result)

    def _generate(self, questions: list[Question]) -> list[dict]:
        started = time.perf_counter()
        shared = {}
        for question in questions:
            if question.bank_dir not in shared:
                shared[question.bank_dir] = SharedBlocks(self._open(question.bank_dir))
        with self.tokenizer_lock:
            encoded = [self.tokenizer.encode(q.text, add_special_tokens=False) for q in questions]
        if not all(encoded):
            raise ValueError("the question is empty after tokenization: ask with words")
        stop_ids, pad_id = stop_and_pad_ids(self.model.generation_config)
        ids, mask = left_pad([torch.tensor(row, dtype=torch.long) for row in encoded], pad_id)
        streamer = self._streamer(questions, stop_ids)
        with self.turns.answering(), torch.inference_mode():
            output = self.model.generate(
                input_ids=ids.to(self.model.device),
                attention_mask=mask.to(self.model.device),
                bank=[shared[q.bank_dir] for q in questions],
                return_dict_in_generate=True,
                show_progress=False,
                streamer=streamer,
                tokenizer=self.tokenizer,  # the first stage's index reads the question's words
                **dict(questions[0].options),
            )
        results = [answer_dict(trace, self.tokenizer) for trace in output.trace]
        if streamer is None:  # the answers could still become "not found": they are streamed whole, now
            for question, result in zip(questions, results):
                if question.on_token is not None and result["answer"]:
                    question.on_token(result["answer"])
        seconds = time.perf_counter() - started
        self._batch_seconds = 0.8 * self._batch_seconds + 0.2 * seconds
        self.metrics.questions.inc(len(questions))
        self.metrics.batch_size.observe(len(questions))
        return results

    def _streamer(self, questions: list[Question], stop_ids: list[int]) -> RowStreamer | None:
        """A streamer for the rows that stream, unless the model may replace an answer after it was generated (by
        "not found", or by a span copied from the evidence): then answers are sent whole once final."""
        config = self.model.config
        if not any(q.on_token for q in questions) or config.answer_not_found or config.answer_from == "evidence":
            return None
        return RowStreamer(self.tokenizer, [q.on_token for q in questions], stop_ids)

    def _open(self, bank_dir: Path) -> LycheeMemoryBank:
        """The bank in `bank_dir`, checked against the model once and kept open for the next batches."""
        key = (bank_dir, (bank_dir / MANIFEST_NAME).stat().st_mtime_ns)
        if key not in self._banks:
            bank = LycheeMemoryBank.from_pretrained(bank_dir)
            bank.check_compatible(self.fingerprint)
            self._banks[key] = bank
            while len(self._banks) > OPEN_BANKS:
                self._banks.popitem(last=False)
        self._banks.move_to_end(key)
        return self._banks[key]
