"""Request and response shapes of the REST API."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from messaging.channels import TOPIC_NAME_RE, ChannelName, parse_channel
from messaging.errors import BadRequest


@extend_schema_field(OpenApiTypes.STR)
class UserRefField(serializers.Field):
    """A user id (integer) or a username (string)."""

    def to_internal_value(self, data: Any) -> int | str:
        if isinstance(data, bool):
            raise serializers.ValidationError("a user id or a username")
        if isinstance(data, int) and data > 0:
            return data
        if isinstance(data, str) and 0 < len(data) <= 150:
            return data
        raise serializers.ValidationError("a user id or a username")

    def to_representation(self, value: Any) -> Any:
        return value


class RegisterSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(write_only=True, trim_whitespace=False)

    def validate_username(self, value: str) -> str:
        validator = get_user_model().username_validator
        try:
            validator(value)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(list(exc.messages)) from None
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        user = get_user_model()(username=attrs["username"])
        try:
            validate_password(attrs["password"], user=user)
        except DjangoValidationError as exc:
            raise serializers.ValidationError({"password": list(exc.messages)}) from None
        return attrs


class UserSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()


class TopicCreateSerializer(serializers.Serializer):
    # RegexField searches: without \A, "Bad Name" would pass (its tail matches).
    name = serializers.RegexField(r"\A" + TOPIC_NAME_RE.pattern + r"\Z", max_length=64)
    private = serializers.BooleanField(default=False)


class TopicSerializer(serializers.Serializer):
    name = serializers.CharField(source="topic_name")
    channel = serializers.CharField(source="name")
    private = serializers.BooleanField(source="is_private")
    last_seq = serializers.IntegerField()
    created_at = serializers.DateTimeField()


class TopicPageSerializer(serializers.Serializer):
    """A page of topics; `next` is the URL of the following page, or null."""

    results = TopicSerializer(many=True)
    next = serializers.URLField(allow_null=True)


class MemberSerializer(serializers.Serializer):
    user = UserRefField()


class HistoryQuerySerializer(serializers.Serializer):
    before = serializers.IntegerField(required=False, min_value=0)
    after = serializers.IntegerField(required=False, min_value=0)
    limit = serializers.IntegerField(required=False, min_value=1, max_value=200)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "before" in attrs and "after" in attrs and attrs["after"] >= attrs["before"]:
            raise serializers.ValidationError("after must be below before")
        return attrs


class MessageSerializer(serializers.Serializer):
    """Documentation of the message shape (protocol section 3)."""

    type = serializers.CharField()
    id = serializers.IntegerField()
    channel = serializers.CharField()
    seq = serializers.IntegerField()
    kind = serializers.CharField()
    body = serializers.CharField(allow_null=True)
    client_id = serializers.CharField(allow_null=True)
    created_at = serializers.CharField()
    edited_at = serializers.CharField(allow_null=True)
    deleted = serializers.BooleanField()

    def get_fields(self) -> dict[str, serializers.Field]:
        # `from` is a Python keyword, so it cannot be declared as an attribute.
        return {**super().get_fields(), "from": UserSerializer(allow_null=True)}


class HistorySerializer(serializers.Serializer):
    messages = MessageSerializer(many=True)
    has_more = serializers.BooleanField()
    archived_before_seq = serializers.IntegerField(
        required=False,
        help_text="present once the channel has archived messages: those with seq below it left history",
    )


class SearchQuerySerializer(serializers.Serializer):
    """Query of GET /api/messages/search/; `from` is a user id or a username."""

    q = serializers.CharField(max_length=256, help_text="search text (web search syntax on PostgreSQL)")
    channel = serializers.CharField(required=False, max_length=100, help_text="only this channel")
    before = serializers.DateTimeField(required=False, help_text="ISO 8601; sent before this instant")
    after = serializers.DateTimeField(required=False, help_text="ISO 8601; sent after this instant")
    offset = serializers.IntegerField(required=False, default=0, min_value=0)
    limit = serializers.IntegerField(required=False, default=20, min_value=1, max_value=100)

    def get_fields(self) -> dict[str, serializers.Field]:
        # `from` is a Python keyword, so it cannot be declared as an attribute.
        return {**super().get_fields(), "from": UserRefField(required=False, help_text="only messages of this sender")}

    def validate_channel(self, value: str) -> ChannelName:
        try:
            return parse_channel(value)
        except BadRequest as exc:
            raise serializers.ValidationError(exc.message) from None

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "before" in attrs and "after" in attrs and attrs["after"] >= attrs["before"]:
            raise serializers.ValidationError("after must be earlier than before")
        sender = attrs.get("from")
        # A query string carries text only: all ASCII digits is an id.
        if isinstance(sender, str) and sender.isascii() and sender.isdigit():
            attrs["from"] = int(sender)
        return attrs


class SearchResultSerializer(serializers.Serializer):
    message = MessageSerializer()
    rank = serializers.FloatField(help_text="relevance, higher first; 0 without full-text search")
    snippet = serializers.CharField(help_text="HTML-escaped text around the matches, which are in <mark></mark>")


class SearchPageSerializer(serializers.Serializer):
    """A page of search results; `next` is the URL of the following page, or null."""

    results = SearchResultSerializer(many=True)
    next = serializers.URLField(allow_null=True)
