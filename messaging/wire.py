"""How stored messages look on the wire (protocol section 3)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from .models import Message


def iso_utc(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with milliseconds and a `Z`, as the protocol shows."""
    if value is None:
        return None
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def user_ref(user: Any) -> dict[str, Any] | None:
    if user is None:
        return None
    return {"id": user.pk, "username": user.get_username()}


def message_frame(message: Message) -> dict[str, Any]:
    """The `message` event; needs `channel` and `sender` loaded (or cached)."""
    return {
        "type": "message",
        "id": message.pk,
        "channel": message.channel.name,
        "seq": message.seq,
        "kind": message.channel.kind,
        "from": user_ref(message.sender),
        "body": None if message.deleted else message.body,
        "client_id": message.client_id,
        "created_at": iso_utc(message.created_at),
        "edited_at": iso_utc(message.edited_at),
        "deleted": message.deleted,
    }
