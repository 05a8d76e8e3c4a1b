"""Writes: sending messages (stored before delivery), topics and membership.

Each send runs in its own transaction. The functions that deliver do so
only after that transaction commits: `message_send` returns and the async
caller publishes (see `delivery.message_publish`); sync callers use the
`*_on_commit` helpers.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from notifications.tasks import message_notify_on_commit

from . import delivery
from .channels import BROADCAST, ChannelName, Kind, dm_channel, system_channel, topic_channel
from .errors import BadRequest, Conflict, Forbidden, NotFound
from .models import Channel, ChannelMember, Message
from .rules import body_validate, client_id_validate
from .selectors import channel_get, channel_may_read, user_resolve


class _Duplicate(Exception):
    """Raised inside the send transaction to roll back a seq already taken."""

    def __init__(self, message: Message) -> None:
        self.message = message


def channel_for_write(*, user: AbstractBaseUser, name: ChannelName, create: bool = True) -> Channel:
    """The channel `user` may send to (or subscribe to), created if allowed."""
    if name.kind is Kind.SYSTEM:
        raise Forbidden("system channels are written by the server only")
    if name.kind is Kind.BROADCAST and not user.is_staff:
        raise Forbidden("only staff may broadcast")
    channel = channel_get(name=name)
    if not channel_may_read(user=user, name=name, channel=channel):
        raise Forbidden(f"you may not write to {name}")
    if channel is not None:
        return channel
    if name.kind is Kind.TOPIC and not (create and settings.CHAT["TOPIC_AUTOCREATE"]):
        raise NotFound(f"no topic {name.topic!r}")
    return channel_ensure(name=name, created_by=user)


def channel_ensure(*, name: ChannelName, created_by: AbstractBaseUser | None = None) -> Channel:
    """Get or create a channel row; safe against a concurrent creator."""
    channel, _ = Channel.objects.get_or_create(
        name=str(name), defaults={"kind": name.kind.value, "created_by": created_by}
    )
    return channel


def _recent_duplicate(*, sender_id: int, client_id: str) -> Message | None:
    since = timezone.now() - timedelta(seconds=settings.CHAT["IDEMPOTENCY_WINDOW"])
    return (
        Message.objects.select_related("channel", "sender")
        .filter(sender_id=sender_id, client_id=client_id, created_at__gte=since)
        .order_by("-created_at")
        .first()
    )


def _seq_take(channel_id: int) -> int:
    """Bump and return the channel's last_seq; the row stays locked until commit."""
    table = Channel._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET last_seq = last_seq + 1 WHERE id = %s RETURNING last_seq", [channel_id])
        return cursor.fetchone()[0]


def message_store(
    *, channel: Channel, sender: AbstractBaseUser | None, body: str, client_id: str | None = None
) -> tuple[Message, bool]:
    """Store a message with the next seq. Returns (message, created).

    With a `client_id` seen from the same sender within the idempotency
    window, nothing is stored and the first message comes back.
    """
    body = body_validate(body)
    client_id = client_id_validate(client_id)
    if client_id and sender is not None:
        if existing := _recent_duplicate(sender_id=sender.pk, client_id=client_id):
            return existing, False
    try:
        with transaction.atomic():
            seq = _seq_take(channel.pk)
            # Re-check under the channel's row lock: a retry racing the first
            # send to the same channel waits here and then sees it.
            if client_id and sender is not None:
                if existing := _recent_duplicate(sender_id=sender.pk, client_id=client_id):
                    raise _Duplicate(existing)
            message = Message.objects.create(channel=channel, seq=seq, sender=sender, body=body, client_id=client_id)
            if channel.kind != Kind.BROADCAST:
                # Push notifications for offline users are decided after the commit, in a task.
                message_notify_on_commit(message.pk)
    except _Duplicate as dup:
        return dup.message, False
    channel.last_seq = seq
    message.channel = channel
    return message, True


def message_send(
    *, sender: AbstractBaseUser, name: ChannelName, body: str, client_id: str | None = None
) -> tuple[Message, bool]:
    """Authorise and store a message on a topic or broadcast channel."""
    # system: is nobody's to write (channel_for_write says forbidden); a dm:
    # the sender may not read is forbidden too (protocol section 3), their own
    # is a misuse of publish.
    if name.kind is Kind.DIRECT:
        if sender.pk not in name.members():
            raise Forbidden(f"you may not write to {name}")
        raise BadRequest("publish takes a topic: channel; send direct messages with `direct`")
    channel = channel_for_write(user=sender, name=name)
    return message_store(channel=channel, sender=sender, body=body, client_id=client_id)


def direct_send(
    *, sender: AbstractBaseUser, to: int | str, body: str, client_id: str | None = None
) -> tuple[Message, bool]:
    """Store a direct message in dm:A:B; `to` is a user id or a username."""
    body_validate(body)
    recipient = user_resolve(ref=to)
    channel = channel_ensure(name=dm_channel(sender.pk, recipient.pk), created_by=sender)
    return message_store(channel=channel, sender=sender, body=body, client_id=client_id)


def broadcast_send(*, sender: AbstractBaseUser, body: str, client_id: str | None = None) -> tuple[Message, bool]:
    return message_send(sender=sender, name=BROADCAST, body=body, client_id=client_id)


def system_notice_send(*, user: AbstractBaseUser, body: str) -> Message:
    """Store a server notice on system:U and deliver it once committed.

    For sync code (views, tasks, commands); it may run inside an outer
    transaction, delivery waits for that one to commit too.
    """
    channel = channel_ensure(name=system_channel(user.pk))
    message, _ = message_store(channel=channel, sender=None, body=body)
    delivery.message_publish_on_commit(message)
    return message


# --- Topics -----------------------------------------------------------------


def topic_create(*, user: AbstractBaseUser, name: str, private: bool = False) -> Channel:
    parsed = topic_channel(name)
    try:
        with transaction.atomic():
            channel = Channel.objects.create(
                name=str(parsed), kind=Kind.TOPIC.value, is_private=private, created_by=user
            )
            if private:
                ChannelMember.objects.create(channel=channel, user=user)
    except IntegrityError:
        raise Conflict(f"topic {name!r} exists") from None
    return channel


def _private_topic_for_member(*, user: AbstractBaseUser, name: str) -> Channel:
    channel = channel_get(name=topic_channel(name))
    if channel is None:
        raise NotFound(f"no topic {name!r}")
    if not channel_may_read(user=user, name=channel.parsed, channel=channel):
        raise Forbidden(f"you are not a member of topic {name!r}")
    if not channel.is_private:
        raise BadRequest("public topics have no members list: anyone may read them")
    return channel


def topic_member_add(*, by: AbstractBaseUser, name: str, user_ref: int | str) -> ChannelMember:
    """Any member of a private topic may add another user."""
    channel = _private_topic_for_member(user=by, name=name)
    user = user_resolve(ref=user_ref)
    member, created = ChannelMember.objects.get_or_create(channel=channel, user=user)
    if not created:
        raise Conflict(f"{user.get_username()} is already a member")
    return member


def topic_member_remove(*, by: AbstractBaseUser, name: str, user_ref: int | str) -> None:
    """The creator removes anyone; a member removes themself.

    The removed user's live sessions are told to drop the subscription.
    """
    channel = _private_topic_for_member(user=by, name=name)
    user = user_resolve(ref=user_ref)
    if user.pk != by.pk and channel.created_by_id != by.pk:
        raise Forbidden("only the topic's creator may remove other members")
    deleted, _ = ChannelMember.objects.filter(channel=channel, user=user).delete()
    if not deleted:
        raise NotFound(f"{user.get_username()} is not a member")
    delivery.channel_revoke_on_commit(user_id=user.pk, channel=channel.name)
