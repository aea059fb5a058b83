"""`create_app`: the ASGI application of `lychee-hf serve` (any ASGI server runs it; the command uses uvicorn)."""

import contextlib
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from . import routes_answers, routes_documents, routes_openai, routes_ops
from .errors import ServeError, error_body
from .keys import KeyRing
from .limits import ServeLimits
from .middleware import AccessLog, BodyLimit
from .service import Service

log = logging.getLogger("lychee_hf.serve")


def create_app(
    model_path: str | None = None,
    banks_dir="banks",
    api_keys: dict[str, str | None] | None = None,
    limits: ServeLimits | None = None,
    loaded: tuple | None = None,
    dtype: str | None = None,
) -> FastAPI:
    """The server as a FastAPI app. The model loads in the background once the app starts (`/readyz` answers 503
    until then); documents left unfinished in `banks_dir` resume.

    Args:
        model_path (`str`, *optional*): checkpoint folder or Hub id (default: the embedded model).
        banks_dir (`str` or `Path`): the document store (created if missing; several servers may share it).
        api_keys (`dict`, *optional*): key -> owner name (`keys.read_api_keys` reads a keys file). Without keys
            the app answers only clients on this machine.
        limits (`ServeLimits`, *optional*): sizes, counts, queue, time, batching (default: `ServeLimits()`).
        loaded (`tuple`, *optional*): an already loaded `(model, tokenizer)`, used instead of `model_path`.
        dtype (`str`, *optional*): dtype to load the model in (default: the checkpoint's).
    """
    limits = limits or ServeLimits()
    served = Service(model_path, banks_dir, limits, loaded, dtype)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        served.start()
        yield
        served.stop()

    app = FastAPI(title="lychee-hf", summary="Questions over long documents, compressed once", lifespan=lifespan)
    app.state.service, app.state.keys = served, KeyRing(api_keys)
    for module in (routes_documents, routes_answers, routes_openai, routes_ops):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(packages=[("lychee_hf.serve", "static")]), name="static")
    app.add_exception_handler(ServeError, _serve_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    app.add_middleware(AccessLog, metrics=served.metrics)  # outermost: times and logs every request
    return app


def _serve_error(request: Request, error: ServeError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    problems = []
    for item in error.errors():
        where = ".".join(str(part) for part in item.get("loc", ()) if part != "body") or "body"
        problems.append(f"{where}: {item.get('msg', 'invalid')}")
    return JSONResponse(error_body("; ".join(problems), "invalid_request_error", 422), status_code=422)


def _http_error(request: Request, error: HTTPException) -> JSONResponse:
    kind = "not_found_error" if error.status_code == 404 else "invalid_request_error"
    return JSONResponse(
        error_body(str(error.detail), kind, error.status_code), status_code=error.status_code, headers=error.headers
    )


def _unexpected_error(request: Request, error: Exception) -> JSONResponse:
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=error)
    return JSONResponse(error_body("internal error: see the server's log", "server_error", 500), status_code=500)
