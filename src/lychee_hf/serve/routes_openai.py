"""OpenAI-compatible routes: `POST /v1/chat/completions` (the last user message is the question; the document is
named in `documents`) and `GET /v1/models`. Streams use OpenAI's chunk format and end with `data: [DONE]`."""

import time
import uuid

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from .bodies import parse_json
from .context import owner, service
from .errors import BadRequest
from .events import answer_events
from .routes_answers import NO_BUFFERING
from .schemas import ChatIn, GenerationOptions
from .streaming import sse_data

router = APIRouter(prefix="/v1", tags=["openai"])


@router.get("/models")
def list_models(request: Request, who: str = Depends(owner)):
    name = service(request).model_name
    return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "lychee-hf"}]}


@router.post("/chat/completions")
async def chat_completions(request: Request, who: str = Depends(owner)):
    """A chat completion whose content is the answer; `lychee` holds `document`, `not_found`, `evidence` and
    `trace`. Sampling fields (temperature, top_p, ...) are ignored: answers are greedy."""
    body = await parse_json(request, ChatIn)
    try:
        question, document_id = body.question(), body.document()
    except ValueError as error:
        raise BadRequest(str(error)) from None
    limit = body.max_completion_tokens or body.max_tokens
    options = GenerationOptions(max_new_tokens=limit).as_kwargs()
    served = service(request)
    head = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": served.model_name}
    if body.stream:
        events = await answer_events(served, who, document_id, [question], options)
        return StreamingResponse(
            _chunks(events, head, document_id), media_type="text/event-stream", headers=NO_BUFFERING
        )
    (result,) = await served.answers(served.ask(who, document_id, [question], options))
    return {
        **head,
        "object": "chat.completion",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": result["answer"]}, "finish_reason": "stop"}
        ],
        "usage": _usage(result),
        "lychee": _lychee(document_id, result),
    }


def _usage(result: dict) -> dict:
    prompt = result["answer_prompt_tokens"] + sum(record["prompt_tokens"] for record in result["trace"])
    completion = result["answer_tokens"]
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _lychee(document_id: str, result: dict) -> dict:
    return {"document": document_id, **{key: result[key] for key in ("not_found", "evidence", "trace")}}


async def _chunks(events, head: dict, document_id: str):
    def chunk(delta: dict, finish: str | None = None, **extra) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return sse_data({**head, "object": "chat.completion.chunk", "choices": [choice], **extra})

    yield chunk({"role": "assistant", "content": ""})
    async for event in events:
        if event[0] == "token":
            yield chunk({"content": event[2]})
        elif event[0] == "answer":
            yield chunk({}, "stop", usage=_usage(event[2]), lychee=_lychee(document_id, event[2]))
        else:
            yield sse_data(event[1].body())
            break
    yield sse_data("[DONE]")
