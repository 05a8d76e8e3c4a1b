"""Delivery and read cursors, receipts, and the per-user channel list (`sync`).

Cursors are written once per `received` or `read` request (a client
acknowledges a range with one request, never one message at a time), as one
upsert that only moves forward; nothing is written per message per recipient
when messages are sent. A server process hands the requests its sessions
make at the same time to `cursor_requests` as one batch: one authorisation,
one upsert and one receipt query for all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import OperationalError, connection, transaction
from django.db.models import Count, IntegerField, OuterRef, Q, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from .channels import ChannelName, Kind, user_group
from .errors import ChatError
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


Receipts = list[tuple[str, dict[str, Any]]]


def receipt_targets(*, user: AbstractBaseUser, channel: Channel, move: CursorMove) -> Receipts:
    """(group, receipt frame) pairs for a cursor move.

    DM: the other member, always. Topic: the authors of the messages the
    move covers, for those messages. Broadcast and system channels: none.
    """
    return receipts_targets(moves=[(user, channel, move)])[0]


def receipts_targets(*, moves: Sequence[tuple[AbstractBaseUser, Channel, CursorMove]]) -> list[Receipts]:
    """`receipt_targets` of many moves, with one query for all their topics."""
    frames: list[dict[str, Any] | None] = []
    ranges: list[tuple[int, int, int, int, int]] = []  # (move, channel id, after, upto, mover)
    for i, (user, channel, move) in enumerate(moves):
        if not move.moved:
            frames.append(None)
            continue
        frame: dict[str, Any] = {"type": "receipt", "channel": channel.name, "user": user_ref(user)}
        if move.delivered != move.delivered_before:
            frame["delivered_seq"] = move.delivered
        if move.read != move.read_before:
            frame["read_seq"] = move.read
        frames.append(frame)
        if channel.parsed.kind is Kind.TOPIC:
            # Only the ranges a cursor actually crossed: reading up to 3 while
            # delivery is already at 9 covers 1..3, not the messages up to 9.
            if move.delivered != move.delivered_before:
                ranges.append((i, channel.pk, move.delivered_before, move.delivered, user.pk))
            if move.read != move.read_before:
                ranges.append((i, channel.pk, move.read_before, move.read, user.pk))
    authors = _authors_in(ranges)
    targets: list[Receipts] = []
    for i, ((user, channel, _), frame) in enumerate(zip(moves, frames, strict=True)):
        name = channel.parsed
        if frame is None or name.kind not in (Kind.DIRECT, Kind.TOPIC):
            targets.append([])
        elif name.kind is Kind.DIRECT:
            other = name.user_b if name.user_a == user.pk else name.user_a
            targets.append([(user_group(other), frame)])
        else:
            targets.append([(user_group(author), frame) for author in sorted(authors.get(i, ()))])
    return targets


def _authors_in(ranges: list[tuple[int, int, int, int, int]]) -> dict[int, set[int]]:
    """Move index -> the other users who wrote a message in its ranges (one query)."""
    found: dict[int, set[int]] = {}
    if not ranges:
        return found
    rows = ", ".join(["(%s, %s, %s, %s, %s)"] * len(ranges))
    sql = (
        f"WITH r(i, channel_id, lo, hi, uid) AS (VALUES {rows}) "
        f"SELECT DISTINCT r.i, m.sender_id FROM r JOIN {Message._meta.db_table} m "
        "ON m.channel_id = r.channel_id AND m.seq > r.lo AND m.seq <= r.hi "
        "WHERE m.sender_id IS NOT NULL AND m.sender_id <> r.uid"
    )
    with connection.cursor() as cur:
        cur.execute(sql, [value for row in ranges for value in row])
        for i, sender in cur.fetchall():
            found.setdefault(i, set()).add(sender)
    return found


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


# --- the batch of a process ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CursorAsk:
    """One `received` (delivered) or `read` request of a batch."""

    user: AbstractBaseUser
    name: ChannelName
    delivered: int | None = None
    read: int | None = None


def cursor_requests(asks: Sequence[CursorAsk]) -> list[tuple[CursorMove, Receipts] | ChatError]:
    """`cursor_request` for many requests at once, one outcome per request.

    Authorisation for all of them in at most two queries (a `forbidden` or
    `not_found` is the outcome of its request only), the cursors moved by
    `cursors_move`, the receipts of every move found with one query.
    Requests of one user for one channel end at their max, as they would one
    after the other, and each answer carries the cursor after all of them.
    """
    from .selectors import channels_readable

    found = channels_readable(asks=[(ask.user, ask.name) for ask in asks])
    outcomes: list[tuple[CursorMove, Receipts] | ChatError | None] = [None] * len(asks)
    todo: list[tuple[int, Channel]] = []
    for i, (ask, channel) in enumerate(zip(asks, found, strict=True)):
        if isinstance(channel, ChatError):
            outcomes[i] = channel
        elif channel is None:  # a DM or notice channel with no message yet
            outcomes[i] = (CursorMove(str(ask.name), 0, 0, 0, 0), [])
        else:
            todo.append((i, channel))
    if todo:
        moves = cursors_move(requests=[(asks[i].user, channel, asks[i].delivered, asks[i].read) for i, channel in todo])
        # Requests merged into one move: its receipts go out once.
        first: dict[tuple[int, int], int] = {}
        for n, (i, channel) in enumerate(todo):
            first.setdefault((asks[i].user.pk, channel.pk), n)
        unique = sorted(first.values())
        merged = [(asks[todo[n][0]].user, todo[n][1], moves[n]) for n in unique]
        receipts = dict(zip(unique, receipts_targets(moves=merged), strict=True))
        for n, (i, _) in enumerate(todo):
            outcomes[i] = (moves[n], receipts.get(n, []))
    return outcomes  # type: ignore[return-value]  # every slot is filled


def cursors_move(*, requests: Sequence[tuple[AbstractBaseUser, Channel, int | None, int | None]]) -> list[CursorMove]:
    """`cursor_move` for many (user, channel, delivered, read) requests.

    `channel.last_seq` as read by the caller is the clamp. On PostgreSQL:
    the cursor rows are locked in key order (a missing one made first), and
    the ones that move are written by one `INSERT ... ON CONFLICT DO UPDATE`
    with `GREATEST`. Elsewhere (SQLite, the embedded default): one
    `cursor_move` per request.
    """
    if connection.vendor != "postgresql":
        return [
            cursor_move(user=user, channel=channel, delivered=delivered, read=read)
            for user, channel, delivered, read in requests
        ]
    # (user id, channel id) -> [delivered, read] wanted, clamped to last_seq.
    wanted: dict[tuple[int, int], list[int]] = {}
    for user, channel, delivered, read in requests:
        last = channel.last_seq
        want = wanted.setdefault((user.pk, channel.pk), [0, 0])
        if delivered is not None:
            want[0] = max(want[0], min(delivered, last))
        if read is not None:
            want[1] = max(want[1], min(read, last))
    keys = sorted(wanted)
    for attempt in range(DEADLOCK_RETRIES + 1):
        try:
            before, after = _cursors_upsert(keys, wanted)
            break
        except OperationalError as exc:
            # Rows two batches both create can still meet in opposite orders
            # (one of them made it meanwhile): PostgreSQL aborts one, which
            # runs again.
            if getattr(exc.__cause__, "sqlstate", None) != "40P01" or attempt == DEADLOCK_RETRIES:
                raise
    moves = []
    for user, channel, _, _ in requests:
        key = (user.pk, channel.pk)
        (bd, br), (d, r) = before[key], after[key]
        moves.append(CursorMove(channel.name, bd, d, br, r, channel.last_seq))
    return moves


DEADLOCK_RETRIES = 3
Cursors = dict[tuple[int, int], tuple[int, int]]


def _cursors_upsert(keys: list[tuple[int, int]], wanted: dict[tuple[int, int], list[int]]) -> tuple[Cursors, Cursors]:
    """One transaction: (user id, channel id) -> (delivered, read) before and after."""
    with transaction.atomic(), connection.cursor() as cur:
        before = _cursors_locked(cur, keys)
        missing = [key for key in keys if key not in before]
        if missing:
            now = timezone.now()
            cur.execute(
                f"INSERT INTO {_CURSORS} (user_id, channel_id, delivered_seq, read_seq, updated_at) "
                f"VALUES {', '.join(['(%s, %s, 0, 0, %s)'] * len(missing))} "
                "ON CONFLICT (user_id, channel_id) DO NOTHING",
                [value for key in missing for value in (*key, now)],
            )
            before.update(_cursors_locked(cur, missing))
        after = dict(before)
        rows = []
        for key in keys:
            d, r = wanted[key]
            bd, br = before[key]
            if max(d, r) > bd or r > br:
                rows.append((*key, max(d, r), r))
        if rows:
            cur.execute(
                f"INSERT INTO {_CURSORS} AS c (user_id, channel_id, delivered_seq, read_seq, updated_at) "
                f"VALUES {', '.join(['(%s, %s, %s, %s, %s)'] * len(rows))} "
                "ON CONFLICT (user_id, channel_id) DO UPDATE SET "
                "delivered_seq = GREATEST(c.delivered_seq, c.read_seq, EXCLUDED.delivered_seq, EXCLUDED.read_seq), "
                "read_seq = GREATEST(c.read_seq, EXCLUDED.read_seq), updated_at = EXCLUDED.updated_at "
                "RETURNING user_id, channel_id, delivered_seq, read_seq",
                [value for row in rows for value in (*row, timezone.now())],
            )
            after.update({(u, c): (d, r) for u, c, d, r in cur.fetchall()})
    return before, after


_CURSORS = ChannelCursor._meta.db_table


def _cursors_locked(cur: Any, keys: Sequence[tuple[int, int]]) -> Cursors:
    """The existing cursor rows of `keys`, locked (in key order: two batches
    never wait on each other in a cycle)."""
    cur.execute(
        f"SELECT c.user_id, c.channel_id, c.delivered_seq, c.read_seq FROM {_CURSORS} c "
        f"JOIN (VALUES {', '.join(['(%s, %s)'] * len(keys))}) AS k(user_id, channel_id) "
        "ON c.user_id = k.user_id AND c.channel_id = k.channel_id "
        "ORDER BY c.user_id, c.channel_id FOR UPDATE OF c",
        [value for key in keys for value in key],
    )
    return {(u, c): (d, r) for u, c, d, r in cur.fetchall()}
