"""WebSocket URL routes."""

from __future__ import annotations

from typing import Any

from asgiref.sync import markcoroutinefunction
from channels.routing import URLRouter
from django.urls import path

from .consumers import SessionConsumer

websocket_urlpatterns = [
    path("ws/", SessionConsumer.as_asgi()),
]


class SessionRouter(URLRouter):
    """`URLRouter(websocket_urlpatterns)`, with `/ws/` handed straight to a new
    session actor: the call returns the actor's coroutine instead of awaiting
    it, so a connection keeps neither a router frame nor a scope copy for its
    lifetime (docs/PERFORMANCE.md, "Smaller idle sessions"). Every other path
    goes URLRouter's way (no route: an error, as before)."""

    @markcoroutinefunction
    def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope.get("path") == "/ws/" and not scope.get("root_path") and "path_remaining" not in scope:
            return SessionConsumer()(scope, receive, send)
        return super().__call__(scope, receive, send)


websocket_router = SessionRouter(websocket_urlpatterns)
