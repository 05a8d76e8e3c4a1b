"""Reads: users, channels a user may read, history."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Q, QuerySet

from .channels import ChannelName, Kind
from .errors import BadRequest, Forbidden, NotFound
from .models import Channel, ChannelMember, Message

User = get_user_model()


def user_resolve(*, ref: int | str) -> AbstractBaseUser:
    """A user by id (int) or username (str); NotFound otherwise."""
    lookup = {"pk": ref} if isinstance(ref, int) else {"username": ref}
    try:
        return User.objects.get(**lookup)
    except User.DoesNotExist:
        raise NotFound(f"no user {ref!r}") from None


def channel_may_read(*, user: AbstractBaseUser, name: ChannelName, channel: Channel | None) -> bool:
    """The read rule of protocol section 3 (staff get nothing extra)."""
    if name.kind is Kind.BROADCAST:
        return True
    if name.kind is not Kind.TOPIC:
        return user.pk in name.members()
    if channel is None or not channel.is_private:
        return True
    return ChannelMember.objects.filter(channel=channel, user=user).exists()


def channel_get(*, name: ChannelName) -> Channel | None:
    return Channel.objects.filter(name=str(name)).first()


def channel_readable(*, user: AbstractBaseUser, name: ChannelName) -> Channel | None:
    """The stored channel if `user` may read it (None: no message yet).

    A missing topic is `not_found` (reading never creates one); a channel the
    user may not read is `forbidden`.
    """
    channel = channel_get(name=name)
    if not channel_may_read(user=user, name=name, channel=channel):
        raise Forbidden(f"you may not read {name}")
    if channel is None and name.kind is Kind.TOPIC:
        raise NotFound(f"no topic {name.topic!r}")
    return channel


@dataclass(frozen=True, slots=True)
class HistoryPage:
    messages: list[Message]
    has_more: bool


def history_limit(limit: int | None) -> int:
    chat = settings.CHAT
    if limit is None:
        return chat["HISTORY_DEFAULT_LIMIT"]
    if not 1 <= limit <= chat["HISTORY_MAX_LIMIT"]:
        raise BadRequest(f"limit must be between 1 and {chat['HISTORY_MAX_LIMIT']}")
    return limit


def history_page(
    *, channel: Channel | None, before: int | None = None, after: int | None = None, limit: int | None = None
) -> HistoryPage:
    """Protocol section 4: ascending by seq; `has_more` in the paging direction.

    No bound: the newest `limit`. `before`: the newest `limit` below it.
    `after` (with or without `before`): the oldest `limit` above it.
    """
    limit = history_limit(limit)
    if channel is None:
        return HistoryPage([], False)
    qs = messages_of(channel)
    if before is not None:
        qs = qs.filter(seq__lt=before)
    if after is not None:
        rows = list(qs.filter(seq__gt=after).order_by("seq")[: limit + 1])
        return HistoryPage(_with_channel(rows[:limit], channel), len(rows) > limit)
    rows = list(qs.order_by("-seq")[: limit + 1])
    return HistoryPage(_with_channel(rows[:limit][::-1], channel), len(rows) > limit)


def messages_of(channel: Channel) -> QuerySet[Message]:
    """Messages with what `message_frame` needs, without a query per row."""
    return Message.objects.filter(channel=channel).select_related("sender")


def _with_channel(rows: list[Message], channel: Channel) -> list[Message]:
    for row in rows:
        row.channel = channel
    return rows


def messages_between(*, channel: Channel, after: int, upto: int, limit: int = 500) -> list[Message]:
    """Stored messages with after < seq <= upto, ascending (replay, gap fill)."""
    rows = list(messages_of(channel).filter(seq__gt=after, seq__lte=upto).order_by("seq")[:limit])
    return _with_channel(rows, channel)


def topics_visible(*, user: AbstractBaseUser) -> QuerySet[Channel]:
    """Public topics and the private ones `user` is a member of."""
    member_of = ChannelMember.objects.filter(user=user).values("channel_id")
    return Channel.objects.filter(kind=Kind.TOPIC).filter(Q(is_private=False) | Q(pk__in=member_of))


def channel_last_seq(*, channel_id: int) -> int:
    return Channel.objects.values_list("last_seq", flat=True).get(pk=channel_id)


def messages_between_named(*, name: str, after: int, upto: int, limit: int = 500) -> list[Message]:
    """As `messages_between`, by channel name (gap fill of a live stream)."""
    channel = Channel.objects.filter(name=name).first()
    if channel is None:
        return []
    return messages_between(channel=channel, after=after, upto=upto, limit=limit)
