"""`/v1/documents`: upload (compressed in the background), progress, list, text, delete."""

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool

from .bodies import read_document
from .context import owner, service

router = APIRouter(prefix="/v1/documents", tags=["documents"])


@router.post("")
async def upload_document(request: Request, who: str = Depends(owner)):
    """Stores a document and queues its compression; answers at once with its id and status (201 when new, 200
    for the same text uploaded again)."""
    served = service(request)
    text, name = await read_document(request, served.limits.max_upload_bytes)
    document, created = await run_in_threadpool(served.add_document, who, text, name)
    return JSONResponse(document, status_code=201 if created else 200)


@router.get("")
def list_documents(request: Request, who: str = Depends(owner)):
    return {"documents": service(request).documents(who)}


@router.get("/{document_id}")
def get_document(document_id: str, request: Request, who: str = Depends(owner)):
    """Status (`queued`, `compressing`, `ready`, `failed`), tokens, and `blocks_done` of `blocks_total`."""
    return service(request).document(who, document_id)


@router.get("/{document_id}/text", response_class=PlainTextResponse)
def get_document_text(document_id: str, request: Request, who: str = Depends(owner)):
    """The document's text as uploaded (evidence offsets count its characters)."""
    return PlainTextResponse(service(request).document_text(who, document_id))


@router.delete("/{document_id}", status_code=204)
def delete_document(document_id: str, request: Request, who: str = Depends(owner)):
    service(request).delete_document(who, document_id)
