"""Operations and the page: `/healthz` (the process answers), `/readyz` (503 until the model is loaded),
`/metrics` (Prometheus text format), and the web page at `/` (static files shipped in the package)."""

from importlib.resources import files

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from .context import service

router = APIRouter(tags=["operations"])
STATIC = files("lychee_hf.serve") / "static"


@router.get("/healthz")
def healthz():
    return {"status": "ok"}


@router.get("/readyz")
def readyz(request: Request):
    served = service(request)
    if served.ready:
        return {"status": "ready", "model": served.model_name}
    reason = served.load_error or "loading the model"
    return JSONResponse({"status": "not ready", "reason": reason}, status_code=503, headers={"Retry-After": "5"})


@router.get("/metrics")
def metrics(request: Request):
    return Response(service(request).metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def page():
    return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))
