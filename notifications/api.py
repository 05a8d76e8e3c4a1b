"""REST endpoints under /api/notifications/ (PROTOCOL.md section 8)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.urls import path
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from messaging.errors import BadRequest

from . import selectors, services

_ANY: dict[str, Any] = {"type": "object", "additionalProperties": True}


class NotificationsView(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("before", int, description="notifications with a smaller id (the next page)"),
            OpenApiParameter("limit", int, description="1 to 200, default 50"),
        ],
        responses=_ANY,
    )
    def get(self, request: Request) -> Response:
        """The user's notifications, newest first, with their delivery state."""
        raw_before = request.query_params.get("before")
        if raw_before is not None and not (raw_before.isascii() and raw_before.isdigit()):
            raise BadRequest("before must be a notification id")
        limit = selectors.list_limit(request.query_params.get("limit"))
        rows, more = selectors.notifications_page(
            user=request.user, before=int(raw_before) if raw_before else None, limit=limit
        )
        next_url = None
        if more:
            query = urlencode({"before": rows[-1].pk, "limit": limit})
            next_url = request.build_absolute_uri(f"{request.path}?{query}")
        return Response({"results": [selectors.notification_json(n) for n in rows], "next": next_url})


class ReadView(APIView):
    @extend_schema(request=_ANY, responses=_ANY)
    def post(self, request: Request) -> Response:
        """Mark notifications read: `{"ids": [...]}` or `{"all": true}`."""
        return Response({"updated": services.notifications_mark_read(user=request.user, data=request.data)})


class PreferencesView(APIView):
    @extend_schema(responses=_ANY)
    def get(self, request: Request) -> Response:
        return Response(selectors.preference_json(selectors.preference_get(user_id=request.user.pk)))

    @extend_schema(request=_ANY, responses=_ANY)
    def put(self, request: Request) -> Response:
        """Replaces each field the body names."""
        pref = services.preference_update(user=request.user, data=request.data)
        return Response(selectors.preference_json(pref))


class DevicesView(APIView):
    @extend_schema(responses=_ANY)
    def get(self, request: Request) -> Response:
        devices = selectors.devices_of(user=request.user)
        return Response({"results": [selectors.device_json(d) for d in devices], "next": None})

    @extend_schema(request=_ANY, responses=_ANY)
    def post(self, request: Request) -> Response:
        """`{"kind": "webpush", "subscription": ...}` or `{"kind": "webhook", "url": ...}`."""
        device, created = services.device_register(user=request.user, data=request.data)
        return Response(
            selectors.device_json(device, with_secret=True),
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class DeviceView(APIView):
    @extend_schema(request=_ANY, responses=_ANY)
    def patch(self, request: Request, device_id: int) -> Response:
        """`{"enabled": bool}`: turn one device on or off."""
        device = services.device_update(user=request.user, device_id=device_id, data=request.data)
        return Response(selectors.device_json(device))

    @extend_schema(responses={204: None})
    def delete(self, request: Request, device_id: int) -> Response:
        services.device_remove(user=request.user, device_id=device_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebPushKeyView(APIView):
    @extend_schema(responses=_ANY)
    def get(self, request: Request) -> Response:
        """The VAPID public key a browser subscribes with (`applicationServerKey`), or null."""
        conf = settings.NOTIFICATIONS
        configured = bool(conf["VAPID_PUBLIC_KEY"] and conf["VAPID_PRIVATE_KEY"])
        return Response({"public_key": conf["VAPID_PUBLIC_KEY"] if configured else None})


urlpatterns = [
    path("", NotificationsView.as_view(), name="notifications"),
    path("read/", ReadView.as_view(), name="notifications-read"),
    path("preferences/", PreferencesView.as_view(), name="notification-preferences"),
    path("devices/", DevicesView.as_view(), name="notification-devices"),
    path("devices/<int:device_id>/", DeviceView.as_view(), name="notification-device"),
    path("webpush-key/", WebPushKeyView.as_view(), name="notification-webpush-key"),
]
