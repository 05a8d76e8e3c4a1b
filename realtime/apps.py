from django.apps import AppConfig


class RealtimeConfig(AppConfig):
    """The WebSocket side: session actors, frames, routing."""

    name = "realtime"

    def ready(self) -> None:
        from . import redis_compat

        redis_compat.install()
