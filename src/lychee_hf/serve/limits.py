"""What one server allows: request sizes, documents and disk per key, queue length, time, and the batching window."""

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class ServeLimits:
    """Limits of a `lychee-hf serve` server (each one is also a `--max-...` option of the command).

    Attributes:
        max_upload_bytes (`int`): bytes of one document's text (UTF-8); a larger upload is refused (413).
        max_document_tokens (`int`): tokens of one document; a longer one is refused (413).
        max_documents_per_key (`int`): documents one API key may keep; the next upload is refused (403).
        max_disk_bytes_per_key (`int`): bytes of banks one API key may keep (a document's bank size is known from its
            token count before it is compressed); an upload that would pass it is refused (403).
        max_questions_per_request (`int`): questions in one answers request (400 beyond).
        max_question_chars (`int`): characters of one question (400 beyond).
        max_new_tokens (`int`): the most answer tokens a request may ask for (400 beyond).
        max_queue (`int`): questions waiting for the model; a request that would exceed it gets 429 + Retry-After.
        request_timeout_s (`float`): seconds a request may wait for its answers (504 after).
        batch_window_ms (`float`): how long the scheduler waits for more questions to share one `generate` call.
        max_batch (`int`): questions per `generate` call at most.
        chunks_per_write (`int`): chunks compressed (and written to the bank) per step; the model answers questions
            between steps, and a compression cut short loses at most one step.
    """

    max_upload_bytes: int = 4 * 2**20
    max_document_tokens: int = 1_000_000
    max_documents_per_key: int = 100
    max_disk_bytes_per_key: int = 20 * 2**30
    max_questions_per_request: int = 16
    max_question_chars: int = 4000
    max_new_tokens: int = 512
    max_queue: int = 64
    request_timeout_s: float = 300.0
    batch_window_ms: float = 20.0
    max_batch: int = 8
    chunks_per_write: int = 4

    def __post_init__(self):
        for field in fields(self):
            value = getattr(self, field.name)
            minimum = 0 if field.name == "batch_window_ms" else 1
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
                raise ValueError(f"ServeLimits.{field.name} must be a number of at least {minimum}, got {value!r}")

    @property
    def max_body_bytes(self) -> int:
        """Bytes a request body may have: an upload of `max_upload_bytes` as JSON (a client that escapes every
        character writes up to 6 bytes for one) plus room for the form or JSON around it."""
        return 6 * self.max_upload_bytes + 64 * 2**10
