"""Presence reads and writes that touch the database: visibility and last seen."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection
from django.db.models import Q
from django.utils import timezone

from messaging.channels import dm_channel
from messaging.models import Channel, ChannelCursor, ChannelMember
from messaging.wire import iso_utc, user_ref

from .models import LastSeen


def last_seen_touch(*, user_id: int) -> None:
    _last_seen_upsert([user_id], at=timezone.now())


def last_seen_touch_many(user_ids: list[int]) -> list[None]:
    """last_seen = now for the users of the moment (sessions ending, the
    once-a-minute activity mark): one statement, however many. Every
    session of a user who pings marks it once a minute, so 10,000 sessions
    opened together came due together; one transaction each filled the
    thread pool for seconds and held up the sends queued behind them."""
    _last_seen_upsert(user_ids, at=timezone.now())
    return [None] * len(user_ids)


def _last_seen_upsert(user_ids: list[int], *, at: Any) -> set[int]:
    """Set last_seen of those of `user_ids` that still exist; their ids.

    One statement (no get-then-write transaction per user), in plain SQL
    that PostgreSQL and the embedded SQLite both run."""
    ids = sorted(set(user_ids))
    if not ids:
        return set()
    users = get_user_model()._meta
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {LastSeen._meta.db_table} (user_id, at) "
            f"SELECT {users.pk.column}, %s FROM {users.db_table} "
            f"WHERE {users.pk.column} IN ({', '.join(['%s'] * len(ids))}) "
            "ON CONFLICT (user_id) DO UPDATE SET at = EXCLUDED.at RETURNING user_id",
            [at, *ids],
        )
        return {uid for (uid,) in cursor.fetchall()}


def presence_visible(
    *, viewer: AbstractBaseUser, refs: list[int | str], topics: list[str]
) -> tuple[list[Any], list[int | str]]:
    """Split requested users into those `viewer` may see and the rest.

    Visible: the viewer, DM partners (a dm channel exists), and members of a
    topic in `topics` (the session's subscriptions): users with a cursor in
    it or a private membership. Unknown and invisible users are answered
    alike, so a refusal tells nothing.
    """
    ids = [r for r in refs if isinstance(r, int)]
    names = [r for r in refs if isinstance(r, str)]
    users = list(get_user_model().objects.filter(Q(pk__in=ids) | Q(username__in=names)))
    others = [u.pk for u in users if u.pk != viewer.pk]
    dm_names = {str(dm_channel(viewer.pk, uid)): uid for uid in others}
    seen = {dm_names[n] for n in Channel.objects.filter(name__in=list(dm_names)).values_list("name", flat=True)}
    if topics:
        seen |= set(
            ChannelCursor.objects.filter(channel__name__in=topics, user_id__in=others).values_list("user_id", flat=True)
        )
        seen |= set(
            ChannelMember.objects.filter(channel__name__in=topics, user_id__in=others).values_list("user_id", flat=True)
        )
    visible = [u for u in users if u.pk == viewer.pk or u.pk in seen]
    found = {u.pk for u in visible} | {u.get_username() for u in visible}
    return visible, [r for r in refs if r not in found]


def presence_states(*, users: list[Any], statuses: dict[int, str]) -> list[dict[str, Any]]:
    """`presence` entries with last_seen from the database (one query)."""
    seen = dict(LastSeen.objects.filter(user_id__in=[u.pk for u in users]).values_list("user_id", "at"))
    return [
        {"user": user_ref(u), "status": statuses.get(u.pk, "offline"), "last_seen": iso_utc(seen.get(u.pk))}
        for u in users
    ]


def presence_frame(*, user_id: int, status: str) -> dict[str, Any] | None:
    """The `presence` event for a change; going offline records last_seen."""
    user = get_user_model().objects.filter(pk=user_id).first()
    if user is None:
        return None
    if status == "offline":
        last_seen_touch(user_id=user_id)
    return {"type": "presence", **presence_states(users=[user], statuses={user_id: status})[0]}


EnterItem = tuple[AbstractBaseUser, bool, str | None]  # (user, touch last_seen, status to announce or None)


def presence_enter_many(items: list[EnterItem]) -> list[dict[str, Any] | None]:
    """The start of the sessions of a connect burst: last_seen where due, then
    the `presence` event of each that has a status to announce. At most two
    statements whatever their number: one upsert of the due last_seen (only
    of users that still exist), one read of the others' last_seen. The users
    come from the connects (no reload): a user deleted meanwhile gets no
    frame, as `presence_frame` gives none."""
    now = timezone.now()
    touched = [user.pk for user, touch, _ in items if touch]
    exists: dict[int, Any] = dict.fromkeys(_last_seen_upsert(touched, at=now), now)
    untouched = sorted({user.pk for user, touch, status in items if status is not None and not touch})
    if untouched:
        found = set(get_user_model().objects.filter(pk__in=untouched).values_list("pk", flat=True))
        seen = dict(LastSeen.objects.filter(user_id__in=untouched).values_list("user_id", "at"))
        exists.update((uid, seen.get(uid)) for uid in found)
    return [
        None
        if status is None or user.pk not in exists
        else {"type": "presence", "user": user_ref(user), "status": status, "last_seen": iso_utc(exists[user.pk])}
        for user, _, status in items
    ]
