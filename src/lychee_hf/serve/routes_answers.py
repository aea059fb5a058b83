"""`POST /v1/documents/{id}/answers`: questions over a document; with `"stream": true`, server-sent events."""

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from .bodies import parse_json
from .context import owner, service
from .events import answer_events
from .schemas import AnswersIn
from .streaming import sse

router = APIRouter(prefix="/v1/documents", tags=["answers"])


@router.post("/{document_id}/answers")
async def answer(document_id: str, request: Request, who: str = Depends(owner)):
    """Each question's `answer`, `not_found`, `evidence` and per-block `trace` (the library's trace schema,
    without the prompts' token ids).

    Streaming events: `token` (`question`, `text`: the answer so far grows by it), then per question one `block`
    per block read or skipped (gate score, kept, memory after it) and its `answer` (the whole result), and `done`;
    or an `error`.
    """
    body = await parse_json(request, AnswersIn)
    served, texts = service(request), body.texts()
    if body.stream:
        events = await answer_events(served, who, document_id, texts, body.as_kwargs())
        return StreamingResponse(_sse(events, texts), media_type="text/event-stream", headers=NO_BUFFERING)
    results = await served.answers(served.ask(who, document_id, texts, body.as_kwargs()))
    return {"document": document_id, "answers": [{"question": q, **r} for q, r in zip(texts, results)]}


NO_BUFFERING = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def _sse(events, texts: list[str]):
    async for event in events:
        if event[0] == "token":
            yield sse("token", {"question": event[1], "text": event[2]})
        elif event[0] == "answer":
            index, result = event[1], event[2]
            for record in result["trace"]:
                yield sse("block", {"question": index, **record})
            yield sse("answer", {"question": index, "text": texts[index], **result})
        else:
            yield sse("error", event[1].body())
            return
    yield sse("done", {})
