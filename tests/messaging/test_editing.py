"""Edits and deletions of stored messages (messaging/editing.py): rules, tombstones, revisions."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from messaging import editing, services
from messaging.channels import topic_channel
from messaging.errors import BadRequest, Conflict, Forbidden, NotFound, TooLarge
from messaging.models import Message, MessageRevision
from messaging.wire import message_frame

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]

ISO_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\Z")


@pytest.fixture
def edit_window(settings: Any) -> Any:
    """Set HISTORY["EDIT_WINDOW"] for one test (a modified copy of the dict)."""

    def apply(seconds: int | None) -> None:
        settings.HISTORY = {**settings.HISTORY, "EDIT_WINDOW": seconds}

    return apply


def post(user: Any, body: str = "original", topic: str = "room") -> Message:
    return services.message_send(sender=user, name=topic_channel(topic), body=body)[0]


def dm(sender: Any, to: Any, body: str = "original") -> Message:
    return services.direct_send(sender=sender, to=to.pk, body=body)[0]


def age(message: Message, seconds: int) -> None:
    Message.objects.filter(pk=message.pk).update(created_at=timezone.now() - timedelta(seconds=seconds))


def revisions(message: Message) -> list[tuple[str, str, int | None]]:
    return list(MessageRevision.objects.filter(message=message).values_list("action", "body", "editor_id"))


# --- edit ------------------------------------------------------------------------


def test_author_edits_and_the_old_body_is_kept(ann: Any, bob: Any) -> None:
    message = dm(ann, bob, "helo")
    change = editing.message_edit(user=ann, message_id=message.pk, body="hello")
    stored = Message.objects.get(pk=message.pk)
    assert stored.body == "hello" and stored.edited_at is not None and stored.deleted_at is None
    assert change.message.pk == message.pk and change.message.body == "hello"
    assert change.event == {
        "type": "message.edited",
        "id": message.pk,
        "channel": message.channel.name,
        "seq": 1,
        "body": "hello",
        "edited_at": change.event["edited_at"],
    }
    assert ISO_Z.match(change.event["edited_at"])
    assert message_frame(change.message)["edited_at"] == change.event["edited_at"]
    assert revisions(message) == [("edit", "helo", ann.pk)]


def test_each_edit_keeps_the_previous_body(ann: Any) -> None:
    message = post(ann, "v1")
    editing.message_edit(user=ann, message_id=message.pk, body="v2")
    editing.message_edit(user=ann, message_id=message.pk, body="v3")
    assert revisions(message) == [("edit", "v1", ann.pk), ("edit", "v2", ann.pk)]
    assert Message.objects.get(pk=message.pk).body == "v3"


def test_edit_to_the_same_body_changes_nothing(ann: Any) -> None:
    message = post(ann, "same")
    change = editing.message_edit(user=ann, message_id=message.pk, body="same")
    assert change.event is None
    assert Message.objects.get(pk=message.pk).edited_at is None
    assert revisions(message) == []


def test_non_author_may_not_edit(ann: Any, bob: Any) -> None:
    message = post(ann, "mine")
    with pytest.raises(Forbidden):
        editing.message_edit(user=bob, message_id=message.pk, body="yours now")
    in_dm = dm(ann, bob, "mine too")
    with pytest.raises(Forbidden):  # bob reads the DM but did not write it
        editing.message_edit(user=bob, message_id=in_dm.pk, body="changed")
    assert Message.objects.get(pk=message.pk).body == "mine"
    assert Message.objects.get(pk=in_dm.pk).body == "mine too"
    assert not MessageRevision.objects.exists()


def test_unreadable_or_unknown_message_is_not_found(ann: Any, bob: Any, carol: Any) -> None:
    message = dm(ann, bob, "between us")
    with pytest.raises(NotFound):
        editing.message_edit(user=carol, message_id=message.pk, body="x")
    with pytest.raises(NotFound):
        editing.message_delete(user=carol, message_id=message.pk)
    with pytest.raises(NotFound):
        editing.message_edit(user=ann, message_id=message.pk + 1000, body="x")
    assert Message.objects.get(pk=message.pk).deleted_at is None


def test_staff_edits_in_a_public_topic(ann: Any, staff: Any) -> None:
    message = post(ann, "spam link")
    change = editing.message_edit(user=staff, message_id=message.pk, body="[removed link]")
    assert change.event is not None and change.event["body"] == "[removed link]"
    assert revisions(message) == [("edit", "spam link", staff.pk)]


def test_staff_cannot_touch_another_pairs_dm_or_a_private_topic(ann: Any, bob: Any, staff: Any) -> None:
    in_dm = dm(ann, bob, "private")
    services.topic_create(user=ann, name="club", private=True)
    in_club = post(ann, "members only", topic="club")
    for message in (in_dm, in_club):
        with pytest.raises(NotFound):
            editing.message_edit(user=staff, message_id=message.pk, body="moderated")
        with pytest.raises(NotFound):
            editing.message_delete(user=staff, message_id=message.pk)
    assert list(Message.objects.filter(deleted_at__isnull=False)) == []
    assert not MessageRevision.objects.exists()


def test_editing_a_deleted_message_is_a_conflict(ann: Any) -> None:
    message = post(ann, "gone soon")
    editing.message_delete(user=ann, message_id=message.pk)
    with pytest.raises(Conflict):
        editing.message_edit(user=ann, message_id=message.pk, body="back")
    stored = Message.objects.get(pk=message.pk)
    assert stored.body == "" and stored.edited_at is None


@pytest.mark.parametrize(("body", "error"), [("", BadRequest), ("x" * (16 * 1024 + 1), TooLarge), (None, BadRequest)])
def test_bad_bodies_are_refused(ann: Any, body: Any, error: type[Exception]) -> None:
    message = post(ann, "fine")
    with pytest.raises(error):
        editing.message_edit(user=ann, message_id=message.pk, body=body)
    assert Message.objects.get(pk=message.pk).body == "fine"
    assert not MessageRevision.objects.exists()


def test_body_of_exactly_the_limit_in_utf8_is_accepted(ann: Any) -> None:
    message = post(ann, "fine")
    body = "é" * (8 * 1024)  # 16 KiB of UTF-8
    assert editing.message_edit(user=ann, message_id=message.pk, body=body).message.body == body
    with pytest.raises(TooLarge):
        editing.message_edit(user=ann, message_id=message.pk, body=body + "x")


# --- the edit window -----------------------------------------------------------------


def test_edit_window_stops_the_author_but_not_staff(ann: Any, staff: Any, edit_window: Any) -> None:
    edit_window(1)
    message = post(ann, "old news")
    age(message, 10)
    with pytest.raises(Forbidden):
        editing.message_edit(user=ann, message_id=message.pk, body="rewritten history")
    assert Message.objects.get(pk=message.pk).body == "old news"
    change = editing.message_edit(user=staff, message_id=message.pk, body="moderated")
    assert change.message.body == "moderated"


def test_edit_within_the_window_is_allowed(ann: Any, edit_window: Any) -> None:
    edit_window(60)
    message = post(ann, "typo")
    age(message, 5)
    assert editing.message_edit(user=ann, message_id=message.pk, body="fixed").event is not None


def test_no_window_by_default(ann: Any, settings: Any) -> None:
    assert settings.HISTORY["EDIT_WINDOW"] is None
    message = post(ann, "ancient")
    age(message, 10 * 365 * 86400)
    assert editing.message_edit(user=ann, message_id=message.pk, body="still mine").event is not None


def test_author_may_delete_after_the_edit_window(ann: Any, edit_window: Any) -> None:
    edit_window(1)
    message = post(ann, "regret")
    age(message, 10)
    assert editing.message_delete(user=ann, message_id=message.pk).event is not None


# --- delete ----------------------------------------------------------------------


def test_delete_leaves_a_tombstone_and_a_revision(ann: Any, bob: Any) -> None:
    message = dm(ann, bob, "oops")
    change = editing.message_delete(user=ann, message_id=message.pk)
    assert change.event == {"type": "message.deleted", "id": message.pk, "channel": message.channel.name, "seq": 1}
    stored = Message.objects.get(pk=message.pk)
    assert stored.seq == 1 and stored.body == "" and stored.deleted_at is not None
    frame = message_frame(change.message)
    assert frame["deleted"] is True and frame["body"] is None and frame["id"] == message.pk
    assert revisions(message) == [("delete", "oops", ann.pk)]


def test_delete_again_changes_nothing(ann: Any) -> None:
    message = post(ann, "once")
    first = editing.message_delete(user=ann, message_id=message.pk)
    deleted_at = Message.objects.get(pk=message.pk).deleted_at
    second = editing.message_delete(user=ann, message_id=message.pk)
    assert first.event is not None and second.event is None
    assert second.message.deleted
    assert Message.objects.get(pk=message.pk).deleted_at == deleted_at
    assert revisions(message) == [("delete", "once", ann.pk)]


def test_non_author_may_not_delete_but_staff_may(ann: Any, bob: Any, staff: Any) -> None:
    message = post(ann, "controversial")
    with pytest.raises(Forbidden):
        editing.message_delete(user=bob, message_id=message.pk)
    assert Message.objects.get(pk=message.pk).deleted_at is None
    assert editing.message_delete(user=staff, message_id=message.pk).event is not None
    assert revisions(message) == [("delete", "controversial", staff.pk)]


def test_edit_then_delete_keeps_the_whole_history(ann: Any) -> None:
    message = post(ann, "v1")
    editing.message_edit(user=ann, message_id=message.pk, body="v2")
    editing.message_delete(user=ann, message_id=message.pk)
    assert revisions(message) == [("edit", "v1", ann.pk), ("delete", "v2", ann.pk)]


def test_moderation_deletes_in_any_channel(ann: Any, bob: Any, staff: Any) -> None:
    """The admin path: a moderator need not be a member of the DM."""
    message = dm(ann, bob, "reported")
    change = editing.message_delete(user=staff, message_id=message.pk, moderation=True)
    assert change.event is not None and change.event["id"] == message.pk
    assert Message.objects.get(pk=message.pk).deleted_at is not None
    assert revisions(message) == [("delete", "reported", staff.pk)]


def test_deleted_message_keeps_its_place_in_history(ann: Any) -> None:
    first, second, third = (post(ann, b) for b in ("a", "b", "c"))
    editing.message_delete(user=ann, message_id=second.pk)
    rows = list(Message.objects.filter(channel=first.channel).order_by("seq").values_list("seq", "body"))
    assert rows == [(1, "a"), (2, ""), (3, "c")]
    assert third.seq == 3
