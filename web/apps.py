from django.apps import AppConfig


class WebConfig(AppConfig):
    """The demo chat page at `/`, built on the JavaScript client (clients/js)."""

    name = "web"
    verbose_name = "Demo page"
