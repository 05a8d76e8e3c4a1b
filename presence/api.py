"""`GET /api/presence/?users=`: current presence of users one may see."""

from __future__ import annotations

import time

from asgiref.sync import async_to_sync
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from messaging.errors import BadRequest
from messaging.models import ChannelCursor, ChannelMember
from realtime.frames import MAX_PRESENCE_USERS

from . import services
from .store import presence_store


def _refs(raw: str) -> list[int | str]:
    refs: list[int | str] = []
    for part in (p.strip() for p in raw.split(",")):
        if part:
            refs.append(int(part) if part.isascii() and part.isdigit() else part)
    if not refs:
        raise BadRequest("users= takes user ids or usernames, comma-separated")
    if len(refs) > MAX_PRESENCE_USERS:
        raise BadRequest(f"at most {MAX_PRESENCE_USERS} users per request")
    return refs


class PresenceView(APIView):
    @extend_schema(parameters=[OpenApiParameter("users", str, description="ids or usernames, comma-separated")])
    def get(self, request: Request) -> Response:
        """Visible as over WebSocket: DM partners and members of the topics the
        user takes part in (has a cursor in or is a member of)."""
        refs = _refs(request.query_params.get("users", ""))
        user = request.user
        topics = sorted(
            set(ChannelCursor.objects.filter(user=user, channel__kind="topic").values_list("channel__name", flat=True))
            | set(ChannelMember.objects.filter(user=user).values_list("channel__name", flat=True))
        )
        users, denied = services.presence_visible(viewer=user, refs=refs, topics=topics)
        statuses = async_to_sync(presence_store().statuses)([u.pk for u in users], now=time.time())
        return Response({"results": services.presence_states(users=users, statuses=statuses), "denied": denied})
