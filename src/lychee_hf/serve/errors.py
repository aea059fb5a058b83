"""The errors a request can get: each an HTTP status and one line saying what to change, sent as
`{"error": {"message", "type", "code"}}` (the shape OpenAI clients read)."""


class ServeError(Exception):
    """A request the server refuses or cannot answer."""

    status = 500
    kind = "server_error"

    def __init__(self, message: str, headers: dict | None = None):
        super().__init__(message)
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict:
        return error_body(self.message, self.kind, self.status)


def error_body(message: str, kind: str, status: int) -> dict:
    return {"error": {"message": message, "type": kind, "code": status}}


class BadRequest(ServeError):
    status, kind = 400, "invalid_request_error"


class Unauthorized(ServeError):
    status, kind = 401, "authentication_error"

    def __init__(self, message: str):
        super().__init__(message, {"WWW-Authenticate": "Bearer"})


class Forbidden(ServeError):
    status, kind = 403, "permission_error"


class NotFound(ServeError):
    status, kind = 404, "not_found_error"


class Conflict(ServeError):
    status, kind = 409, "conflict_error"


class TooLarge(ServeError):
    status, kind = 413, "request_too_large"


class UnsupportedMedia(ServeError):
    status, kind = 415, "invalid_request_error"


class TooManyRequests(ServeError):
    status, kind = 429, "rate_limit_error"

    def __init__(self, message: str, retry_after: int):
        super().__init__(message, {"Retry-After": str(retry_after)})


class Unavailable(ServeError):
    status, kind = 503, "unavailable_error"

    def __init__(self, message: str, retry_after: int = 5):
        super().__init__(message, {"Retry-After": str(retry_after)})


class TimedOut(ServeError):
    status, kind = 504, "timeout_error"
