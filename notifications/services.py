"""Writes: preferences, devices, read marks, cancelling on delete.

The notification pipeline itself (who is notified, sending, retries) is in
`pipeline.py`; its Celery tasks in `tasks.py`.
"""

from __future__ import annotations

import base64
import binascii
from datetime import time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from messaging.channels import Kind, parse_channel
from messaging.errors import BadRequest, ChatError, Conflict, NotFound
from messaging.selectors import channel_get, channel_may_read

from . import rules
from .backends.base import url_validate
from .backends.webpush import vapid_configured
from .models import Device, Notification, Preference
from .selectors import preference_get

PREFERENCE_KEYS = {"enabled", "quiet_hours", "when_away", "channels"}
QUIET_KEYS = {"start", "end", "tz", "then"}
MAX_CHANNEL_PREFS = 1000


def _bool(data: dict[str, Any], key: str) -> bool:
    value = data[key]
    if not isinstance(value, bool):
        raise BadRequest(f"{key} must be true or false")
    return value


def _clock(value: object, key: str) -> time:
    if not isinstance(value, str):
        raise BadRequest(f"quiet_hours.{key} must be a time as HH:MM")
    try:
        hours, minutes = value.split(":")
        if len(hours) != 2 or len(minutes) != 2:
            raise ValueError(value)
        return time(int(hours), int(minutes))
    except ValueError:
        raise BadRequest(f"quiet_hours.{key} must be a time as HH:MM, not {value[:16]!r}") from None


def _zone(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > 64:
        raise BadRequest("quiet_hours.tz must be an IANA time zone such as Europe/Berlin")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadRequest(f"unknown time zone {value[:64]!r}") from None
    return value


def _quiet_hours(value: object, pref: Preference) -> None:
    if value is None:
        pref.quiet_start = pref.quiet_end = None
        pref.quiet_tz = ""
        return
    if not isinstance(value, dict):
        raise BadRequest("quiet_hours must be null or {start, end, tz}")
    unknown = set(value) - QUIET_KEYS
    if unknown:
        raise BadRequest(f"unknown quiet_hours field {sorted(unknown)[0]!r}")
    missing = {"start", "end", "tz"} - set(value)
    if missing:
        raise BadRequest(f"quiet_hours needs {sorted(missing)[0]!r}")
    start, end = _clock(value["start"], "start"), _clock(value["end"], "end")
    if start == end:
        raise BadRequest("quiet_hours.start and quiet_hours.end must differ")
    then = value.get("then", Preference.QuietMode.DELIVER)
    if then not in Preference.QuietMode.values:
        raise BadRequest("quiet_hours.then must be 'deliver' or 'drop'")
    pref.quiet_start, pref.quiet_end, pref.quiet_tz = start, end, _zone(value["tz"])
    pref.quiet_mode = then


def _channel_key(user: AbstractBaseUser, name: object) -> str:
    """A channel the user may read and that can notify; else bad_request.

    Topics must exist; private topics the user is not in answer as missing.
    """
    try:
        parsed = parse_channel(name)
    except ChatError:
        raise BadRequest(f"unknown channel {str(name)[:80]!r}") from None
    if parsed.kind is Kind.BROADCAST:
        raise BadRequest("broadcast messages do not notify")
    channel = channel_get(name=parsed)
    if not channel_may_read(user=user, name=parsed, channel=channel) or (parsed.kind is Kind.TOPIC and channel is None):
        raise BadRequest(f"unknown channel {str(parsed)!r}")
    return str(parsed)


def _channels(user: AbstractBaseUser, value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        raise BadRequest('channels must be an object {CHANNEL: "all" | "mentions" | "muted"}')
    if len(value) > MAX_CHANNEL_PREFS:
        raise BadRequest(f"at most {MAX_CHANNEL_PREFS} channels")
    levels: dict[str, str] = {}
    for name, level in value.items():
        if level not in rules.LEVELS:
            raise BadRequest(f"channel level must be 'all', 'mentions' or 'muted', not {str(level)[:16]!r}")
        levels[_channel_key(user, name)] = level
    return levels


def preference_update(*, user: AbstractBaseUser, data: object) -> Preference:
    """PUT: replaces each top-level field the body names (`channels` as a whole)."""
    if not isinstance(data, dict):
        raise BadRequest("preferences must be a JSON object")
    unknown = set(data) - PREFERENCE_KEYS
    if unknown:
        raise BadRequest(f"unknown field {sorted(unknown)[0]!r}")
    with transaction.atomic():
        pref = preference_get(user_id=user.pk)
        if "enabled" in data:
            pref.enabled = _bool(data, "enabled")
        if "when_away" in data:
            pref.when_away = _bool(data, "when_away")
        if "quiet_hours" in data:
            _quiet_hours(data["quiet_hours"], pref)
        if "channels" in data:
            pref.channels = _channels(user, data["channels"])
        pref.save()
    return pref


# --- Devices ------------------------------------------------------------------


def _b64url(value: object, *, field: str, size: int) -> str:
    if not isinstance(value, str) or len(value) > 256:
        raise BadRequest(f"subscription.keys.{field} must be a base64url string")
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise BadRequest(f"subscription.keys.{field} is not base64url") from None
    if len(raw) != size or (field == "p256dh" and raw[0] != 4):
        raise BadRequest(f"subscription.keys.{field} has the wrong length or form")
    return value


def _subscription(value: object) -> tuple[str, dict[str, str]]:
    if not isinstance(value, dict) or not isinstance(value.get("keys"), dict):
        raise BadRequest("subscription must be a PushSubscription as JSON: {endpoint, keys: {p256dh, auth}}")
    endpoint = url_validate(value.get("endpoint"), field="subscription.endpoint")
    keys = value["keys"]
    return endpoint, {
        "p256dh": _b64url(keys.get("p256dh"), field="p256dh", size=65),
        "auth": _b64url(keys.get("auth"), field="auth", size=16),
    }


def device_register(*, user: AbstractBaseUser, data: object) -> tuple[Device, bool]:
    """Register a push target; the same endpoint again updates it. Returns (device, created)."""
    if not isinstance(data, dict):
        raise BadRequest("a device is a JSON object with a kind")
    kind = data.get("kind")
    if kind == Device.Kind.WEBPUSH:
        if not vapid_configured():
            raise Conflict("Web Push is not configured on this server (VAPID keys are missing)")
        endpoint, keys = _subscription(data.get("subscription"))
    elif kind == Device.Kind.WEBHOOK:
        endpoint, keys = url_validate(data.get("url")), {}
    else:
        raise BadRequest("kind must be 'webpush' or 'webhook'")
    with transaction.atomic():
        existing = Device.objects.select_for_update().filter(user=user, endpoint=endpoint).first()
        if existing is not None:
            existing.kind, existing.keys, existing.enabled = kind, keys, True
            existing.save(update_fields=["kind", "keys", "enabled"])
            return existing, False
        if Device.objects.filter(user=user).count() >= settings.NOTIFICATIONS["MAX_DEVICES"]:
            raise Conflict(f"at most {settings.NOTIFICATIONS['MAX_DEVICES']} devices per user")
        return Device.objects.create(user=user, kind=kind, endpoint=endpoint, keys=keys), True


def _own_device(user: AbstractBaseUser, device_id: int) -> Device:
    device = Device.objects.filter(pk=device_id, user=user).first()
    if device is None:
        raise NotFound(f"no device {device_id}")
    return device


def device_update(*, user: AbstractBaseUser, device_id: int, data: object) -> Device:
    """Turn one device on or off: `{"enabled": bool}`."""
    device = _own_device(user, device_id)
    if not isinstance(data, dict) or set(data) != {"enabled"}:
        raise BadRequest('a device update is {"enabled": true | false}')
    device.enabled = _bool(data, "enabled")
    device.save(update_fields=["enabled"])
    return device


def device_remove(*, user: AbstractBaseUser, device_id: int) -> None:
    _own_device(user, device_id).delete()


# --- Notifications --------------------------------------------------------------


def notifications_mark_read(*, user: AbstractBaseUser, data: object) -> int:
    """`{"ids": [...]}` or `{"all": true}`; returns how many were marked."""
    if not isinstance(data, dict):
        raise BadRequest('send {"ids": [ID, ...]} or {"all": true}')
    qs = Notification.objects.filter(user=user, read_at__isnull=True)
    if data.get("all") is True and set(data) == {"all"}:
        pass
    elif set(data) == {"ids"} and isinstance(data["ids"], list) and len(data["ids"]) <= 1000:
        ids = data["ids"]
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise BadRequest("ids must be notification ids")
        qs = qs.filter(pk__in=ids)
    else:
        raise BadRequest('send {"ids": [ID, ...]} (at most 1000) or {"all": true}')
    return qs.update(read_at=timezone.now())


def notifications_cancel_for_message(*, message_id: int) -> None:
    """A deleted message's pending notifications are cancelled.

    Runs inside the delete's transaction. A head that carried folded DMs
    hands them to the oldest remaining one, which becomes the head.
    """
    pending = (Notification.State.QUEUED, Notification.State.COALESCED)
    for n in Notification.objects.select_for_update().filter(message_id=message_id, state__in=pending):
        if n.state == Notification.State.COALESCED:
            head = Notification.objects.select_for_update().filter(pk=n.merged_into_id).first()
            if head is not None and head.state == Notification.State.QUEUED:
                head.count = max(1, head.count - 1)
                head.save(update_fields=["count"])
        else:
            _promote_folded(n)
        n.state, n.detail, n.merged_into = Notification.State.CANCELLED, "message deleted", None
        n.save(update_fields=["state", "detail", "merged_into"])


def _promote_folded(head: Notification) -> None:
    folded = list(head.merged.filter(state=Notification.State.COALESCED).order_by("id"))
    if not folded:
        return
    new_head, rest = folded[0], folded[1:]
    latest = folded[-1]
    new_head.state, new_head.merged_into = Notification.State.QUEUED, None
    new_head.count, new_head.due_at = len(folded), head.due_at
    new_head.payload = latest.payload
    new_head.save(update_fields=["state", "merged_into", "count", "due_at", "payload"])
    Notification.objects.filter(pk__in=[r.pk for r in rest]).update(merged_into=new_head)
    from .runner import task_schedule
    from .tasks import notification_send

    due = max(0.0, (new_head.due_at - timezone.now()).total_seconds())
    transaction.on_commit(lambda: task_schedule(notification_send, new_head.pk, countdown=due))
