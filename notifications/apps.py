from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    """Push notifications for offline users: preferences, devices, queue, retries."""

    name = "notifications"
