"""Moderation through the Django admin reaches live sessions: tombstones and deactivation."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from messaging import editing
from messaging.models import Message, MessageRevision
from tests import builders
from tests.conftest import ws_session

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_passwords")]


@pytest.fixture
def moderator(make_user: Any) -> Client:
    client = Client()
    client.force_login(make_user("root", is_staff=True, is_superuser=True))
    return client


def dm_name(a: Any, b: Any) -> str:
    lo, hi = sorted((a.pk, b.pk))
    return f"dm:{lo}:{hi}"


# The shared builders, awaitable from these async tests.
publish = sync_to_async(builders.publish)
direct = sync_to_async(builders.direct)


@sync_to_async
def tombstone_of(message_id: int) -> tuple[str, bool, list[tuple[str, str]]]:
    row = Message.objects.get(pk=message_id)
    kept = list(MessageRevision.objects.filter(message_id=message_id).values_list("action", "body"))
    return row.body, row.deleted_at is not None, kept


def change_form_data(form: Any) -> dict[str, Any]:
    """The POST a browser sends for an unchanged admin change form."""
    data: dict[str, Any] = {}
    for name, field in form.fields.items():
        if field.disabled:
            continue
        value = form.initial.get(name, field.initial)
        if hasattr(field.widget, "widgets"):  # split date/time
            for index, part in enumerate(field.widget.decompress(value)):
                data[f"{name}_{index}"] = "" if part is None else str(part)
        elif isinstance(value, bool):
            if value:
                data[name] = "on"
        elif isinstance(value, list | tuple):
            data[name] = [getattr(v, "pk", v) for v in value]
        elif value is not None:
            data[name] = value
    return data


# --- deleting messages in the admin -------------------------------------------------


async def test_admin_delete_page_tombstones_and_tells_live_clients(moderator, ann, bob):
    keep, spam = await publish(ann, "lobby", "hello", "buy pills")
    await sync_to_async(editing.message_edit)(user=ann, message_id=spam.pk, body="buy cheap pills")
    delete_url = f"/admin/messaging/message/{spam.pk}/delete/"
    async with ws_session(bob) as b:
        ok = await b.request({"type": "subscribe", "channel": "topic:lobby"})
        assert ok["type"] == "ok"
        confirm = await sync_to_async(moderator.get)(delete_url)
        assert confirm.status_code == 200 and "topic:lobby#2" in confirm.content.decode()
        response = await sync_to_async(moderator.post)(delete_url, {"post": "yes"})
        assert response.status_code == 302
        assert await b.recv() == {"type": "message.deleted", "id": spam.pk, "channel": "topic:lobby", "seq": 2}
        assert await b.nothing()
        history = await b.request({"type": "history", "channel": "topic:lobby"})
        assert [(m["seq"], m["body"], m["deleted"]) for m in history["messages"]] == [
            (1, "hello", False),
            (2, None, True),
        ]
    body, deleted, kept = await tombstone_of(spam.pk)
    assert (body, deleted) == ("", True)
    assert kept == [("edit", "buy pills"), ("delete", "buy cheap pills")]
    assert await tombstone_of(keep.pk) == ("hello", False, [])


async def test_admin_deletes_in_a_dm_the_moderator_is_not_part_of(moderator, ann, bob):
    [message] = await direct(ann, bob, "reported words")
    async with ws_session(bob) as b, ws_session(ann) as a:
        response = await sync_to_async(moderator.post)(
            f"/admin/messaging/message/{message.pk}/delete/", {"post": "yes"}
        )
        assert response.status_code == 302
        event = {"type": "message.deleted", "id": message.pk, "channel": dm_name(ann, bob), "seq": 1}
        assert await b.recv() == event
        assert await a.recv() == event
    assert await tombstone_of(message.pk) == ("", True, [("delete", "reported words")])


async def test_bulk_delete_action_tombstones_each_and_tells_live_clients(moderator, ann, bob):
    m1, m2, m3 = await publish(ann, "bulk", "one", "two", "three")
    await sync_to_async(editing.message_delete)(user=ann, message_id=m3.pk)  # already a tombstone
    selected = {"action": "delete_selected", "_selected_action": [m1.pk, m2.pk, m3.pk]}
    async with ws_session(bob) as b:
        assert (await b.request({"type": "subscribe", "channel": "topic:bulk"}))["type"] == "ok"
        confirm = await sync_to_async(moderator.post)("/admin/messaging/message/", selected)
        assert confirm.status_code == 200  # the confirmation page
        assert await tombstone_of(m1.pk) == ("one", False, [])
        response = await sync_to_async(moderator.post)("/admin/messaging/message/", {**selected, "post": "yes"})
        assert response.status_code == 302
        events = sorted([await b.recv(), await b.recv()], key=lambda e: e["seq"])
        assert events == [
            {"type": "message.deleted", "id": m1.pk, "channel": "topic:bulk", "seq": 1},
            {"type": "message.deleted", "id": m2.pk, "channel": "topic:bulk", "seq": 2},
        ]
        assert await b.nothing(0.5)  # none for the message that was deleted before
    assert await tombstone_of(m1.pk) == ("", True, [("delete", "one")])
    assert await tombstone_of(m2.pk) == ("", True, [("delete", "two")])
    assert await tombstone_of(m3.pk) == ("", True, [("delete", "three")])
    count = await sync_to_async(Message.objects.filter(channel__name="topic:bulk").count)()
    assert count == 3


async def test_change_page_shows_the_revisions_inline(moderator, ann):
    [message] = await publish(ann, "shown", "first draft")
    await sync_to_async(editing.message_edit)(user=ann, message_id=message.pk, body="second draft")
    await sync_to_async(editing.message_delete)(user=ann, message_id=message.pk)
    page = await sync_to_async(moderator.get)(f"/admin/messaging/message/{message.pk}/change/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "first draft" in text and "second draft" in text


# --- deactivating a user ------------------------------------------------------------


async def test_deactivating_a_user_in_the_admin_closes_their_sessions(moderator, ann, bob):
    change_url = f"/admin/auth/user/{ann.pk}/change/"
    page = await sync_to_async(moderator.get)(change_url)
    assert page.status_code == 200
    post = change_form_data(page.context["adminform"].form)
    assert post["is_active"] == "on" and post["username"] == "ann"
    del post["is_active"]  # an unticked checkbox is not sent
    async with ws_session(ann) as a1, ws_session(ann) as a2, ws_session(bob) as b:
        response = await sync_to_async(moderator.post)(change_url, post)
        assert response.status_code == 302
        assert await a1.closed() == 4403
        assert await a2.closed() == 4403
        assert (await b.request({"type": "ping"}))["type"] == "pong"  # others stay
        assert await b.nothing()
    await sync_to_async(ann.refresh_from_db)()
    assert ann.is_active is False


async def test_saving_an_active_user_closes_nothing(moderator, ann):
    change_url = f"/admin/auth/user/{ann.pk}/change/"
    page = await sync_to_async(moderator.get)(change_url)
    post = {**change_form_data(page.context["adminform"].form), "first_name": "Ann"}
    async with ws_session(ann) as a:
        response = await sync_to_async(moderator.post)(change_url, post)
        assert response.status_code == 302
        assert await a.nothing(0.5)
        assert (await a.request({"type": "ping"}))["type"] == "pong"
