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
    # Messages with seq <= archived_seq live in ArchivedMessage, not in the hot table.
    archived_seq = models.BigIntegerField(default=0)
    # Days a topic keeps its messages hot; null: the global RETENTION_DAYS.
    retention_days = models.PositiveIntegerField(null=True, blank=True)
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


class ChannelCursor(models.Model):
    """A user's delivery and read positions in a channel (shared by its sessions).

    Both only move forward; a user's topics are the ones with a cursor row.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="cursors")
    delivered_seq = models.BigIntegerField(default=0)
    read_seq = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "channel"], name="cursor_user_channel")]
        indexes = [models.Index(fields=["channel", "read_seq"], name="cursor_channel_read")]

    def __str__(self) -> str:
        return f"{self.user_id}@{self.channel_id}: {self.delivered_seq}/{self.read_seq}"


class MessageRevision(models.Model):
    """A body a message had before an edit or a delete (moderation record)."""

    class Action(models.TextChoices):
        EDIT = "edit"
        DELETE = "delete"

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="revisions")
    action = models.CharField(max_length=8, choices=Action.choices)
    body = models.TextField()
    editor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"{self.action} of {self.message_id}"


class ArchivedMessage(models.Model):
    """A message moved out of the hot table by retention; same id and seq."""

    id = models.BigIntegerField(primary_key=True)
    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="archived_messages")
    seq = models.BigIntegerField()
    sender = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    body = models.TextField()
    client_id = models.CharField(max_length=64, null=True, blank=True)
    created_at = models.DateTimeField(db_index=True)
    edited_at = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)
    archived_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["channel", "seq"], name="archived_channel_seq")]

    def __str__(self) -> str:
        return f"{self.channel_id}#{self.seq} (archived)"

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None
