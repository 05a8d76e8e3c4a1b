"""The application's one error tree.

    ChatError (code "internal")
    +-- BadRequest      "bad_request"   HTTP 400
    +-- Unauthorized    "unauthorized"  HTTP 401
    +-- Forbidden       "forbidden"     HTTP 403
    +-- NotFound        "not_found"     HTTP 404
    +-- Conflict        "conflict"      HTTP 409
    +-- TooLarge        "too_large"     HTTP 413
    +-- RateLimited     "rate_limited"  HTTP 429, carries retry_after

The session actor turns one into an `error` frame, the REST exception
handler into `{"code", "message"}` with the status.
"""

from __future__ import annotations


class ChatError(Exception):
    code = "internal"
    status = 500
    default_message = "internal error"

    def __init__(self, message: str | None = None) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)


class BadJson(ChatError):
    code = "bad_json"
    status = 400
    default_message = "frame is not a JSON object"


class BadRequest(ChatError):
    code = "bad_request"
    status = 400
    default_message = "bad request"


class UnknownType(ChatError):
    code = "unknown_type"
    status = 400
    default_message = "unknown frame type"


class Unauthorized(ChatError):
    code = "unauthorized"
    status = 401
    default_message = "authentication required"


class Forbidden(ChatError):
    code = "forbidden"
    status = 403
    default_message = "not allowed"


class NotFound(ChatError):
    code = "not_found"
    status = 404
    default_message = "not found"


class Conflict(ChatError):
    code = "conflict"
    status = 409
    default_message = "conflict"


class TooLarge(ChatError):
    code = "too_large"
    status = 413
    default_message = "too large"


class RateLimited(ChatError):
    code = "rate_limited"
    status = 429
    default_message = "too many requests"

    def __init__(self, message: str | None = None, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after
