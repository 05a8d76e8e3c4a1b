"""Push backends: one per device kind, plus the console stand-in.

`backend_for(kind)` picks the backend for a device; with NOTIFICATIONS
["BACKEND"] = "console" (the embedded default, "auto" without a broker)
every push is logged instead of sent. Adding FCM or APNs: docs/notifications.md.
"""

from __future__ import annotations

from django.conf import settings

from .base import Backend, Push, PushRefused, PushResult
from .console import ConsoleBackend
from .webhook import WebhookBackend
from .webpush import WebPushBackend

__all__ = ["Backend", "Push", "PushRefused", "PushResult", "backend_for", "console_mode"]

_BACKENDS: dict[str, type[Backend]] = {"webpush": WebPushBackend, "webhook": WebhookBackend}


def console_mode() -> bool:
    mode = settings.NOTIFICATIONS["BACKEND"]
    if mode == "auto":
        return bool(settings.CELERY_TASK_ALWAYS_EAGER)
    return mode == "console"


def backend_for(kind: str) -> Backend:
    if console_mode():
        return ConsoleBackend()
    return _BACKENDS[kind]()
