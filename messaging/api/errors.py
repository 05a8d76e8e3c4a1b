"""REST errors as `{"code", "message"}` with the matching HTTP status."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, JsonResponse
from rest_framework import exceptions
from rest_framework.response import Response

from messaging.errors import ChatError

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "bad_request",
    406: "bad_request",
    409: "conflict",
    413: "too_large",
    415: "bad_request",
    429: "rate_limited",
}


def _flatten(detail: Any) -> str:
    """DRF's nested error details as one readable line."""
    if isinstance(detail, dict):
        return "; ".join(f"{key}: {_flatten(value)}" for key, value in detail.items())
    if isinstance(detail, list):
        return " ".join(_flatten(item) for item in detail)
    return str(detail)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ChatError):
        body: dict[str, Any] = {"code": exc.code, "message": exc.message}
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            body["retry_after"] = retry_after
        return Response(body, status=exc.status)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    if not isinstance(exc, exceptions.APIException):
        return None  # a bug: Django's 500 handling and logging take over
    status = exc.status_code
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        status = 401
    detail = exc.detail
    if isinstance(detail, dict) and "detail" in detail:
        # simplejwt's InvalidToken: {"detail": text, "code": ..., "messages": [...]};
        # the text alone is the human message.
        detail = detail["detail"]
    body = {"code": _CODES.get(status, "internal"), "message": _flatten(detail)}
    headers = {}
    if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
        body["retry_after"] = max(1, int(exc.wait))
        headers["Retry-After"] = str(body["retry_after"])
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="api"'
    return Response(body, status=status, headers=headers)


def json_not_found(request: Any, exception: Exception | None = None) -> JsonResponse:
    """404 for URLs no route matches, in the API's error shape."""
    return JsonResponse({"code": "not_found", "message": f"no such URL: {request.path}"}, status=404)
