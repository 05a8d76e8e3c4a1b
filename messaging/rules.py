"""Pure validation rules shared by the WebSocket frames and the REST API."""

from __future__ import annotations

from django.conf import settings

from .errors import BadRequest, TooLarge

MAX_CLIENT_ID = 64


def body_validate(body: object) -> str:
    """A message body: a non-empty string of at most MAX_BODY_BYTES in UTF-8."""
    if not isinstance(body, str):
        raise BadRequest("body must be a string")
    if not body:
        raise BadRequest("body must not be empty")
    try:
        size = len(body.encode("utf-8"))
    except UnicodeEncodeError:
        raise BadRequest("body is not valid Unicode (lone surrogate)") from None
    limit = settings.CHAT["MAX_BODY_BYTES"]
    if size > limit:
        raise TooLarge(f"body is {size} bytes of UTF-8, more than {limit}")
    return body


def client_id_validate(client_id: object) -> str | None:
    if client_id is None:
        return None
    if not isinstance(client_id, str) or not 0 < len(client_id) <= MAX_CLIENT_ID:
        raise BadRequest(f"client_id must be a string of 1 to {MAX_CLIENT_ID} characters")
    return client_id
