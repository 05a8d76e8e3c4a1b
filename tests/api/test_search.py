"""GET /api/messages/search/: full-text search over HTTP (protocol section 8)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from messaging import services
from messaging.channels import dm_channel, topic_channel
from messaging.models import Message
from messaging.wire import iso_utc, message_frame
from tests.api.helpers import assert_error, client_for

pytestmark = pytest.mark.django_db

URL = "/api/messages/search/"


def say(user: Any, topic: str, body: str) -> Message:
    return services.message_send(sender=user, name=topic_channel(topic), body=body)[0]


def found(response: Any) -> list[int]:
    assert response.status_code == 200, response.content
    return [hit["message"]["id"] for hit in response.json()["results"]]


@pytest.fixture
def cat(make_user: Any) -> Any:
    return make_user("cat")


# --- shape ----------------------------------------------------------------------


def test_result_shape(ann: Any, bob: Any) -> None:
    stored, _ = services.direct_send(sender=bob, to=ann.pk, body="lunch at the <b>usual</b> place?", client_id="c1")
    response = client_for(ann).get(URL, {"q": "lunch"})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"results", "next"} and body["next"] is None
    [hit] = body["results"]
    assert set(hit) == {"message", "rank", "snippet"}
    stored.refresh_from_db()
    assert hit["message"] == message_frame(stored)
    assert hit["message"]["channel"] == str(dm_channel(ann.pk, bob.pk)) and hit["message"]["from"]["id"] == bob.pk
    assert isinstance(hit["rank"], float) and hit["rank"] > 0
    assert "<mark>lunch</mark>" in hit["snippet"]
    assert "&lt;b&gt;usual&lt;/b&gt;" in hit["snippet"] and "<b>" not in hit["snippet"]


def test_needs_authentication() -> None:
    assert_error(APIClient().get(URL, {"q": "x"}), 401, "unauthorized")


def test_relevance_order_and_stemming(ann: Any) -> None:
    filler = " ".join(f"word{i}" for i in range(60))
    short = say(ann, "ops", "meeting moved, meeting at ten")
    long = say(ann, "ops", f"{filler} meeting {filler}")
    response = client_for(ann).get(URL, {"q": "meetings"})
    assert found(response) == [short.pk, long.pk]
    ranks = [hit["rank"] for hit in response.json()["results"]]
    assert ranks[0] > ranks[1]


def test_html_in_bodies_comes_back_escaped(ann: Any) -> None:
    say(ann, "web", "sandbox: <script>alert('x')</script> try it")
    [hit] = client_for(ann).get(URL, {"q": "sandbox"}).json()["results"]
    assert "&lt;script&gt;" in hit["snippet"] and "<script>" not in hit["snippet"]
    assert "<mark>sandbox</mark>" in hit["snippet"]
    assert hit["message"]["body"] == "sandbox: <script>alert('x')</script> try it"


# --- who sees what --------------------------------------------------------------------


def test_only_readable_channels(ann: Any, bob: Any, cat: Any, make_user: Any) -> None:
    staff = make_user("boss", is_staff=True)
    services.topic_create(user=bob, name="hidden", private=True)
    services.topic_create(user=bob, name="club", private=True)
    services.topic_member_add(by=bob, name="club", user_ref=ann.pk)
    visible = [
        say(bob, "open", "walrus in public"),
        say(bob, "club", "walrus for members"),
        services.direct_send(sender=bob, to=ann.pk, body="walrus to ann")[0],
        services.system_notice_send(user=ann, body="walrus notice for ann"),
        services.broadcast_send(sender=staff, body="walrus for all")[0],
    ]
    say(bob, "hidden", "walrus secret")
    services.direct_send(sender=bob, to=cat.pk, body="walrus to cat")
    services.system_notice_send(user=cat, body="walrus notice for cat")
    response = client_for(ann).get(URL, {"q": "walrus", "limit": 100})
    assert sorted(found(response)) == sorted(m.pk for m in visible)
    assert found(client_for(ann).get(URL, {"q": "secret"})) == []
    assert found(client_for(ann).get(URL, {"q": "cat"})) == []


def test_deleted_messages_are_not_found(ann: Any) -> None:
    kept = say(ann, "ops", "invoice 42 paid")
    gone = say(ann, "ops", "invoice 43 paid")
    Message.objects.filter(pk=gone.pk).update(deleted_at=timezone.now(), body="")
    assert found(client_for(ann).get(URL, {"q": "invoice"})) == [kept.pk]


# --- filters --------------------------------------------------------------------------


def test_channel_and_sender_filters(ann: Any, bob: Any) -> None:
    in_ops = say(ann, "ops", "coffee break")
    from_bob = say(bob, "dev", "coffee please")
    from_ann = say(ann, "dev", "coffee ready")
    client = client_for(ann)
    assert found(client.get(URL, {"q": "coffee", "channel": "topic:ops"})) == [in_ops.pk]
    assert found(client.get(URL, {"q": "coffee", "from": "bob"})) == [from_bob.pk]
    assert found(client.get(URL, {"q": "coffee", "from": str(bob.pk)})) == [from_bob.pk]
    response = client.get(URL, {"q": "coffee", "channel": "topic:dev", "from": "ann"})
    assert found(response) == [from_ann.pk]


def test_before_and_after(ann: Any) -> None:
    now = timezone.now()
    old, new = say(ann, "ops", "release old"), say(ann, "ops", "release new")
    Message.objects.filter(pk=old.pk).update(created_at=now - timedelta(days=10))
    Message.objects.filter(pk=new.pk).update(created_at=now - timedelta(days=1))
    cut = iso_utc(now - timedelta(days=5))
    client = client_for(ann)
    assert found(client.get(URL, {"q": "release", "before": cut})) == [old.pk]
    assert found(client.get(URL, {"q": "release", "after": cut})) == [new.pk]
    assert found(client.get(URL, {"q": "release", "after": "2000-01-01T00:00:00+00:00"})) == [new.pk, old.pk]


# --- pagination ------------------------------------------------------------------------


def test_pages_follow_next(ann: Any) -> None:
    made = [say(ann, "ops", f"alert number {i}").pk for i in range(5)]
    client = client_for(ann)
    response = client.get(URL, {"q": "alert", "channel": "topic:ops", "limit": 2})
    seen, pages = found(response), 1
    while (next_url := response.json()["next"]) is not None:
        parts = urlsplit(next_url)
        assert parts.scheme == "http" and parts.netloc == "testserver" and parts.path == URL
        query = parse_qs(parts.query)
        assert query["q"] == ["alert"] and query["channel"] == ["topic:ops"] and query["limit"] == ["2"]
        assert query["offset"] == [str(2 * pages)]
        response = client.get(next_url)
        seen += found(response)
        pages += 1
    assert pages == 3
    assert sorted(seen) == sorted(made) and len(seen) == len(set(seen))


def test_default_limit_is_20(ann: Any) -> None:
    for i in range(21):
        say(ann, "ops", f"ping {i}")
    response = client_for(ann).get(URL, {"q": "ping"})
    assert len(found(response)) == 20
    assert parse_qs(urlsplit(response.json()["next"]).query)["offset"] == ["20"]
    last = client_for(ann).get(response.json()["next"])
    assert len(found(last)) == 1 and last.json()["next"] is None


# --- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"q": ""},
        {"q": "   "},
        {"q": "x" * 257},
        {"q": "ok", "channel": "nonsense"},
        {"q": "ok", "channel": "dm:2:1"},
        {"q": "ok", "before": "yesterday"},
        {"q": "ok", "after": "2024-13-01T00:00:00Z"},
        {"q": "ok", "after": "2024-01-02T00:00:00Z", "before": "2024-01-01T00:00:00Z"},
        {"q": "ok", "limit": 0},
        {"q": "ok", "limit": 101},
        {"q": "ok", "limit": "many"},
        {"q": "ok", "offset": -1},
    ],
)
def test_bad_parameters(ann: Any, params: dict[str, Any]) -> None:
    assert_error(client_for(ann).get(URL, params), 400, "bad_request")


def test_nul_in_query_is_a_bad_request(ann: Any) -> None:
    assert_error(client_for(ann).get(URL, {"q": "a\x00b"}), 400, "bad_request")


def test_limits_at_the_bounds_are_accepted(ann: Any) -> None:
    message = say(ann, "ops", "edge")
    assert found(client_for(ann).get(URL, {"q": "edge", "limit": 1})) == [message.pk]
    assert found(client_for(ann).get(URL, {"q": "edge", "limit": 100})) == [message.pk]
    assert found(client_for(ann).get(URL, {"q": "edge" + " " * 252})) == [message.pk]


def test_channel_the_user_may_not_read(ann: Any, bob: Any, cat: Any) -> None:
    services.topic_create(user=bob, name="hidden", private=True)
    services.direct_send(sender=bob, to=cat.pk, body="hello")
    client = client_for(ann)
    assert_error(client.get(URL, {"q": "hello", "channel": "topic:hidden"}), 403, "forbidden")
    assert_error(client.get(URL, {"q": "hello", "channel": str(dm_channel(bob.pk, cat.pk))}), 403, "forbidden")
    assert_error(client.get(URL, {"q": "hello", "channel": f"system:{bob.pk}"}), 403, "forbidden")
    assert_error(client.get(URL, {"q": "hello", "channel": "topic:missing"}), 404, "not_found")


def test_unknown_sender(ann: Any) -> None:
    assert_error(client_for(ann).get(URL, {"q": "hello", "from": "nobody"}), 404, "not_found")


def test_in_the_schema(ann: Any) -> None:
    schema = client_for(ann).get("/api/schema/", {"format": "json"}).json()
    operation = schema["paths"][URL]["get"]
    names = {p["name"] for p in operation["parameters"]}
    assert {"q", "channel", "from", "before", "after", "offset", "limit"} <= names
    assert "200" in operation["responses"]
