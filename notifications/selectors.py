"""Reads: preferences (with defaults), devices, a user's notifications."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet

from messaging.errors import BadRequest

from . import rules
from .models import Device, Notification, Preference

LIST_DEFAULT_LIMIT = 50
LIST_MAX_LIMIT = 200


def preference_get(*, user_id: int) -> Preference:
    """The stored preferences, or unsaved defaults."""
    return Preference.objects.filter(user_id=user_id).first() or Preference(user_id=user_id)


def quiet_hours_of(pref: Preference) -> rules.QuietHours | None:
    if pref.quiet_start is None or pref.quiet_end is None or not pref.quiet_tz:
        return None
    return rules.QuietHours(start=pref.quiet_start, end=pref.quiet_end, tz=pref.quiet_tz)


def preference_json(pref: Preference) -> dict[str, Any]:
    """PROTOCOL.md section 8, plus `quiet_hours.then` (see docs/protocol.md, Choices)."""
    quiet = quiet_hours_of(pref)
    return {
        "enabled": pref.enabled,
        "quiet_hours": None if quiet is None else {**quiet.as_json(), "then": pref.quiet_mode},
        "when_away": pref.when_away,
        "channels": dict(sorted(pref.channels.items())),
    }


def channel_level(pref: Preference, *, channel: str, kind: str) -> str:
    return pref.channels.get(channel) or rules.level_default(kind)


def devices_of(*, user: AbstractBaseUser) -> QuerySet[Device]:
    return Device.objects.filter(user=user).order_by("id")


def device_json(device: Device, *, with_secret: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {"id": device.pk, "kind": device.kind, "enabled": device.enabled}
    if device.kind == Device.Kind.WEBHOOK:
        data["url"] = device.endpoint
        if with_secret:
            data["secret"] = device.secret
    else:
        data["endpoint"] = device.endpoint
    data["created_at"] = device.created_at.isoformat().replace("+00:00", "Z")
    return data


def list_limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return LIST_DEFAULT_LIMIT
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= LIST_MAX_LIMIT:
        raise BadRequest(f"limit must be between 1 and {LIST_MAX_LIMIT}")
    return int(raw)


def notifications_page(*, user: AbstractBaseUser, before: int | None, limit: int) -> tuple[list[Notification], bool]:
    """The user's notifications, newest first; folded (coalesced) ones are
    counted in their head, not listed."""
    qs = Notification.objects.filter(user=user).exclude(state=Notification.State.COALESCED)
    if before is not None:
        qs = qs.filter(pk__lt=before)
    rows = list(qs.select_related("sender").order_by("-id")[: limit + 1])
    return rows[:limit], len(rows) > limit


def notification_json(n: Notification) -> dict[str, Any]:
    def iso(value: Any) -> str | None:
        return None if value is None else value.isoformat().replace("+00:00", "Z")

    return {
        "id": n.pk,
        "channel": n.channel,
        "reason": n.reason,
        "state": n.state,
        "detail": n.detail,
        "count": n.count,
        "message": n.payload,
        "created_at": iso(n.created_at),
        "sent_at": iso(n.sent_at),
        "read": n.read_at is not None,
    }
