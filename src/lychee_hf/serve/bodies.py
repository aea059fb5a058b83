"""Reading request bodies: JSON into a request model (one clear error per problem), and a document from JSON, a
file upload or plain text."""

import json
from pathlib import PurePath

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from .errors import BadRequest, TooLarge, UnsupportedMedia
from .schemas import DocumentIn


async def parse_json(request: Request, model: type[BaseModel]):
    """The body as `model` (400 when it is not JSON, 422 naming each field that does not fit)."""
    try:
        value = json.loads(await request.body())
    except UnicodeDecodeError:
        raise BadRequest("the body is not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise BadRequest(f"the body is not valid JSON ({error.msg} at character {error.pos})") from None
    except (ValueError, RecursionError):
        raise BadRequest("the body is not JSON this server reads (a number too long, or nested too deeply)") from None
    if not isinstance(value, dict):
        raise BadRequest(f"the body must be a JSON object, not {type(value).__name__}")
    try:
        return model.model_validate(value)
    except ValidationError as error:
        raise RequestValidationError(error.errors(include_url=False, include_context=False)) from None


async def read_document(request: Request, max_bytes: int) -> tuple[str, str | None]:
    """`(text, name)` of an upload: JSON `{"text", "name"}`, a form with the field `file`, or `text/plain`."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        document = await parse_json(request, DocumentIn)
        return document.text, document.name
    if kind == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=8)
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise BadRequest("send the document as the form's file field `file`")
        data = await upload.read(max_bytes + 1)
        name = PurePath(upload.filename or "").name[:200] or None
        return _text(data, max_bytes), name
    if kind == "text/plain":
        return _text(await request.body(), max_bytes), None
    raise UnsupportedMedia(
        f'send the document as application/json ({{"text": ...}}), multipart/form-data (field `file`) or '
        f"text/plain, not {kind or 'a body without Content-Type'}"
    )


def _text(data: bytes, max_bytes: int) -> str:
    if len(data) > max_bytes:
        raise TooLarge(f"the document has more than {max_bytes} bytes, the most this server takes")
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as error:
        raise BadRequest(f"the document is not UTF-8 text (byte {error.start}): save it as UTF-8") from None
