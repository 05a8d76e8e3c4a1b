"""How stored messages look on the wire (protocol section 3)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .models import Message

if TYPE_CHECKING:
    from .selectors import HistoryPage


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


def history_result(page: HistoryPage) -> dict[str, Any]:
    """The answer to `history` (REST body, fields of the WebSocket `ok`).

    `archived_before_seq` appears once the channel has archived messages:
    those with seq below it are no longer in history (see README, retention).
    """
    result: dict[str, Any] = {"messages": [message_frame(m) for m in page.messages], "has_more": page.has_more}
    if page.archived_before_seq is not None:
        result["archived_before_seq"] = page.archived_before_seq
    return result
