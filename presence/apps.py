from django.apps import AppConfig


class PresenceConfig(AppConfig):
    """Presence, typing and last seen (filled by the presence issue)."""

    name = "presence"
