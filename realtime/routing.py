"""WebSocket URL routes."""

from django.urls import path

from .consumers import SessionConsumer

websocket_urlpatterns = [
    path("ws/", SessionConsumer.as_asgi()),
]
