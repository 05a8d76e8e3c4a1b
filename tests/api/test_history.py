"""GET /api/channels/{channel}/messages/: history over HTTP (protocol sections 3, 4, 8)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from messaging import services
from messaging.channels import dm_channel
from messaging.models import Message
from tests.api.helpers import assert_error, client_for
from tests.builders import publish
from tests.conftest import token_for

pytestmark = pytest.mark.django_db

ISO_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\Z")


def url(channel: str) -> str:
    return f"/api/channels/{channel}/messages/"


def seqs(response: Any) -> list[int]:
    return [m["seq"] for m in response.json()["messages"]]


@pytest.fixture
def ten(ann: Any) -> list[Message]:
    """topic:ten with seqs 1..10."""
    return publish(ann, "ten", *(f"m{i}" for i in range(1, 11)))


# --- shape ------------------------------------------------------------------


def test_dm_history_shape(ann: Any, bob: Any) -> None:
    before = timezone.now()
    stored, _ = services.direct_send(sender=ann, to=bob.pk, body="hi", client_id="c-1")
    response = client_for(bob).get(url(str(dm_channel(ann.pk, bob.pk))))
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"messages", "has_more"}
    assert body["has_more"] is False
    [message] = body["messages"]
    assert message == {
        "type": "message",
        "id": stored.pk,
        "channel": f"dm:{min(ann.pk, bob.pk)}:{max(ann.pk, bob.pk)}",
        "seq": 1,
        "kind": "direct",
        "from": {"id": ann.pk, "username": "ann"},
        "body": "hi",
        "client_id": "c-1",
        "created_at": message["created_at"],
        "edited_at": None,
        "deleted": False,
    }
    assert ISO_Z.fullmatch(message["created_at"])
    created = datetime.strptime(message["created_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert abs((created - before).total_seconds()) < 60


def test_topic_history_kind_and_null_client_id(ann: Any, bob: Any) -> None:
    publish(ann, "general", "hello")
    [message] = client_for(bob).get(url("topic:general")).json()["messages"]
    assert message["kind"] == "topic" and message["channel"] == "topic:general"
    assert message["client_id"] is None and message["from"] == {"id": ann.pk, "username": "ann"}


def test_system_history_has_no_sender(ann: Any) -> None:
    services.system_notice_send(user=ann, body="welcome")
    [message] = client_for(ann).get(url(f"system:{ann.pk}")).json()["messages"]
    assert message["kind"] == "system" and message["from"] is None and message["body"] == "welcome"


def test_broadcast_readable_by_everyone(make_user: Any, bob: Any) -> None:
    staff = make_user("boss", is_staff=True)
    services.broadcast_send(sender=staff, body="maintenance at noon")
    [message] = client_for(bob).get(url("broadcast")).json()["messages"]
    assert message["kind"] == "broadcast" and message["body"] == "maintenance at noon"


def test_edited_and_deleted_messages(ann: Any) -> None:
    first, second = publish(ann, "t", "one", "two")
    edited_at = timezone.now()
    Message.objects.filter(pk=first.pk).update(body="one!", edited_at=edited_at)
    Message.objects.filter(pk=second.pk).update(deleted_at=timezone.now())
    one, two = client_for(ann).get(url("topic:t")).json()["messages"]
    assert one["body"] == "one!" and ISO_Z.fullmatch(one["edited_at"]) and one["deleted"] is False
    assert two == {**two, "id": second.pk, "seq": 2, "deleted": True, "body": None}


def test_dm_without_messages_is_empty(ann: Any, bob: Any) -> None:
    response = client_for(ann).get(url(str(dm_channel(ann.pk, bob.pk))))
    assert response.status_code == 200
    assert response.json() == {"messages": [], "has_more": False}


def test_own_system_channel_without_messages_is_empty(ann: Any) -> None:
    assert client_for(ann).get(url(f"system:{ann.pk}")).json() == {"messages": [], "has_more": False}


# --- paging -----------------------------------------------------------------


def test_default_is_newest_fifty_ascending(ann: Any) -> None:
    publish(ann, "many", *(str(i) for i in range(55)))
    response = client_for(ann).get(url("topic:many"))
    assert seqs(response) == list(range(6, 56))
    assert response.json()["has_more"] is True


def test_limit_gives_newest(ann: Any, ten: Any) -> None:
    response = client_for(ann).get(url("topic:ten"), {"limit": 3})
    assert seqs(response) == [8, 9, 10]
    assert response.json()["has_more"] is True
    assert [m["body"] for m in response.json()["messages"]] == ["m8", "m9", "m10"]


def test_limit_covering_everything_has_no_more(ann: Any, ten: Any) -> None:
    response = client_for(ann).get(url("topic:ten"), {"limit": 10})
    assert seqs(response) == list(range(1, 11))
    assert response.json()["has_more"] is False


def test_before_pages_backwards(ann: Any, ten: Any) -> None:
    client = client_for(ann)
    page = client.get(url("topic:ten"), {"before": 8, "limit": 3})
    assert seqs(page) == [5, 6, 7] and page.json()["has_more"] is True
    page = client.get(url("topic:ten"), {"before": 5, "limit": 3})
    assert seqs(page) == [2, 3, 4] and page.json()["has_more"] is True
    page = client.get(url("topic:ten"), {"before": 2, "limit": 3})
    assert seqs(page) == [1] and page.json()["has_more"] is False


def test_after_pages_forwards(ann: Any, ten: Any) -> None:
    client = client_for(ann)
    page = client.get(url("topic:ten"), {"after": 2, "limit": 4})
    assert seqs(page) == [3, 4, 5, 6] and page.json()["has_more"] is True
    page = client.get(url("topic:ten"), {"after": 6, "limit": 4})
    assert seqs(page) == [7, 8, 9, 10] and page.json()["has_more"] is False
    page = client.get(url("topic:ten"), {"after": 10})
    assert seqs(page) == [] and page.json()["has_more"] is False


def test_after_and_before_give_those_between(ann: Any, ten: Any) -> None:
    client = client_for(ann)
    page = client.get(url("topic:ten"), {"after": 2, "before": 6})
    assert seqs(page) == [3, 4, 5] and page.json()["has_more"] is False
    page = client.get(url("topic:ten"), {"after": 2, "before": 9, "limit": 2})
    assert seqs(page) == [3, 4] and page.json()["has_more"] is True


def test_limit_200_is_allowed(ann: Any, ten: Any) -> None:
    assert seqs(client_for(ann).get(url("topic:ten"), {"limit": 200})) == list(range(1, 11))


def test_paging_keeps_tombstones(ann: Any, ten: list[Message]) -> None:
    Message.objects.filter(pk=ten[4].pk).update(deleted_at=timezone.now())
    messages = client_for(ann).get(url("topic:ten"), {"after": 3, "limit": 3}).json()["messages"]
    assert [(m["seq"], m["deleted"], m["body"]) for m in messages] == [
        (4, False, "m4"),
        (5, True, None),
        (6, False, "m6"),
    ]


# --- bad requests -----------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        {"limit": 0},
        {"limit": 201},
        {"limit": "ten"},
        {"limit": -1},
        {"before": "x"},
        {"after": "1.5"},
        {"before": -1},
        {"after": 5, "before": 5},
        {"after": 6, "before": 5},
    ],
)
def test_bad_query_is_bad_request(ann: Any, ten: Any, query: dict[str, Any]) -> None:
    assert_error(client_for(ann).get(url("topic:ten"), query), 400, "bad_request")


@pytest.mark.parametrize(
    "channel",
    ["topic:Bad", "topic:", "nope", "dm:1", "dm:2:1", "dm:1:1", "dm:a:b", "system:x", "system:0", "general", "dm:01:2"],
)
def test_bad_channel_name_is_bad_request(ann: Any, channel: str) -> None:
    assert_error(client_for(ann).get(url(channel)), 400, "bad_request")


# --- access -----------------------------------------------------------------


def test_other_pairs_dm_is_forbidden(ann: Any, bob: Any, make_user: Any) -> None:
    services.direct_send(sender=ann, to=bob.pk, body="secret")
    eve = make_user("eve")
    assert_error(client_for(eve).get(url(str(dm_channel(ann.pk, bob.pk)))), 403, "forbidden")


def test_dm_of_others_forbidden_even_without_messages(ann: Any, bob: Any, make_user: Any) -> None:
    eve = make_user("eve")
    assert_error(client_for(eve).get(url(str(dm_channel(ann.pk, bob.pk)))), 403, "forbidden")


def test_staff_get_no_extra_read_rights(ann: Any, bob: Any, make_user: Any) -> None:
    services.direct_send(sender=ann, to=bob.pk, body="secret")
    staff = make_user("mod", is_staff=True, is_superuser=True)
    assert_error(client_for(staff).get(url(str(dm_channel(ann.pk, bob.pk)))), 403, "forbidden")
    assert_error(client_for(staff).get(url(f"system:{ann.pk}")), 403, "forbidden")


def test_other_users_system_channel_is_forbidden(ann: Any, bob: Any) -> None:
    services.system_notice_send(user=ann, body="yours only")
    assert_error(client_for(bob).get(url(f"system:{ann.pk}")), 403, "forbidden")


def test_private_topic_forbidden_to_non_member(ann: Any, bob: Any) -> None:
    services.topic_create(user=ann, name="secret", private=True)
    publish(ann, "secret", "psst")
    assert_error(client_for(bob).get(url("topic:secret")), 403, "forbidden")
    assert [m["body"] for m in client_for(ann).get(url("topic:secret")).json()["messages"]] == ["psst"]


def test_private_topic_readable_after_being_added(ann: Any, bob: Any) -> None:
    services.topic_create(user=ann, name="secret", private=True)
    publish(ann, "secret", "psst")
    services.topic_member_add(by=ann, name="secret", user_ref=bob.pk)
    assert seqs(client_for(bob).get(url("topic:secret"))) == [1]


def test_missing_topic_is_not_found(ann: Any) -> None:
    assert_error(client_for(ann).get(url("topic:nowhere")), 404, "not_found")


def test_reading_does_not_create_topic(ann: Any) -> None:
    from messaging.models import Channel

    client_for(ann).get(url("topic:nowhere"))
    assert not Channel.objects.filter(name="topic:nowhere").exists()


def test_public_topic_without_messages_is_empty(ann: Any, bob: Any) -> None:
    services.topic_create(user=ann, name="quiet")
    assert client_for(bob).get(url("topic:quiet")).json() == {"messages": [], "has_more": False}


def test_without_token_is_unauthorized(ann: Any, ten: Any) -> None:
    response = APIClient().get(url("topic:ten"))
    assert_error(response, 401, "unauthorized")
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("header", ["Bearer garbage", "Bearer a.b.c", "Token abc", "Bearer"])
def test_bad_token_is_unauthorized(ann: Any, ten: Any, header: str) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    assert_error(client.get(url("topic:ten")), 401, "unauthorized")


def test_expired_token_is_unauthorized(ann: Any, ten: Any) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(ann, lifetime=-5)}")
    assert_error(client.get(url("topic:ten")), 401, "unauthorized")


def test_inactive_users_token_is_unauthorized(ann: Any, ten: Any) -> None:
    client = client_for(ann)
    ann.is_active = False
    ann.save()
    assert_error(client.get(url("topic:ten")), 401, "unauthorized")


def test_refresh_token_is_not_an_access_token(ann: Any, ten: Any) -> None:
    from rest_framework_simplejwt.tokens import RefreshToken

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(ann)}")
    assert_error(client.get(url("topic:ten")), 401, "unauthorized")
