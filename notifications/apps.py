from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    """Notifications for offline users (filled by the notifications issue)."""

    name = "notifications"
