"""Delivery and read cursors, receipts, and the per-user channel list (`sync`).

Cursors are written once per `received` or `read` request (a client
acknowledges a range with one request, never one message at a time), as one
upsert that only moves forward; nothing is written per message per recipient
when messages are sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Count, IntegerField, OuterRef, Q, Subquery, Value
from django.db.models.functions import Coalesce

from .channels import Kind, user_group
from .models import Channel, ChannelCursor, ChannelMember, Message
from .wire import user_ref


@dataclass(frozen=True, slots=True)
class CursorMove:
    channel: str
    delivered_before: int
    delivered: int
    read_before: int
    read: int
    last_seq: int = 0  # the channel's, when the cursor moved

    @property
    def moved(self) -> bool:
        return self.delivered != self.delivered_before or self.read != self.read_before


def cursor_move(
    *, user: AbstractBaseUser, channel: Channel, delivered: int | None = None, read: int | None = None
) -> CursorMove:
    """Move the user's cursors forward (never back, never past `last_seq`).

    Reading implies delivery: `read` also moves `delivered` up to it. Two
    devices moving the same cursor at once serialize on the row lock.
    """
    last = Channel.objects.values_list("last_seq", flat=True).get(pk=channel.pk)
    with transaction.atomic():
        cursor, _ = ChannelCursor.objects.select_for_update().get_or_create(user=user, channel=channel)
        before_d, before_r = cursor.delivered_seq, cursor.read_seq
        new_r = max(before_r, min(read, last)) if read is not None else before_r
        new_d = max(before_d, min(delivered, last) if delivered is not None else 0, new_r)
        if (new_d, new_r) != (before_d, before_r):
            cursor.delivered_seq, cursor.read_seq = new_d, new_r
            cursor.save(update_fields=["delivered_seq", "read_seq", "updated_at"])
    return CursorMove(channel.name, before_d, new_d, before_r, new_r, last)


def cursor_join(*, user: AbstractBaseUser, channel: Channel) -> None:
    """Make a topic one of the user's channels (listed by `sync`)."""
    ChannelCursor.objects.get_or_create(user=user, channel=channel)


def receipt_targets(*, user: AbstractBaseUser, channel: Channel, move: CursorMove) -> list[tuple[str, dict[str, Any]]]:
    """(group, receipt frame) pairs for a cursor move.

    DM: the other member, always. Topic: the authors of the messages the
    move covers, for those messages. Broadcast and system channels: none.
    """
    if not move.moved:
        return []
    frame: dict[str, Any] = {"type": "receipt", "channel": channel.name, "user": user_ref(user)}
    if move.delivered != move.delivered_before:
        frame["delivered_seq"] = move.delivered
    if move.read != move.read_before:
        frame["read_seq"] = move.read
    name = channel.parsed
    if name.kind is Kind.DIRECT:
        other = name.user_b if name.user_a == user.pk else name.user_a
        return [(user_group(other), frame)]
    if name.kind is not Kind.TOPIC:
        return []
    # Only the ranges a cursor actually crossed: reading up to 3 while delivery
    # is already at 9 covers 1..3, not the messages up to 9.
    covered = Q()
    if move.delivered != move.delivered_before:
        covered |= Q(seq__gt=move.delivered_before, seq__lte=move.delivered)
    if move.read != move.read_before:
        covered |= Q(seq__gt=move.read_before, seq__lte=move.read)
    authors = (
        Message.objects.filter(covered, channel=channel)
        .exclude(sender=user)
        .exclude(sender__isnull=True)
        .values_list("sender_id", flat=True)
        .distinct()
    )
    return [(user_group(author), frame) for author in authors]


def readers_of(*, message: Message) -> list[ChannelCursor]:
    """Who has read a message: cursors at or past its seq (the author excluded)."""
    return list(
        ChannelCursor.objects.filter(channel_id=message.channel_id, read_seq__gte=message.seq)
        .exclude(user_id=message.sender_id)
        .select_related("user")
        .order_by("user__username")
    )


def channels_sync(*, user: AbstractBaseUser) -> list[dict[str, Any]]:
    """Every channel of the user with cursors and unread counts, in one query.

    The user's channels: DMs, system:U, broadcast (once they exist), and the
    topics the user has a cursor in (subscribed, read or received once) or
    is a member of. `unread` counts other users' live messages after read_seq.
    """
    cursor = ChannelCursor.objects.filter(user=user, channel=OuterRef("pk"))
    read_seq = Coalesce(Subquery(cursor.values("read_seq")[:1]), Value(0))
    unread = (
        Message.objects.filter(channel=OuterRef("pk"), seq__gt=OuterRef("read_seq"), deleted_at__isnull=True)
        .filter(~Q(sender=user) | Q(sender__isnull=True))
        .order_by()
        .values("channel")
        .annotate(n=Count("pk"))
        .values("n")
    )
    uid = user.pk
    mine = (
        Q(name__in=("broadcast", f"system:{uid}"))
        | Q(kind=Kind.DIRECT, name__startswith=f"dm:{uid}:")
        | Q(kind=Kind.DIRECT, name__endswith=f":{uid}")
        # A cursor outlives membership: a private topic needs a membership too.
        | Q(kind=Kind.TOPIC, is_private=False, pk__in=ChannelCursor.objects.filter(user=user).values("channel_id"))
        | Q(kind=Kind.TOPIC, pk__in=ChannelMember.objects.filter(user=user).values("channel_id"))
    )
    rows = (
        Channel.objects.filter(mine)
        .annotate(
            delivered_seq=Coalesce(Subquery(cursor.values("delivered_seq")[:1]), Value(0)),
            read_seq=read_seq,
        )
        .annotate(unread=Coalesce(Subquery(unread, output_field=IntegerField()), Value(0)))
        .order_by("name")
        .values("name", "last_seq", "delivered_seq", "read_seq", "unread")
    )
    return [
        {
            "channel": row["name"],
            "last_seq": row["last_seq"],
            "delivered_seq": row["delivered_seq"],
            "read_seq": row["read_seq"],
            "unread": row["unread"],
        }
        for row in rows
    ]


def cursor_request(
    *, user: AbstractBaseUser, name: Any, delivered: int | None = None, read: int | None = None
) -> tuple[CursorMove, list[tuple[str, dict[str, Any]]]]:
    """A `received` or `read` request: authorise, move, and say who gets receipts."""
    from .selectors import channel_readable

    channel = channel_readable(user=user, name=name)
    if channel is None:  # a DM or notice channel with no message yet
        return CursorMove(str(name), 0, 0, 0, 0), []
    move = cursor_move(user=user, channel=channel, delivered=delivered, read=read)
    return move, receipt_targets(user=user, channel=channel, move=move)
