"""What every route reads from its request: the service, and the owner its API key names."""

from fastapi import Request

from .errors import Forbidden, Unauthorized
from .keys import KeyRing, NotLocal
from .keys import Unauthorized as NoKey
from .service import Service


def service(request: Request) -> Service:
    return request.app.state.service


def owner(request: Request) -> str:
    """The owner the request acts for (401 without a valid key; 403 for another machine when the server has no keys)."""
    keys: KeyRing = request.app.state.keys
    try:
        name = keys.owner(request.headers.get("authorization"), request.client.host if request.client else None)
    except NoKey as error:
        raise Unauthorized(str(error)) from None
    except NotLocal as error:
        raise Forbidden(str(error)) from None
    request.state.owner = name
    return name
