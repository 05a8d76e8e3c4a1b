"""Channels (topics, DM pairs, broadcast, system), their members and messages."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from .channels import ChannelName, Kind, parse_channel


class Channel(models.Model):
    """A stream of messages with its own gapless `seq` counter.

    `last_seq` is bumped under the row lock in the transaction that inserts
    the message, so a rolled-back send leaves no gap.
    """

    name = models.CharField(max_length=80, unique=True)
    kind = models.CharField(max_length=16, choices=[(k.value, k.value) for k in Kind])
    is_private = models.BooleanField(default=False)
    last_seq = models.BigIntegerField(default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="ChannelMember", related_name="chat_channels", blank=True
    )

    class Meta:
        indexes = [models.Index(fields=["kind", "is_private"])]

    def __str__(self) -> str:
        return self.name

    @property
    def parsed(self) -> ChannelName:
        return parse_channel(self.name)

    @property
    def topic_name(self) -> str:
        return self.name.removeprefix("topic:")


class ChannelMember(models.Model):
    """Membership of a private topic (public topics need none)."""

    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    added_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["channel", "user"], name="channel_member_unique")]

    def __str__(self) -> str:
        return f"{self.user_id} in {self.channel_id}"


class Message(models.Model):
    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="messages")
    seq = models.BigIntegerField()
    sender = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    body = models.TextField()
    client_id = models.CharField(max_length=64, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    edited_at = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["channel", "seq"], name="message_channel_seq")]
        indexes = [
            models.Index(
                fields=["sender", "client_id"],
                name="message_sender_client_id",
                condition=models.Q(client_id__isnull=False),
            )
        ]

    def __str__(self) -> str:
        return f"{self.channel.name}#{self.seq}"

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None
