"""Writes: sending messages (stored before delivery), topics and membership.

The sends of many sessions are stored together (`messages_send`, called
by the session actors through a `realtime.batching` batcher): one
transaction per batch, every item validated and authorised on its own
first. The functions that deliver do so only after that transaction
commits: `messages_send` returns and the async caller publishes (see
`delivery.message_publish`); sync callers use the `*_on_commit` helpers.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from notifications.tasks import messages_notify_on_commit

from . import delivery
from .channels import BROADCAST, ChannelName, Kind, dm_channel, system_channel, topic_channel
from .errors import BadRequest, Conflict, Forbidden, NotFound
from .models import Channel, ChannelMember, Message
from .rules import body_validate, client_id_validate
from .selectors import User, channel_get, channel_may_read, user_resolve

log = logging.getLogger(__name__)


@dataclass(slots=True)
class SendRequest:
    """One send of a session: `to` (a user id or username) for `direct`,
    `name` for `publish` and `broadcast`."""

    sender: AbstractBaseUser
    body: str
    client_id: str | None = None
    to: int | str | None = None
    name: ChannelName | None = None


@dataclass(slots=True)
class _Item:
    """An authorised, validated message waiting for its seq."""

    channel: Channel
    sender: AbstractBaseUser | None
    body: str
    client_id: str | None

    @property
    def key(self) -> tuple[int, str] | None:
        """What idempotency compares: the same sender's client_id."""
        if self.client_id and self.sender is not None:
            return (self.sender.pk, self.client_id)
        return None


Outcome = tuple[Message, bool] | Exception


def channel_write_check(*, user: AbstractBaseUser, name: ChannelName, channel: Channel | None) -> Channel | None:
    """Whether `user` may send to `name` (whose row, if any, is `channel`).

    Returns the channel, or None when it is to be created. Raises Forbidden
    or NotFound (a topic that does not exist and may not be created).
    """
    if name.kind is Kind.SYSTEM:
        raise Forbidden("system channels are written by the server only")
    if name.kind is Kind.BROADCAST and not user.is_staff:
        raise Forbidden("only staff may broadcast")
    if not channel_may_read(user=user, name=name, channel=channel):
        raise Forbidden(f"you may not write to {name}")
    if channel is None and name.kind is Kind.TOPIC and not settings.CHAT["TOPIC_AUTOCREATE"]:
        raise NotFound(f"no topic {name.topic!r}")
    return channel


def channel_for_write(*, user: AbstractBaseUser, name: ChannelName, create: bool = True) -> Channel:
    """The channel `user` may send to (or subscribe to), created if allowed."""
    channel = channel_write_check(user=user, name=name, channel=channel_get(name=name))
    if channel is not None:
        return channel
    if name.kind is Kind.TOPIC and not create:
        raise NotFound(f"no topic {name.topic!r}")
    return channel_ensure(name=name, created_by=user)


def channel_ensure(*, name: ChannelName, created_by: AbstractBaseUser | None = None) -> Channel:
    """Get or create a channel row; safe against a concurrent creator."""
    channel, _ = Channel.objects.get_or_create(
        name=str(name), defaults={"kind": name.kind.value, "created_by": created_by}
    )
    return channel


def _recent_duplicates(keys: set[tuple[int, str]]) -> dict[tuple[int, str], Message]:
    """The newest message of each (sender id, client_id) within the idempotency window."""
    if not keys:
        return {}
    since = timezone.now() - timedelta(seconds=settings.CHAT["IDEMPOTENCY_WINDOW"])
    rows = (
        Message.objects.select_related("channel", "sender")
        .filter(
            sender_id__in={sender for sender, _ in keys},
            client_id__in={client_id for _, client_id in keys},
            created_at__gte=since,
        )
        .order_by("created_at", "id")
    )
    # The IN lists pair every sender with every client_id: keep the asked pairs, the newest last.
    return {key: row for row in rows if (key := (row.sender_id, row.client_id)) in keys}


def _seq_take(channel_id: int, count: int = 1) -> int:
    """Add `count` to the channel's last_seq and return it; the row stays locked until commit."""
    table = Channel._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET last_seq = last_seq + %s WHERE id = %s RETURNING last_seq", [count, channel_id]
        )
        row = cursor.fetchone()
    if row is None:
        raise NotFound(f"channel {channel_id} no longer exists")
    return row[0]


def _seqs_take(counts: Counter[int]) -> dict[int, int]:
    """`_seq_take` for several channels: {channel id: its new last_seq}.

    The rows are locked in id order, so two batches sharing channels wait
    for each other instead of deadlocking. On PostgreSQL that is one
    `SELECT ... ORDER BY id FOR UPDATE` and one `UPDATE ... FROM unnest(...)`
    whatever the number of channels; elsewhere (SQLite, which locks the
    whole database per transaction anyway) one UPDATE per channel.
    """
    ids = sorted(counts)
    if len(ids) == 1 or connection.vendor != "postgresql":
        return {channel_id: _seq_take(channel_id, counts[channel_id]) for channel_id in ids}
    table = Channel._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id FROM {table} WHERE id = ANY(%s) ORDER BY id FOR UPDATE", [ids])
        cursor.execute(
            f"UPDATE {table} AS c SET last_seq = c.last_seq + v.n"
            " FROM unnest(%s::bigint[], %s::bigint[]) AS v(id, n)"
            " WHERE c.id = v.id RETURNING c.id, c.last_seq",
            [ids, [counts[channel_id] for channel_id in ids]],
        )
        last = dict(cursor.fetchall())
    if gone := [channel_id for channel_id in ids if channel_id not in last]:
        raise NotFound(f"channel {gone[0]} no longer exists")
    return last


def _store(items: list[_Item]) -> list[tuple[Message, bool]]:
    """Store `items` in one transaction: the seqs of every channel, then one INSERT.

    A client_id seen from the same sender within the idempotency window
    (before, under the locks, or earlier in this batch) stores nothing and
    answers with the first message. Raises if anything fails: nothing of the
    batch is stored.
    """
    outcomes: list[tuple[Message, bool] | None] = [None] * len(items)
    seen = _recent_duplicates({key for item in items if (key := item.key)})
    first: dict[tuple[int, str], int] = {}  # key -> index of the item that stores it
    repeats: list[tuple[int, tuple[int, str]]] = []  # items answered with an earlier one of the batch
    todo: list[int] = []
    for index, item in enumerate(items):
        key = item.key
        if key in seen:
            outcomes[index] = (seen[key], False)
        elif key in first:
            repeats.append((index, key))
        else:
            if key is not None:
                first[key] = index
            todo.append(index)
    if not todo:  # only retries of stored messages: nothing to lock
        return outcomes
    with transaction.atomic():
        counts = Counter(items[i].channel.pk for i in todo)
        last = _seqs_take(counts)
        if first:
            # Re-check under the row locks: a retry racing the first send to
            # the same channel waited for its commit and sees it now.
            late = _recent_duplicates(set(first))
            if late:
                for index in [i for i in todo if items[i].key in late]:
                    outcomes[index] = (late[items[index].key], False)
                    todo.remove(index)
                left = Counter(items[i].channel.pk for i in todo)
                for channel_id, count in counts.items():
                    if left[channel_id] < count:
                        last[channel_id] = _seq_take(channel_id, left[channel_id] - count)
                counts = left
        next_seq = {channel_id: last[channel_id] - counts[channel_id] + 1 for channel_id in counts}
        messages = []
        for index in todo:
            item = items[index]
            seq = next_seq[item.channel.pk]
            next_seq[item.channel.pk] = seq + 1
            messages.append(
                Message(channel=item.channel, seq=seq, sender=item.sender, body=item.body, client_id=item.client_id)
            )
        Message.objects.bulk_create(messages)
        # Push notifications for offline users are decided after the commit, in a task.
        messages_notify_on_commit([m.pk for m in messages if m.channel.kind != Kind.BROADCAST])
    for index, message in zip(todo, messages, strict=True):
        message.channel.last_seq = last[message.channel.pk]
        outcomes[index] = (message, True)
    for index, key in repeats:
        outcomes[index] = (outcomes[first[key]][0], False)
    return outcomes


def _store_each(items: list[_Item]) -> list[Outcome]:
    """`_store` for a batch; if it fails, each item alone, so only the culprit fails."""
    if not items:
        return []
    try:
        return _store(items)
    except Exception:
        if len(items) == 1:
            raise
        log.warning("storing a batch of %d messages failed; storing them one by one", len(items), exc_info=True)
    outcomes: list[Outcome] = []
    for item in items:
        try:
            outcomes.append(_store([item])[0])
        except Exception as exc:  # noqa: BLE001 - that sender hears why, the others do not
            outcomes.append(exc)
    return outcomes


def message_store(
    *, channel: Channel, sender: AbstractBaseUser | None, body: str, client_id: str | None = None
) -> tuple[Message, bool]:
    """Store a message with the next seq. Returns (message, created).

    With a `client_id` seen from the same sender within the idempotency
    window, nothing is stored and the first message comes back.
    """
    body = body_validate(body)
    client_id = client_id_validate(client_id)
    return _store([_Item(channel=channel, sender=sender, body=body, client_id=client_id)])[0]


def _recipients(refs: list[int | str]) -> dict[int | str, AbstractBaseUser]:
    """The users of `direct` frames' `to`, by id and by username, in one query."""
    ids = {ref for ref in refs if isinstance(ref, int)}
    names = {ref for ref in refs if isinstance(ref, str)}
    if not refs:
        return {}
    found: dict[int | str, AbstractBaseUser] = {}
    for user in User.objects.filter(Q(pk__in=ids) | Q(username__in=names)):
        if user.pk in ids:
            found[user.pk] = user
        if user.get_username() in names:
            found[user.get_username()] = user
    return found


def _send_channel(request: SendRequest, recipients: dict[int | str, AbstractBaseUser]) -> ChannelName:
    """The channel a send goes to, checked as far as it can be without its row."""
    if request.to is not None:
        body_validate(request.body)
        recipient = recipients.get(request.to)
        if recipient is None:
            raise NotFound(f"no user {request.to!r}")
        return dm_channel(request.sender.pk, recipient.pk)
    name = request.name
    # system: is nobody's to write (channel_write_check says forbidden); a
    # dm: the sender may not read is forbidden too (protocol section 3),
    # their own is a misuse of publish.
    if name.kind is Kind.DIRECT:
        if request.sender.pk not in name.members():
            raise Forbidden(f"you may not write to {name}")
        raise BadRequest("publish takes a topic: channel; send direct messages with `direct`")
    return name


def messages_send(requests: list[SendRequest]) -> list[Outcome]:
    """Authorise and store the sends of many sessions; one outcome per request.

    Each request is validated and authorised on its own (its error is its
    outcome); the rest are stored by `_store` in one transaction. The
    recipients and channels of the whole batch are read in one query each.
    """
    outcomes: list[Outcome | None] = [None] * len(requests)
    recipients = _recipients([r.to for r in requests if r.to is not None])
    names: dict[int, ChannelName] = {}
    for index, request in enumerate(requests):
        try:
            names[index] = _send_channel(request, recipients)
        except Exception as exc:  # noqa: BLE001 - that sender's error only
            outcomes[index] = exc
    rows = {c.name: c for c in Channel.objects.filter(name__in={str(name) for name in names.values()})}
    items: dict[int, _Item] = {}
    for index, name in names.items():
        request = requests[index]
        try:
            channel = rows.get(str(name))
            if request.to is None:
                channel = channel_write_check(user=request.sender, name=name, channel=channel)
            body = body_validate(request.body)
            client_id = client_id_validate(request.client_id)
            if channel is None:
                channel = rows[str(name)] = channel_ensure(name=name, created_by=request.sender)
            items[index] = _Item(channel=channel, sender=request.sender, body=body, client_id=client_id)
        except Exception as exc:  # noqa: BLE001 - that sender's error only
            outcomes[index] = exc
    for index, outcome in zip(items, _store_each(list(items.values())), strict=True):
        outcomes[index] = outcome
    return outcomes


def _one(outcome: Outcome) -> tuple[Message, bool]:
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def message_send(
    *, sender: AbstractBaseUser, name: ChannelName, body: str, client_id: str | None = None
) -> tuple[Message, bool]:
    """Authorise and store a message on a topic or broadcast channel."""
    return _one(messages_send([SendRequest(sender=sender, body=body, client_id=client_id, name=name)])[0])


def direct_send(
    *, sender: AbstractBaseUser, to: int | str, body: str, client_id: str | None = None
) -> tuple[Message, bool]:
    """Store a direct message in dm:A:B; `to` is a user id or a username."""
    return _one(messages_send([SendRequest(sender=sender, body=body, client_id=client_id, to=to)])[0])


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
