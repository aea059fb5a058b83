"""Answer text as it is generated, per row of a batch shared by several requests, and the server-sent events that
carry it."""

import json
from collections.abc import Callable

from transformers.generation.streamers import BaseStreamer


class RowStreamer(BaseStreamer):
    """A `generate` streamer for a batch: each row's new answer text goes to that row's listener (None: the row's
    request does not stream). Text is sent once it decodes whole (no half of a multi-byte character), without
    leading spaces (as the final answer is stripped); a row ends at its first stop id.

    Args:
        tokenizer: decodes the answer ids.
        listeners (`list`): per row, a callable taking the new text, or None.
        stop_ids (`list[int]`): ids that end an answer.
    """

    def __init__(self, tokenizer, listeners: list[Callable[[str], None] | None], stop_ids: list[int]):
        self.tokenizer, self.listeners, self.stop_ids = tokenizer, listeners, set(stop_ids)
        self.ids = [[] for _ in listeners]
        self.sent = ["" for _ in listeners]
        self.ended = [listener is None for listener in listeners]
        self._prompt_seen = False

    def put(self, value) -> None:
        if not self._prompt_seen:  # generate hands over the prompt first
            self._prompt_seen = True
            return
        for row, token in enumerate(value.reshape(-1).tolist()):
            if self.ended[row]:
                continue
            if token in self.stop_ids:
                self._send(row, final=True)
                continue
            self.ids[row].append(token)
            self._send(row)

    def end(self) -> None:
        for row in range(len(self.listeners)):
            if not self.ended[row]:
                self._send(row, final=True)

    def _send(self, row: int, final: bool = False) -> None:
        """Sends the row's new text; holds back a half-decoded character unless the answer has ended."""
        self.ended[row] = final
        text = self.tokenizer.decode(self.ids[row], skip_special_tokens=True).lstrip()
        if (text.endswith("\ufffd") and not final) or not text.startswith(self.sent[row]):
            return
        new, self.sent[row] = text[len(self.sent[row]) :], text
        if new:
            self.listeners[row](new)


def sse(event: str, data) -> str:
    """One server-sent event."""
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def sse_data(data) -> str:
    """One unnamed server-sent event (OpenAI's stream format); `data` as text when it is a string."""
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"
