"""GET /api/channels/, PATCH and DELETE /api/messages/{id}/, GET /api/messages/{id}/readers/."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone
from rest_framework.test import APIClient

from messaging import cursors, services
from messaging.channels import dm_channel
from messaging.models import Channel, Message, MessageRevision
from tests.api.helpers import assert_error, client_for
from tests.builders import direct, publish, read
from tests.conftest import ws_session

pytestmark = pytest.mark.django_db


def url(message: Any) -> str:
    return f"/api/messages/{getattr(message, 'pk', message)}/"


def readers_url(message: Any) -> str:
    return f"/api/messages/{getattr(message, 'pk', message)}/readers/"


# --- GET /api/channels/ --------------------------------------------------------------


def test_channels_list_matches_sync(ann: Any, bob: Any, carol: Any) -> None:
    direct(ann, bob, "one", "two", "three")
    direct(carol, ann, "not bob's")
    services.system_notice_send(user=bob, body="welcome")
    publish(ann, "news", "n1")
    cursors.cursor_join(user=bob, channel=Channel.objects.get(name="topic:news"))
    read(bob, str(dm_channel(ann.pk, bob.pk)), 2)
    response = client_for(bob).get("/api/channels/")
    assert response.status_code == 200
    body = response.json()
    assert body == {"results": cursors.channels_sync(user=bob), "next": None}
    assert body["results"] == sorted(
        [
            {"channel": str(dm_channel(ann.pk, bob.pk)), "last_seq": 3, "delivered_seq": 2, "read_seq": 2, "unread": 1},
            {"channel": f"system:{bob.pk}", "last_seq": 1, "delivered_seq": 0, "read_seq": 0, "unread": 1},
            {"channel": "topic:news", "last_seq": 1, "delivered_seq": 0, "read_seq": 0, "unread": 1},
        ],
        key=lambda e: e["channel"],
    )


def test_channels_list_of_a_new_user_is_empty(ann: Any) -> None:
    response = client_for(ann).get("/api/channels/")
    assert response.status_code == 200 and response.json() == {"results": [], "next": None}


# --- PATCH /api/messages/{id}/ -----------------------------------------------------


def test_patch_by_the_author_returns_the_message(ann: Any, bob: Any) -> None:
    [message] = direct(ann, bob, "helo")
    response = client_for(ann).patch(url(message), {"body": "hello"}, format="json")
    assert response.status_code == 200, response.content
    frame = response.json()
    assert frame["type"] == "message" and frame["id"] == message.pk and frame["seq"] == 1
    assert frame["channel"] == str(dm_channel(ann.pk, bob.pk)) and frame["kind"] == "direct"
    assert frame["body"] == "hello" and frame["edited_at"] is not None and frame["deleted"] is False
    assert frame["from"] == {"id": ann.pk, "username": "ann"}
    assert Message.objects.get(pk=message.pk).body == "hello"
    assert list(MessageRevision.objects.values_list("action", "body", "editor_id")) == [("edit", "helo", ann.pk)]


def test_patch_by_a_non_author_is_403(ann: Any, bob: Any) -> None:
    [message] = direct(ann, bob, "ann's")
    assert_error(client_for(bob).patch(url(message), {"body": "bob's"}, format="json"), 403, "forbidden")
    assert Message.objects.get(pk=message.pk).body == "ann's"


def test_patch_of_unknown_or_unreadable_message_is_404(ann: Any, bob: Any, carol: Any, staff: Any) -> None:
    [message] = direct(ann, bob, "private")
    assert_error(client_for(carol).patch(url(message), {"body": "x"}, format="json"), 404, "not_found")
    assert_error(client_for(staff).patch(url(message), {"body": "x"}, format="json"), 404, "not_found")
    assert_error(client_for(ann).patch(url(message.pk + 1000), {"body": "x"}, format="json"), 404, "not_found")
    assert Message.objects.get(pk=message.pk).body == "private"


def test_patch_by_staff_in_a_public_topic(ann: Any, staff: Any) -> None:
    [message] = publish(ann, "lobby", "spam")
    response = client_for(staff).patch(url(message), {"body": "[removed]"}, format="json")
    assert response.status_code == 200 and response.json()["body"] == "[removed]"


def test_patch_of_a_deleted_message_is_409(ann: Any) -> None:
    [message] = publish(ann, "room", "gone")
    client = client_for(ann)
    assert client.delete(url(message)).status_code == 204
    assert_error(client.patch(url(message), {"body": "back"}, format="json"), 409, "conflict")


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        ({"body": ""}, 400, "bad_request"),
        ({}, 400, "bad_request"),
        ({"body": None}, 400, "bad_request"),
        ({"body": ["x"]}, 400, "bad_request"),
        ({"text": "wrong field"}, 400, "bad_request"),
        ({"body": "x" * (16 * 1024 + 1)}, 413, "too_large"),
    ],
)
def test_patch_with_a_bad_body(ann: Any, data: dict[str, Any], status: int, code: str) -> None:
    [message] = publish(ann, "room", "fine")
    assert_error(client_for(ann).patch(url(message), data, format="json"), status, code)
    assert Message.objects.get(pk=message.pk).body == "fine"
    assert not MessageRevision.objects.exists()


def test_patch_outside_the_edit_window_is_403_for_the_author(ann: Any, staff: Any, settings: Any) -> None:
    settings.HISTORY = {**settings.HISTORY, "EDIT_WINDOW": 1}
    [message] = publish(ann, "room", "old")
    Message.objects.filter(pk=message.pk).update(created_at=timezone.now() - timedelta(seconds=30))
    assert_error(client_for(ann).patch(url(message), {"body": "new"}, format="json"), 403, "forbidden")
    assert client_for(staff).patch(url(message), {"body": "moderated"}, format="json").status_code == 200


# --- DELETE /api/messages/{id}/ ----------------------------------------------------


def test_delete_is_204_and_leaves_a_tombstone_in_history(ann: Any, bob: Any) -> None:
    kept, gone = direct(ann, bob, "keep", "regret")
    client = client_for(ann)
    response = client.delete(url(gone))
    assert response.status_code == 204 and response.content == b""
    history = client_for(bob).get(f"/api/channels/{dm_channel(ann.pk, bob.pk)}/messages/").json()
    assert [(m["id"], m["seq"], m["body"], m["deleted"]) for m in history["messages"]] == [
        (kept.pk, 1, "keep", False),
        (gone.pk, 2, None, True),
    ]
    # Deleting again is fine and changes nothing.
    assert client.delete(url(gone)).status_code == 204
    assert list(MessageRevision.objects.values_list("action", "body")) == [("delete", "regret")]


def test_delete_by_non_author_or_of_unknown_message(ann: Any, bob: Any, carol: Any) -> None:
    [message] = direct(ann, bob, "ann's")
    assert_error(client_for(bob).delete(url(message)), 403, "forbidden")
    assert_error(client_for(carol).delete(url(message)), 404, "not_found")
    assert_error(client_for(ann).delete(url(message.pk + 1000)), 404, "not_found")
    assert Message.objects.get(pk=message.pk).deleted_at is None


# --- GET /api/messages/{id}/readers/ -----------------------------------------------


def test_author_sees_who_read_the_message(ann: Any, bob: Any, carol: Any, make_user: Any) -> None:
    dave = make_user("dave")
    first, second, _ = publish(ann, "room", "m1", "m2", "m3")
    read(bob, "topic:room", 3)
    read(carol, "topic:room", 2)
    read(dave, "topic:room", 1)  # read before the message: not a reader
    read(ann, "topic:room", 3)  # the author herself is never listed
    cursors.cursor_move(user=dave, channel=Channel.objects.get(name="topic:room"), delivered=3)  # delivered != read
    response = client_for(ann).get(readers_url(second))
    assert response.status_code == 200
    body = response.json()
    assert body["next"] is None
    assert [(r["user"], r["read_seq"]) for r in body["results"]] == [
        ({"id": bob.pk, "username": "bob"}, 3),
        ({"id": carol.pk, "username": "carol"}, 2),
    ]
    assert all(r["read_at"] for r in body["results"])
    everyone = client_for(ann).get(readers_url(first)).json()["results"]
    assert [r["user"]["username"] for r in everyone] == ["bob", "carol", "dave"]


def test_staff_may_see_readers_in_a_channel_they_can_read(ann: Any, bob: Any, staff: Any) -> None:
    [message] = publish(ann, "room", "m1")
    read(bob, "topic:room", 1)
    response = client_for(staff).get(readers_url(message))
    assert response.status_code == 200
    assert [r["user"]["username"] for r in response.json()["results"]] == ["bob"]


def test_readers_for_non_authors_and_unreadable_messages(ann: Any, bob: Any, carol: Any, staff: Any) -> None:
    [topic_msg] = publish(ann, "room", "m1")
    [dm_msg] = direct(ann, bob, "private")
    assert_error(client_for(bob).get(readers_url(topic_msg)), 403, "forbidden")
    assert_error(client_for(bob).get(readers_url(dm_msg)), 403, "forbidden")  # a member, not the author
    assert_error(client_for(carol).get(readers_url(dm_msg)), 404, "not_found")
    assert_error(client_for(staff).get(readers_url(dm_msg)), 404, "not_found")
    assert_error(client_for(ann).get(readers_url(dm_msg.pk + 1000)), 404, "not_found")


# --- authentication ----------------------------------------------------------------


def test_every_endpoint_needs_a_token(ann: Any) -> None:
    [message] = publish(ann, "room", "m1")
    anonymous = APIClient()
    for response in (
        anonymous.get("/api/channels/"),
        anonymous.patch(url(message), {"body": "x"}, format="json"),
        anonymous.delete(url(message)),
        anonymous.get(readers_url(message)),
    ):
        assert_error(response, 401, "unauthorized")
    stored = Message.objects.get(pk=message.pk)
    assert stored.body == "m1" and stored.deleted_at is None


# --- live events caused by REST calls (published on commit) --------------------------


@pytest.mark.django_db(transaction=True)
async def test_rest_edit_and_delete_reach_live_sessions(ann: Any, bob: Any, carol: Any) -> None:
    [message] = await sync_to_async(direct)(ann, bob, "helo")
    dm = str(dm_channel(ann.pk, bob.pk))
    async with ws_session(bob) as b, ws_session(ann) as a, ws_session(carol) as c:
        response = await sync_to_async(client_for(ann).patch)(url(message), {"body": "hello"}, format="json")
        assert response.status_code == 200
        edited = await b.recv()
        assert edited == {
            "type": "message.edited",
            "id": message.pk,
            "channel": dm,
            "seq": 1,
            "body": "hello",
            "edited_at": response.json()["edited_at"],
        }
        # A REST call has no session: the author's live sessions hear it too.
        assert await a.recv() == edited

        response = await sync_to_async(client_for(ann).delete)(url(message))
        assert response.status_code == 204
        deleted = {"type": "message.deleted", "id": message.pk, "channel": dm, "seq": 1}
        assert await b.recv() == deleted
        assert await a.recv() == deleted

        # Refused or no-op calls send nothing.
        response = await sync_to_async(client_for(ann).delete)(url(message))
        assert response.status_code == 204
        response = await sync_to_async(client_for(bob).patch)(url(message), {"body": "x"}, format="json")
        assert response.status_code == 403
        assert await b.nothing(0.5) and await a.nothing(0.1) and await c.nothing(0.1)


@pytest.mark.django_db(transaction=True)
async def test_rest_edit_reaches_topic_subscribers(ann: Any, bob: Any) -> None:
    [message] = await sync_to_async(publish)(ann, "live", "v1")
    async with ws_session(bob) as b:
        ok = await b.request({"type": "subscribe", "channel": "topic:live"})
        assert ok["type"] == "ok"
        response = await sync_to_async(client_for(ann).patch)(url(message), {"body": "v2"}, format="json")
        assert response.status_code == 200
        event = await b.recv()
        assert (event["type"], event["channel"], event["body"]) == ("message.edited", "topic:live", "v2")
