"""Request bodies, validated before any work: strict types (no "0.5" for a number), no unknown fields in the
native API (a misspelt option is an error, not ignored), text that is valid Unicode."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


def unicode_text(value: str | None) -> str | None:
    """Refuses strings that cannot be written as UTF-8 (JSON can carry lone surrogates such as `\\ud800`)."""
    if value is not None:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("is not valid Unicode text (it holds a lone surrogate)") from None
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class DocumentIn(_Strict):
    """`POST /v1/documents` as JSON."""

    text: str
    name: str | None = Field(default=None, max_length=200)

    _unicode = field_validator("text", "name")(unicode_text)


class GenerationOptions(_Strict):
    """How a question is answered; unset fields keep the model's settings."""

    max_new_tokens: int | None = Field(default=None, ge=1)
    gate_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    gate_max_blocks: int | None = Field(default=None, ge=1)
    gate_keep_last: bool | None = None
    gate_revisit: bool | None = None
    first_stage: Literal["full_scan", "lexical"] | None = None
    first_stage_candidates: int | None = Field(default=None, ge=1, le=256)

    def as_kwargs(self) -> tuple:
        """The given options as sorted `(name, value)` pairs (questions with equal ones share a `generate` call)."""
        given = self.model_dump(include=set(GenerationOptions.model_fields))
        return tuple(sorted((k, v) for k, v in given.items() if v is not None))


class AnswersIn(GenerationOptions):
    """`POST /v1/documents/{id}/answers`: one `question` or a list of `questions`."""

    question: str | None = None
    questions: list[str] | None = None
    stream: bool = False

    @field_validator("question")
    @classmethod
    def _question(cls, value):
        return unicode_text(value)

    @field_validator("questions")
    @classmethod
    def _questions(cls, value):
        return [unicode_text(item) for item in value] if value is not None else None

    @model_validator(mode="after")
    def _one_of(self):
        if (self.question is None) == (self.questions is None):
            raise ValueError("give either `question` (a string) or `questions` (a list of strings)")
        return self

    def texts(self) -> list[str]:
        return [self.question] if self.question is not None else list(self.questions)


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text or "" for part in self.content if part.type == "text")
        return self.content or ""


class ChatIn(BaseModel):
    """`POST /v1/chat/completions`: OpenAI's request, plus `documents` (the official client sends it through
    `extra_body`). Other OpenAI fields are accepted and ignored (answers are greedy)."""

    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[Message] = Field(min_length=1)
    documents: list[str] | str | None = None
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    n: int | None = Field(default=None, ge=1, le=1)

    def question(self) -> str:
        users = [message for message in self.messages if message.role == "user"]
        if not users:
            raise ValueError("no message with role 'user': the last user message is the question")
        return unicode_text(users[-1].text())

    def document(self) -> str:
        named = [self.documents] if isinstance(self.documents, str) else list(self.documents or [])
        if len(named) != 1:
            raise ValueError(
                f"name one document to answer over ({len(named)} given): `documents: [ID]` in the request (with the "
                "openai package: extra_body={'documents': [ID]})"
            )
        return named[0]
