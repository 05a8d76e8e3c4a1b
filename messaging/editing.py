"""Edits and deletions of stored messages, with their revision history.

The author may edit or delete (edits within HISTORY["EDIT_WINDOW"] seconds,
when set); staff may edit or delete any message in a channel they can read.
A deleted message keeps its id and seq as a tombstone: its body is blanked
(the old one stays in MessageRevision for moderators) and search no longer
finds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from notifications.services import notifications_cancel_for_message

from .errors import Conflict, Forbidden, NotFound
from .models import Message, MessageRevision
from .rules import body_validate
from .selectors import channel_may_read
from .wire import iso_utc


@dataclass(frozen=True, slots=True)
class Change:
    """A committed edit or delete, and the event members get (None: nothing changed)."""

    message: Message
    event: dict[str, Any] | None


def _message_for_change(*, user: AbstractBaseUser, message_id: int, moderation: bool = False) -> Message:
    """Lock the message; not_found when it does not exist or the user may not read it.

    `moderation` (the admin) skips the read and author rules: moderators act
    on every channel.
    """
    message = Message.objects.select_for_update(of=("self",)).select_related("channel", "sender").filter(pk=message_id)
    found = message.first()
    if found is None:
        raise NotFound(f"no message {message_id}")
    if moderation:
        return found
    if not channel_may_read(user=user, name=found.channel.parsed, channel=found.channel):
        raise NotFound(f"no message {message_id}")
    if found.sender_id != user.pk and not user.is_staff:
        raise Forbidden("only the author or staff may change this message")
    return found


def edited_event(message: Message) -> dict[str, Any]:
    return {
        "type": "message.edited",
        "id": message.pk,
        "channel": message.channel.name,
        "seq": message.seq,
        "body": message.body,
        "edited_at": iso_utc(message.edited_at),
    }


def deleted_event(message: Message) -> dict[str, Any]:
    return {"type": "message.deleted", "id": message.pk, "channel": message.channel.name, "seq": message.seq}


def message_edit(*, user: AbstractBaseUser, message_id: int, body: str) -> Change:
    body = body_validate(body)
    with transaction.atomic():
        message = _message_for_change(user=user, message_id=message_id)
        if message.deleted:
            raise Conflict("the message was deleted")
        window = settings.HISTORY["EDIT_WINDOW"]
        if window is not None and not user.is_staff:
            if timezone.now() - message.created_at > timedelta(seconds=window):
                raise Forbidden(f"messages can be edited for {window} seconds after sending")
        if body == message.body:
            return Change(message, None)
        MessageRevision.objects.create(
            message=message, action=MessageRevision.Action.EDIT, body=message.body, editor=user
        )
        message.body = body
        message.edited_at = timezone.now()
        message.save(update_fields=["body", "edited_at"])
    return Change(message, edited_event(message))


def message_delete(*, user: AbstractBaseUser, message_id: int, moderation: bool = False) -> Change:
    """Tombstone a message; deleting it again changes nothing."""
    with transaction.atomic():
        message = _message_for_change(user=user, message_id=message_id, moderation=moderation)
        if message.deleted:
            return Change(message, None)
        MessageRevision.objects.create(
            message=message, action=MessageRevision.Action.DELETE, body=message.body, editor=user
        )
        message.body = ""
        message.deleted_at = timezone.now()
        message.save(update_fields=["body", "deleted_at"])
        notifications_cancel_for_message(message_id=message.pk)
    return Change(message, deleted_event(message))
