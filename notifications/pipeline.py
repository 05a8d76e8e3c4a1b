"""The notification pipeline: who is notified for a stored message, when the
notification goes out, and each try on each device.

Three steps, each a Celery task in `tasks.py` taking ids:

1. `notifications_for_message`: right after the message's commit. Finds the
   addressed users (DM partner, `@mentioned` readers of a topic, the owner of
   a system notice, users with `all` on the topic), reads their presence, and
   writes one Notification per (user, message): `queued`, `suppressed` (by a
   preference), or `coalesced` into a waiting one of the same DM sender.
   Users with a live session that is not `away` get none.
2. `notification_dispatch`: when it is due (after the coalescing window, or
   when quiet hours end). Quiet hours hold or drop it; then one Delivery per
   enabled device.
3. `delivery_try`: one push to one device, claimed first so that a
   redelivered task does not push at the same time, and outside any
   transaction; decides sent / retry (with the delay) / gone (device
   removed) / failed.

Every function takes `now` so that tests need no sleep.
"""

from __future__ import annotations

import logging
import time as clock
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models.functions import Lower
from django.utils import timezone

from messaging.channels import Kind
from messaging.models import Message
from messaging.selectors import channel_may_read
from messaging.wire import message_frame, user_ref
from presence.store import presence_store

from . import rules
from .backends import Push, PushRefused, PushResult, backend_for, console_mode
from .models import Attempt, Delivery, Device, Notification, Preference
from .selectors import channel_level, quiet_hours_of

log = logging.getLogger(__name__)
User = get_user_model()


def _statuses(user_ids: list[int]) -> dict[int, str]:
    """Presence now, across processes (Redis) or in this process (embedded)."""
    if not user_ids:
        return {}
    return async_to_sync(presence_store().statuses)(user_ids, now=clock.time())


def _addressed(message: Message) -> tuple[dict[int, Any], set[int]]:
    """Users the message addresses (id -> user) and the ids it mentions."""
    name = message.channel.parsed
    mentioned_names = rules.mentions_parse(message.body)
    users: dict[int, Any] = {}
    mentioned: set[int] = set()
    if mentioned_names:
        for user in User.objects.annotate(lname=Lower("username")).filter(lname__in=mentioned_names, is_active=True):
            mentioned.add(user.pk)
            if name.kind is Kind.TOPIC:
                users[user.pk] = user
    if name.kind in (Kind.DIRECT, Kind.SYSTEM):
        ids = [uid for uid in name.members() if uid != message.sender_id]
        users = {u.pk: u for u in User.objects.filter(pk__in=ids, is_active=True)}
    elif name.kind is Kind.TOPIC:
        opted = Preference.objects.filter(channels__has_key=str(name), user__is_active=True).select_related("user")
        for pref in opted:
            if pref.channels.get(str(name)) == rules.ALL:
                users.setdefault(pref.user_id, pref.user)
        # Only readers: a mention in a private topic reaches members only.
        users = {uid: u for uid, u in users.items() if channel_may_read(user=u, name=name, channel=message.channel)}
    users.pop(message.sender_id, None)
    return users, mentioned


def notifications_for_message(*, message_id: int, now: datetime | None = None) -> list[Notification]:
    """Write the notifications of a stored message; returns the new heads to dispatch.

    Idempotent: a second run finds the (user, message) rows and adds nothing.
    """
    now = now or timezone.now()
    message = Message.objects.select_related("channel", "sender").filter(pk=message_id).first()
    if message is None or message.deleted or message.channel.kind == Kind.BROADCAST:
        return []
    users, mentioned = _addressed(message)
    statuses = _statuses(list(users))
    prefs = {p.user_id: p for p in Preference.objects.filter(user_id__in=list(users))}
    heads = []
    for uid in sorted(users):
        pref = prefs.get(uid) or Preference(user_id=uid)
        if not rules.presence_wants_push(status=statuses.get(uid, "offline"), when_away=pref.when_away):
            continue  # a live session shows the message itself
        head = _notification_write(message=message, user_id=uid, pref=pref, mentioned=uid in mentioned, now=now)
        if head is not None:
            heads.append(head)
    return heads


def _notification_write(
    *, message: Message, user_id: int, pref: Preference, mentioned: bool, now: datetime
) -> Notification | None:
    kind = message.channel.kind
    level = channel_level(pref, channel=message.channel.name, kind=kind)
    reason = rules.notify_reason(kind=kind, level=level, mentioned=mentioned)
    fields: dict[str, Any] = {
        "channel": message.channel.name,
        "sender_id": message.sender_id,
        "reason": reason or (rules.MENTION if mentioned else kind),
        "payload": message_frame(message),
        "due_at": now,
    }
    if not pref.enabled or reason is None:
        detail = "disabled" if not pref.enabled else ("muted" if level == rules.MUTED else "mentions_only")
        fields.update(state=Notification.State.SUPPRESSED, detail=detail)
        Notification.objects.get_or_create(user_id=user_id, message=message, defaults=fields)
        return None
    window = settings.NOTIFICATIONS["COALESCE_WINDOW"]
    with transaction.atomic():
        if kind == Kind.DIRECT and window > 0:
            # One user's coalescing decisions queue here, so two DMs at once
            # cannot both start a notification.
            User.objects.select_for_update().filter(pk=user_id).first()
            head = (
                Notification.objects.select_for_update()
                .filter(
                    user_id=user_id,
                    channel=message.channel.name,
                    sender_id=message.sender_id,
                    state=Notification.State.QUEUED,
                    merged_into=None,
                )
                .exclude(message=message)
                .order_by("-id")
                .first()
            )
            if head is not None and rules.coalesce_open(head_created_at=head.created_at, now=now, window=window):
                row, created = Notification.objects.get_or_create(
                    user_id=user_id,
                    message=message,
                    defaults={**fields, "state": Notification.State.COALESCED, "merged_into": head},
                )
                if created:
                    head.count += 1
                    head.save(update_fields=["count"])
                return None
            fields["due_at"] = now + timedelta(seconds=window)
        row, created = Notification.objects.get_or_create(user_id=user_id, message=message, defaults=fields)
    return row if created else None


# --- Dispatch ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Dispatch:
    """What follows a dispatch step: deliveries to try, or a later look."""

    deliveries: list[int] = field(default_factory=list)
    again_in: float | None = None


def _folded(head: Notification) -> list[Notification]:
    return [head, *head.merged.filter(state=Notification.State.COALESCED)]


def notification_dispatch(*, notification_id: int, now: datetime | None = None) -> Dispatch:
    now = now or timezone.now()
    with transaction.atomic():
        n = Notification.objects.select_for_update().filter(pk=notification_id).first()
        if n is None or n.state != Notification.State.QUEUED or n.merged_into_id is not None:
            return Dispatch()
        if n.due_at > now:
            return Dispatch(again_in=(n.due_at - now).total_seconds())
        pref = Preference.objects.filter(user_id=n.user_id).first() or Preference(user_id=n.user_id)
        if not pref.enabled:
            return _suppress(n, "disabled")
        quiet_end = rules.quiet_until(quiet_hours_of(pref), now=now)
        if quiet_end is not None:
            if pref.quiet_mode == Preference.QuietMode.DROP:
                return _suppress(n, "quiet_hours")
            n.due_at = quiet_end
            n.save(update_fields=["due_at"])
            return Dispatch(again_in=(quiet_end - now).total_seconds())
        group = _folded(n)
        latest = max(group, key=lambda row: row.message_id or 0)
        n.count, n.payload = len(group), latest.payload
        devices = list(Device.objects.filter(user_id=n.user_id, enabled=True).order_by("id"))
        if not devices:
            if console_mode():
                backend_for("webhook").send(device=None, push=_push(n))
            return _suppress(n, "no_device", fields=["count", "payload"])
        n.save(update_fields=["count", "payload"])
        ids = [
            Delivery.objects.get_or_create(notification=n, device=d, defaults={"next_at": now})[0].pk for d in devices
        ]
    return Dispatch(deliveries=ids)


def _suppress(n: Notification, detail: str, fields: list[str] | None = None) -> Dispatch:
    n.state, n.detail = Notification.State.SUPPRESSED, detail
    n.save(update_fields=["state", "detail", *(fields or [])])
    return Dispatch()


def _push(n: Notification) -> Push:
    user = User.objects.filter(pk=n.user_id).first()
    return Push(id=n.pk, user=user_ref(user) or {"id": n.user_id}, channel=n.channel, count=n.count, message=n.payload)


# --- One try on one device ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Try:
    """After a try: `retry_in` seconds until the next one, or None (done)."""

    outcome: str
    retry_in: float | None = None


# A claimed delivery is left alone this long past the push timeout; after a
# crash mid-push, the next try waits for it to run out.
CLAIM_MARGIN = 30.0


def delivery_try(*, delivery_id: int, now: datetime | None = None) -> Try:
    """Claim the delivery, push outside any transaction, record the outcome.

    The push runs with no transaction open: on SQLite a transaction holds
    the database's write lock, and nowhere should a slow endpoint hold a
    connection and locks. The claim (`claimed_until`) is what keeps a
    redelivered task from pushing at the same time: it finds the claim and
    comes back when it runs out, to find the delivery done.
    """
    clock_given = now is not None
    now = now or timezone.now()
    with transaction.atomic():
        d = _locked(delivery_id)
        if d is None or d.state != Delivery.State.PENDING:
            return Try("done")
        if d.notification.state == Notification.State.CANCELLED:
            d.state = Delivery.State.CANCELLED
            d.save(update_fields=["state"])
            return Try("cancelled")
        if d.device is None or not d.device.enabled:
            return _finish(d, Delivery.State.CANCELLED, "cancelled")
        if d.next_at > now:
            return Try("early", retry_in=(d.next_at - now).total_seconds())
        if d.claimed_until is not None and d.claimed_until > now:
            return Try("busy", retry_in=(d.claimed_until - now).total_seconds())
        d.claimed_until = now + timedelta(seconds=settings.NOTIFICATIONS["HTTP_TIMEOUT"] + CLAIM_MARGIN)
        d.save(update_fields=["claimed_until"])
        device, push = d.device, _push(d.notification)
    try:
        result = backend_for(device.kind).send(device=device, push=push)
        outcome, error = rules.outcome_of(kind=device.kind, status=result.status), result.error
    except PushRefused as exc:
        result, outcome, error = None, rules.Outcome.FAILED, str(exc)
    # Delays count from the answer, not from before the push.
    return _record(delivery_id, device, result, outcome, error, now if clock_given else timezone.now())


def _locked(delivery_id: int) -> Delivery | None:
    return (
        Delivery.objects.select_for_update(of=("self",))
        .select_related("notification", "device")
        .filter(pk=delivery_id)
        .first()
    )


def _record(
    delivery_id: int, device: Device, result: PushResult | None, outcome: rules.Outcome, error: str, now: datetime
) -> Try:
    with transaction.atomic():
        d = _locked(delivery_id)
        if d is None:
            return Try("done")
        d.attempts += 1
        d.claimed_until = None
        Attempt.objects.create(
            delivery=d, status=result.status if result else None, outcome=outcome.value, error=error[:255]
        )
        if outcome is rules.Outcome.SENT:
            d.sent_at = now
            return _finish(d, Delivery.State.SENT, "sent")
        if outcome is rules.Outcome.RETRY and d.attempts < settings.NOTIFICATIONS["MAX_ATTEMPTS"]:
            conf = settings.NOTIFICATIONS
            delay = rules.backoff_delay(
                attempt=d.attempts,
                base=conf["BACKOFF_BASE"],
                cap=conf["BACKOFF_CAP"],
                retry_after=rules.retry_after_parse(result.retry_after if result else None, now=now),
            )
            d.next_at = now + timedelta(seconds=delay)
            d.save(update_fields=["attempts", "claimed_until", "next_at"])
            return Try("retry", retry_in=delay)
        out = _finish(d, Delivery.State.FAILED, "gone" if outcome is rules.Outcome.GONE else "failed")
    if outcome is rules.Outcome.GONE:
        # After the commit, in its own transaction: the device's other
        # deliveries may be locked by their own tries right now.
        Device.objects.filter(pk=device.pk).delete()
        log.info("device %s removed: its endpoint answered that it is gone", device.pk)
    return out


def _finish(d: Delivery, state: str, outcome: str) -> Try:
    d.state = state
    d.save(update_fields=["state", "attempts", "claimed_until", "sent_at"])
    n = Notification.objects.select_for_update().get(pk=d.notification_id)
    if n.state == Notification.State.QUEUED:
        states = set(n.deliveries.values_list("state", flat=True))
        if Delivery.State.SENT in states:
            n.state, n.sent_at = Notification.State.SENT, n.sent_at or d.sent_at or timezone.now()
        elif Delivery.State.PENDING not in states:
            n.state, n.detail = Notification.State.FAILED, "every device failed"
        n.save(update_fields=["state", "sent_at", "detail"])
    return Try(outcome)
