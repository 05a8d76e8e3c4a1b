"""The demo page: one HTML shell; everything else is the client and the REST API."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET


def content_security_policy(request: HttpRequest) -> str:
    """Scripts, styles and connections of this origin only (the WebSocket included).

    Browsers before CSP level 3 do not count ws: as 'self', so the socket's
    origin is named as well. Search snippets are the only HTML the page inserts,
    and no inline script may run.
    """
    socket_origin = ("wss://" if request.is_secure() else "ws://") + request.get_host()
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            f"connect-src 'self' {socket_origin}",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


@require_GET
def index(request: HttpRequest) -> HttpResponse:
    response = render(request, "web/index.html")
    response["Content-Security-Policy"] = content_security_policy(request)
    response["Referrer-Policy"] = "same-origin"
    response["Cache-Control"] = "no-store"
    return response
