"""Reads: users, channels a user may read, history."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Q, QuerySet

from .channels import ChannelName, Kind
from .errors import BadRequest, ChatError, Forbidden, NotFound
from .models import Channel, ChannelMember, Message

User = get_user_model()


def user_resolve(*, ref: int | str) -> AbstractBaseUser:
    """A user by id (int) or username (str); NotFound otherwise."""
    lookup = {"pk": ref} if isinstance(ref, int) else {"username": ref}
    try:
        return User.objects.get(**lookup)
    except User.DoesNotExist:
        raise NotFound(f"no user {ref!r}") from None


def channel_may_read(
    *, user: AbstractBaseUser, name: ChannelName, channel: Channel | None, members: set[tuple[int, int]] | None = None
) -> bool:
    """The read rule of protocol section 3 (staff get nothing extra).

    `members`: (channel id, user id) memberships read beforehand for a batch
    (`channels_readable`); without it a private topic costs a query.
    """
    if name.kind is Kind.BROADCAST:
        return True
    if name.kind is not Kind.TOPIC:
        return user.pk in name.members()
    if channel is None or not channel.is_private:
        return True
    if members is not None:
        return (channel.pk, user.pk) in members
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


def channels_readable(*, asks: Sequence[tuple[AbstractBaseUser, ChannelName]]) -> list[Channel | None | ChatError]:
    """`channel_readable` for many (user, name) pairs in at most two queries.

    One outcome per pair, in order: the channel, None, or the `Forbidden` /
    `NotFound` that `channel_readable` would raise (for that pair's caller
    only). The channels are read fresh, `last_seq` included.
    """
    channels = {c.name: c for c in Channel.objects.filter(name__in={str(name) for _, name in asks})}
    private = {
        (channel.pk, user.pk)
        for user, name in asks
        if name.kind is Kind.TOPIC and (channel := channels.get(str(name))) is not None and channel.is_private
    }
    members: set[tuple[int, int]] = set()
    if private:
        members = set(
            ChannelMember.objects.filter(
                channel_id__in={c for c, _ in private}, user_id__in={u for _, u in private}
            ).values_list("channel_id", "user_id")
        )
    outcomes: list[Channel | None | ChatError] = []
    for user, name in asks:
        channel = channels.get(str(name))
        if not channel_may_read(user=user, name=name, channel=channel, members=members):
            outcomes.append(Forbidden(f"you may not read {name}"))
        elif channel is None and name.kind is Kind.TOPIC:
            outcomes.append(NotFound(f"no topic {name.topic!r}"))
        else:
            outcomes.append(channel)
    return outcomes


@dataclass(frozen=True, slots=True)
class HistoryPage:
    messages: list[Message]
    has_more: bool
    # Messages with seq below this were moved to the archive (retention);
    # None while the channel has archived nothing.
    archived_before_seq: int | None = None


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
    # Only the hot table is read, so has_more never points into the archive.
    archived = channel.archived_seq + 1 if channel.archived_seq else None
    qs = messages_of(channel)
    if before is not None:
        qs = qs.filter(seq__lt=before)
    if after is not None:
        rows = list(qs.filter(seq__gt=after).order_by("seq")[: limit + 1])
        return HistoryPage(_with_channel(rows[:limit], channel), len(rows) > limit, archived)
    rows = list(qs.order_by("-seq")[: limit + 1])
    return HistoryPage(_with_channel(rows[:limit][::-1], channel), len(rows) > limit, archived)


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


def last_seqs_named(*, names: list[str]) -> dict[str, int]:
    """`last_seq` of each named channel; 0 for one not stored yet."""
    found = dict(Channel.objects.filter(name__in=names).values_list("name", "last_seq"))
    return {name: found.get(name, 0) for name in names}


def messages_between_named(*, name: str, after: int, upto: int, limit: int = 500) -> list[Message]:
    """As `messages_between`, by channel name (gap fill of a live stream)."""
    channel = Channel.objects.filter(name=name).first()
    if channel is None:
        return []
    return messages_between(channel=channel, after=after, upto=upto, limit=limit)


def channel_seq_before(*, name: str, since: float) -> int:
    """The last seq of a channel stored before `since` (a UNIX time), 0 if none:
    where a session created at `since` starts to receive a channel it never
    acknowledged (as `backlog_for_resume` counts it)."""
    created = datetime.fromtimestamp(since, tz=UTC)
    seq = (
        Message.objects.filter(channel__name=name, created_at__lt=created)
        .order_by("-seq")
        .values_list("seq", flat=True)
        .first()
    )
    return seq or 0


def channels_auto_of(*, user_id: int) -> QuerySet[Channel]:
    """The stored channels a user receives without subscribing: DMs, system:U, broadcast."""
    return Channel.objects.filter(
        Q(name__in=("broadcast", f"system:{user_id}"))
        | Q(kind=Kind.DIRECT, name__startswith=f"dm:{user_id}:")
        | Q(kind=Kind.DIRECT, name__endswith=f":{user_id}")
    )


@dataclass(frozen=True, slots=True)
class Backlog:
    topics: list[str]
    messages: list[Message]


def backlog_for_resume(
    *, user: AbstractBaseUser, topics: list[str], acked: dict[str, int], since: float, limit: int = 10_000
) -> Backlog:
    """What a resumed session must be sent again, and the topics it may keep.

    Per channel: everything after its acknowledged seq; for a channel it never
    acknowledged (a DM or notice that came while it was away), everything
    stored since the session was created. Topics the user lost access to
    meanwhile are dropped.
    """
    stored = {c.name: c for c in Channel.objects.filter(name__in=topics)}
    private_ids = [c.pk for c in stored.values() if c.is_private]
    member_of = set(
        ChannelMember.objects.filter(user=user, channel_id__in=private_ids).values_list("channel_id", flat=True)
    )
    kept = [n for n in topics if n in stored and (not stored[n].is_private or stored[n].pk in member_of)]
    channels = [*(stored[name] for name in kept), *channels_auto_of(user_id=user.pk)]
    created = datetime.fromtimestamp(since, tz=UTC)
    cond = Q()
    for channel in channels:
        if channel.name in acked:
            if channel.last_seq > acked[channel.name]:
                cond |= Q(channel=channel, seq__gt=acked[channel.name])
        else:
            cond |= Q(channel=channel, created_at__gte=created)
    if not cond:
        return Backlog(kept, [])
    by_id = {c.pk: c for c in channels}
    rows = list(Message.objects.filter(cond).select_related("sender").order_by("channel_id", "seq")[:limit])
    for row in rows:
        row.channel = by_id[row.channel_id]
    return Backlog(kept, rows)
