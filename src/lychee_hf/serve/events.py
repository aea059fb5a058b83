"""The events of a streaming answer request, in order: each question's answer text as it is generated, then
each question's result (or the request's error). Native and OpenAI streams render the same events."""

import asyncio
import logging

from .errors import ServeError

log = logging.getLogger("lychee_hf.serve")


async def answer_events(service, owner: str, document_id: str, texts: list[str], options: tuple):
    """Queues the questions (errors are raised before any event, as plain error responses) and returns an async
    iterator of `("token", index, text)`, `("answer", index, result)` and `("error", ServeError)`."""
    loop = asyncio.get_running_loop()
    tokens: asyncio.Queue = asyncio.Queue()

    def listener(index: int):
        return lambda text: loop.call_soon_threadsafe(tokens.put_nowait, ("token", index, text))

    questions = service.ask(owner, document_id, texts, options, [listener(i) for i in range(len(texts))])

    async def events():
        answered = asyncio.ensure_future(service.answers(questions))
        try:
            while not answered.done():
                waiting = asyncio.ensure_future(tokens.get())
                await asyncio.wait({waiting, answered}, return_when=asyncio.FIRST_COMPLETED)
                if waiting.done():
                    yield waiting.result()
                else:
                    waiting.cancel()
            while not tokens.empty():  # sent before the answers were set: already queued
                yield tokens.get_nowait()
            try:
                results = answered.result()
            except ServeError as error:
                yield ("error", error)
                return
            except Exception:  # the stream has started: the error goes in it
                log.exception("a streamed answer failed")
                yield ("error", ServeError("internal error: see the server's log"))
                return
            for index, result in enumerate(results):
                yield ("answer", index, result)
        finally:
            answered.cancel()  # the client went away: questions not started yet are dropped

    return events()
