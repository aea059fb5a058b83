"""One model, two kinds of work: answer batches and compression steps take turns; questions go first.

The model is used by one thread at a time (its role adapters are switched per call), so a long compression is
done one step (`ServeLimits.chunks_per_write` chunks) per turn, and questions waiting for the model get it before
the next step. A waiting compression still gets a turn after `ANSWER_TURNS` answer batches, so a steady stream of
questions never stops uploads from becoming ready.
"""

import contextlib
import threading

ANSWER_TURNS = 4


class ModelTurns:
    """Whose turn the model is: answering (first) or compressing."""

    def __init__(self):
        self._changed = threading.Condition()
        self._busy = False
        self._answers_waiting = 0
        self._compression_waiting = False
        self._answers_since_compression = 0

    @contextlib.contextmanager
    def answering(self):
        with self._changed:
            self._answers_waiting += 1
            while self._busy or (self._compression_waiting and self._answers_since_compression >= ANSWER_TURNS):
                self._changed.wait()
            self._answers_waiting -= 1
            self._answers_since_compression += 1
            self._busy = True
        try:
            yield
        finally:
            self._release()

    @contextlib.contextmanager
    def compressing(self):
        with self._changed:
            self._compression_waiting = True
            while self._busy or (self._answers_waiting and self._answers_since_compression < ANSWER_TURNS):
                self._changed.wait()
            self._compression_waiting = False
            self._answers_since_compression = 0
            self._busy = True
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        with self._changed:
            self._busy = False
            self._changed.notify_all()
