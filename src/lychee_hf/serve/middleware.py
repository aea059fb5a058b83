"""ASGI middleware of the server: a bound on request bodies (413 before the app reads them), and per request one
JSON access-log line plus the request metrics."""

import json
import logging
import re
import time
import uuid

from .errors import error_body

access_log = logging.getLogger("lychee_hf.serve.access")
DOCUMENT_ID = re.compile(r"d_[0-9a-f]{16}")


class BodyLimit:
    """Reads each request body whole, up to `max_bytes` (413 beyond, whatever the Content-Length said), and hands
    it to the app as one message."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit():
            return await _refuse(send, 400, "the Content-Length header is not a number")
        if int(declared) > self.max_bytes:
            return await _refuse(send, 413, f"the request body is larger than {self.max_bytes} bytes")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await _refuse(send, 413, f"the request body is larger than {self.max_bytes} bytes")
            if not message.get("more_body", False):
                break
        body, delivered = b"".join(chunks), False

        async def replay():
            nonlocal delivered
            if delivered:
                return await receive()  # the app waits for a disconnect (streaming responses)
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def _refuse(send, status: int, message: str) -> None:
    kind = "request_too_large" if status == 413 else "invalid_request_error"
    body = json.dumps(error_body(message, kind, status))
    headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body.encode()})


class AccessLog:
    """One JSON line per request on the `lychee_hf.serve.access` logger (method, route, status, milliseconds,
    bytes sent, owner, client, request id), and the request counters and latency histogram of `metrics`."""

    def __init__(self, app, metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status, sent = time.perf_counter(), 500, 0
        request_id = uuid.uuid4().hex[:16]

        async def recording(message):
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, recording)
        finally:
            seconds = time.perf_counter() - started
            route = _route(scope, status)
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
            self.metrics.latency.labels(route).observe(seconds)
            line = {
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "request_id": request_id,
                "method": scope["method"],
                "path": scope["path"],
                "route": route,
                "status": status,
                "ms": round(seconds * 1000, 1),
                "bytes": sent,
                "owner": scope.get("state", {}).get("owner"),
                "client": (scope.get("client") or ["?"])[0],
            }
            access_log.info(json.dumps(line))


def _route(scope, status: int) -> str:
    """The route template (few label values for the metrics), from the matched route or the path."""
    route = scope.get("route")
    if route is not None and getattr(route, "path", None):
        return route.path
    if status == 404:
        return "unmatched"
    return DOCUMENT_ID.sub("{document_id}", scope["path"])
