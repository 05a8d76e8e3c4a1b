"""ASGI entry point: HTTP to Django, WebSockets to the session actors."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_asgi_app = get_asgi_application()

from typing import Any  # noqa: E402

from asgiref.sync import markcoroutinefunction  # noqa: E402
from channels.routing import ProtocolTypeRouter  # noqa: E402

from realtime.auth import JwtAuthMiddleware, origin_checked  # noqa: E402
from realtime.routing import websocket_router  # noqa: E402


class ProtocolRouter(ProtocolTypeRouter):
    """ProtocolTypeRouter returning the chosen app's coroutine instead of
    awaiting it: a WebSocket connection keeps no frame of it (as the other
    layers in front of the session actor: docs/PERFORMANCE.md)."""

    @markcoroutinefunction
    def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        application = self.application_mapping.get(scope["type"])
        if application is None:
            raise ValueError(f"No application configured for scope type {scope['type']!r}")
        return application(scope, receive, send)


application = ProtocolRouter(
    {
        "http": django_asgi_app,
        "websocket": origin_checked(JwtAuthMiddleware(websocket_router)),
    }
)
