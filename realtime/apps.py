from django.apps import AppConfig


class RealtimeConfig(AppConfig):
    """The WebSocket side: session actors, frames, routing."""

    name = "realtime"
