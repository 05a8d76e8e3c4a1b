"""Messages made through the services, for tests that need some history."""

from __future__ import annotations

from typing import Any

from messaging import cursors, services
from messaging.channels import topic_channel
from messaging.models import Channel, Message


def publish(user: Any, topic: str, *bodies: str) -> list[Message]:
    """Publish each body to `topic:<topic>` as `user`; the stored messages in order."""
    return [services.message_send(sender=user, name=topic_channel(topic), body=b)[0] for b in bodies]


def direct(sender: Any, to: Any, *bodies: str) -> list[Message]:
    """Send each body as a DM from `sender` to `to`; the stored messages in order."""
    return [services.direct_send(sender=sender, to=to.pk, body=b)[0] for b in bodies]


def read(user: Any, name: str, seq: int) -> None:
    """Move `user`'s read cursor in channel `name` to `seq`."""
    cursors.cursor_move(user=user, channel=Channel.objects.get(name=name), read=seq)
