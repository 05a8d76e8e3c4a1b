"""Hands stored messages to the sessions, once their transaction committed.

A message is encoded to JSON once here, not once per recipient; the session
actors forward the text as it is. Events travel through the fan-out hub
(`messaging/fanout.py`): one Redis PUBLISH per group, whatever the number of
sessions and processes.
"""

from __future__ import annotations

from typing import Any

import msgspec
from django.db import transaction

from . import fanout
from .channels import Kind, parse_channel, user_group
from .models import Message
from .wire import message_frame

_encoder = msgspec.json.Encoder()


def groups_for(channel_name: str) -> list[str]:
    name = parse_channel(channel_name)
    if name.kind in (Kind.TOPIC, Kind.BROADCAST):
        return [name.group]
    return [user_group(uid) for uid in name.members()]


def message_event(message: Message, *, origin: str | None = None) -> dict[str, Any]:
    """The event for a new message.

    `origin` is the sending session's channel name: that session already has
    the message in its `ok` and only notes the seq.
    """
    return {
        "type": "chat.message",
        "channel": message.channel.name,
        "seq": message.seq,
        "text": _encoder.encode(message_frame(message)).decode(),
        "origin": origin,
    }


async def message_publish(message: Message, *, origin: str | None = None) -> None:
    """Send a committed message to every group that carries its channel."""
    event = message_event(message, origin=origin)
    for group in groups_for(message.channel.name):
        await fanout.publish(group, event)


def message_publish_on_commit(message: Message) -> None:
    """Publish from sync code once the current transaction (if any) commits."""
    transaction.on_commit(lambda: _publish_sync(message.channel.name, message_event(message)))


def _publish_sync(channel_name: str, event: dict[str, Any]) -> None:
    for group in groups_for(channel_name):
        fanout.publish_sync(group, event)


def _user_event_on_commit(user_id: int, event: dict[str, Any]) -> None:
    transaction.on_commit(lambda: fanout.publish_sync(user_group(user_id), event))


def channel_revoke_on_commit(*, user_id: int, channel: str) -> None:
    """Tell the user's live sessions to drop a subscription they lost."""
    _user_event_on_commit(user_id, {"type": "chat.revoke", "channel": channel})


def sessions_close_on_commit(*, user_id: int, code: int) -> None:
    """Close every live session of the user (a deactivated account: 4403)."""
    _user_event_on_commit(user_id, {"type": "session.close", "code": code})


def frame_event(frame: dict[str, Any], *, origin: str | None = None) -> dict[str, Any]:
    """An event that sessions forward as it is (edits, receipts);
    the `origin` session has it in its `ok` already."""
    return {"type": "chat.event", "text": _encoder.encode(frame).decode(), "origin": origin}


async def channel_event_publish(channel_name: str, frame: dict[str, Any], *, origin: str | None = None) -> None:
    """Send a frame to every session that receives the channel."""
    event = frame_event(frame, origin=origin)
    for group in groups_for(channel_name):
        await fanout.publish(group, event)


def channel_event_publish_on_commit(channel_name: str, frame: dict[str, Any]) -> None:
    transaction.on_commit(lambda: _publish_sync(channel_name, frame_event(frame)))


async def group_frames_publish(pairs: list[tuple[str, dict[str, Any]]]) -> None:
    """Send each frame to its group (receipts to their users), all in one
    round trip; a frame sent to several groups is encoded once."""
    events: dict[int, dict[str, Any]] = {}
    sends = []
    for group, frame in pairs:
        event = events.get(id(frame))
        if event is None:
            event = events[id(frame)] = frame_event(frame)
        sends.append((group, event))
    await fanout.publish_many(sends)
