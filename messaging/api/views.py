"""REST views: registration, history, topics and private membership."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.pagination import CursorPagination
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param
from rest_framework.views import APIView
from rest_framework_simplejwt.views import TokenObtainPairView, TokenRefreshView

from messaging import selectors, services
from messaging.channels import parse_channel
from messaging.errors import Conflict, Forbidden
from messaging.search import message_search
from messaging.wire import history_result, message_frame

from . import serializers as s


class AuthThrottled:
    throttle_scope = "auth"


class RegisterView(AuthThrottled, APIView):
    permission_classes = [AllowAny]
    authentication_classes: list[Any] = []

    @extend_schema(request=s.RegisterSerializer, responses={201: s.UserSerializer})
    def post(self, request: Request) -> Response:
        if not settings.OPEN_REGISTRATION:
            raise Forbidden("registration is closed on this server")
        data = s.RegisterSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        User = get_user_model()
        if User.objects.filter(username__iexact=data.validated_data["username"]).exists():
            raise Conflict("that username is taken")
        try:
            user = User.objects.create_user(
                username=data.validated_data["username"], password=data.validated_data["password"]
            )
        except IntegrityError:
            raise Conflict("that username is taken") from None
        return Response({"id": user.pk, "username": user.get_username()}, status=status.HTTP_201_CREATED)


class TokenView(AuthThrottled, TokenObtainPairView):
    pass


class TokenRefresh(AuthThrottled, TokenRefreshView):
    pass


class ResultsPagination(CursorPagination):
    """Lists as `{"results": [...], "next": URL or null}`."""

    ordering = "name"
    page_size = 100

    def get_paginated_response(self, data: Any) -> Response:
        return Response({"results": data, "next": self.get_next_link()})

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {"results": schema, "next": {"type": "string", "nullable": True}},
        }


class HistoryView(APIView):
    @extend_schema(
        parameters=[s.HistoryQuerySerializer, OpenApiParameter("channel", str, OpenApiParameter.PATH)],
        responses=s.HistorySerializer,
    )
    def get(self, request: Request, channel: str) -> Response:
        query = s.HistoryQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        stored = selectors.channel_readable(user=request.user, name=parse_channel(channel))
        page = selectors.history_page(channel=stored, **query.validated_data)
        return Response(history_result(page))


class MessageSearchView(APIView):
    @extend_schema(
        parameters=[s.SearchQuerySerializer],
        responses=s.SearchPageSerializer,
        description=(
            "Full-text search in the channels the user may read, best match first (PostgreSQL: "
            "web search syntax, English stemming; the SQLite default: every term as a substring, "
            "newest first). 403/404 for a `channel` the user may not read or a missing topic."
        ),
    )
    def get(self, request: Request) -> Response:
        query = s.SearchQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        page = message_search(
            user=request.user,
            q=params["q"],
            channel=params.get("channel"),
            sender=params.get("from"),
            before=params.get("before"),
            after=params.get("after"),
            offset=params["offset"],
            limit=params["limit"],
        )
        next_url = None
        if page.has_more:
            next_url = replace_query_param(request.build_absolute_uri(), "offset", params["offset"] + params["limit"])
        results = [{"message": message_frame(h.message), "rank": h.rank, "snippet": h.snippet} for h in page.results]
        return Response({"results": results, "next": next_url})


class TopicsView(APIView):
    pagination = ResultsPagination

    @extend_schema(
        parameters=[OpenApiParameter("cursor", str, OpenApiParameter.QUERY, description="from a `next` link")],
        responses=s.TopicPageSerializer,
    )
    def get(self, request: Request) -> Response:
        paginator = self.pagination()
        page = paginator.paginate_queryset(selectors.topics_visible(user=request.user), request, view=self)
        return paginator.get_paginated_response(s.TopicSerializer(page, many=True).data)

    @extend_schema(request=s.TopicCreateSerializer, responses={201: s.TopicSerializer})
    def post(self, request: Request) -> Response:
        data = s.TopicCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        topic = services.topic_create(
            user=request.user, name=data.validated_data["name"], private=data.validated_data["private"]
        )
        return Response(s.TopicSerializer(topic).data, status=status.HTTP_201_CREATED)


class TopicMembersView(APIView):
    @extend_schema(request=s.MemberSerializer, responses={201: s.UserSerializer})
    def post(self, request: Request, name: str) -> Response:
        data = s.MemberSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        member = services.topic_member_add(by=request.user, name=name, user_ref=data.validated_data["user"])
        user = member.user
        return Response({"id": user.pk, "username": user.get_username()}, status=status.HTTP_201_CREATED)

    @extend_schema(request=s.MemberSerializer, responses={204: None})
    def delete(self, request: Request, name: str) -> Response:
        data = s.MemberSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.topic_member_remove(by=request.user, name=name, user_ref=data.validated_data["user"])
        return Response(status=status.HTTP_204_NO_CONTENT)
