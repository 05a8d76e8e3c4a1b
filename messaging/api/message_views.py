"""REST views over stored messages: the channel list, edit, delete, readers."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from messaging import cursors, delivery, editing
from messaging.errors import Forbidden, NotFound
from messaging.models import Message
from messaging.selectors import channel_may_read
from messaging.wire import message_frame, user_ref

from .serializers import MessageSerializer


class SyncEntrySerializer(serializers.Serializer):
    channel = serializers.CharField()
    last_seq = serializers.IntegerField()
    delivered_seq = serializers.IntegerField()
    read_seq = serializers.IntegerField()
    unread = serializers.IntegerField()


class ChannelListSerializer(serializers.Serializer):
    results = SyncEntrySerializer(many=True)
    next = serializers.CharField(allow_null=True)


class EditSerializer(serializers.Serializer):
    body = serializers.CharField(trim_whitespace=False, allow_blank=True)


class ReaderSerializer(serializers.Serializer):
    user = serializers.DictField()
    read_seq = serializers.IntegerField()
    read_at = serializers.DateTimeField()


class ChannelsView(APIView):
    @extend_schema(responses=ChannelListSerializer)
    def get(self, request: Request) -> Response:
        """Every channel of the user with cursors and unread counts, as `sync`."""
        return Response({"results": cursors.channels_sync(user=request.user), "next": None})


class MessageView(APIView):
    @extend_schema(request=EditSerializer, responses=MessageSerializer)
    def patch(self, request: Request, message_id: int) -> Response:
        data = EditSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        change = editing.message_edit(user=request.user, message_id=message_id, body=data.validated_data["body"])
        self.announce(change)
        return Response(message_frame(change.message))

    @extend_schema(responses={204: None})
    def delete(self, request: Request, message_id: int) -> Response:
        self.announce(editing.message_delete(user=request.user, message_id=message_id))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @staticmethod
    def announce(change: editing.Change) -> None:
        if change.event is not None:
            delivery.channel_event_publish_on_commit(change.message.channel.name, change.event)


class ReadersView(APIView):
    @extend_schema(responses=ReaderSerializer(many=True))
    def get(self, request: Request, message_id: int) -> Response:
        """Who has read a message: its author or staff may ask."""
        message = Message.objects.select_related("channel").filter(pk=message_id).first()
        if message is None or not channel_may_read(
            user=request.user, name=message.channel.parsed, channel=message.channel
        ):
            raise NotFound(f"no message {message_id}")
        if message.sender_id != request.user.pk and not request.user.is_staff:
            raise Forbidden("only the author or staff may see who read a message")
        results = [
            {"user": user_ref(c.user), "read_seq": c.read_seq, "read_at": c.updated_at}
            for c in cursors.readers_of(message=message)
        ]
        return Response({"results": ReaderSerializer(results, many=True).data, "next": None})
