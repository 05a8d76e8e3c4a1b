"""Topics over HTTP: listing, creation and private membership (protocol section 8)."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from messaging import services
from messaging.models import Channel, ChannelMember
from tests.api.helpers import assert_error, client_for

pytestmark = pytest.mark.django_db

TOPICS = "/api/topics/"


def members_url(name: str) -> str:
    return f"/api/topics/{name}/members/"


def names(response: Any) -> list[str]:
    return [t["name"] for t in response.json()["results"]]


def members_of(name: str) -> set[str]:
    return set(ChannelMember.objects.filter(channel__name=f"topic:{name}").values_list("user__username", flat=True))


@pytest.fixture
def cat(make_user: Any) -> Any:
    return make_user("cat")


@pytest.fixture
def secret(ann: Any) -> Channel:
    """A private topic created by ann (its only member)."""
    return services.topic_create(user=ann, name="secret", private=True)


# --- listing ------------------------------------------------------------------


def test_list_shape(ann: Any) -> None:
    services.topic_create(user=ann, name="general")
    services.message_send(sender=ann, name=services.topic_channel("general"), body="hi")
    response = client_for(ann).get(TOPICS)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"results", "next"} and body["next"] is None
    [topic] = body["results"]
    assert topic["name"] == "general" and topic["channel"] == "topic:general"
    assert topic["private"] is False and topic["last_seq"] == 1
    assert topic["created_at"]


def test_list_hides_others_private_topics(ann: Any, bob: Any, secret: Channel) -> None:
    services.topic_create(user=ann, name="general")
    services.topic_create(user=bob, name="bobs-own", private=True)
    assert names(client_for(bob).get(TOPICS)) == ["bobs-own", "general"]
    assert names(client_for(ann).get(TOPICS)) == ["general", "secret"]


def test_list_excludes_non_topic_channels(ann: Any, bob: Any) -> None:
    services.direct_send(sender=ann, to=bob.pk, body="hi")
    services.system_notice_send(user=ann, body="notice")
    assert client_for(ann).get(TOPICS).json() == {"results": [], "next": None}


def test_list_shows_private_topic_once_added(ann: Any, bob: Any, secret: Channel) -> None:
    assert names(client_for(bob).get(TOPICS)) == []
    services.topic_member_add(by=ann, name="secret", user_ref=bob.pk)
    [topic] = client_for(bob).get(TOPICS).json()["results"]
    assert topic["name"] == "secret" and topic["private"] is True


def test_list_pagination_follows_next(ann: Any, bob: Any) -> None:
    Channel.objects.bulk_create(
        [Channel(name=f"topic:t{i:03d}", kind="topic", created_by=ann) for i in range(120)]
        + [Channel(name="topic:t050x", kind="topic", is_private=True, created_by=ann)]
    )
    client = client_for(bob)
    first = client.get(TOPICS).json()
    assert len(first["results"]) == 100 and first["next"]
    second = client.get(first["next"]).json()
    assert second["next"] is None
    seen = [t["name"] for t in first["results"] + second["results"]]
    assert seen == [f"t{i:03d}" for i in range(120)]


def test_list_without_token_is_unauthorized(ann: Any) -> None:
    assert_error(APIClient().get(TOPICS), 401, "unauthorized")


# --- creation -----------------------------------------------------------------


def test_create_public_topic(ann: Any, bob: Any) -> None:
    response = client_for(ann).post(TOPICS, {"name": "general"}, format="json")
    assert response.status_code == 201
    body = response.json()
    assert body["name"] == "general" and body["channel"] == "topic:general"
    assert body["private"] is False and body["last_seq"] == 0
    channel = Channel.objects.get(name="topic:general")
    assert channel.kind == "topic" and channel.created_by_id == ann.pk
    assert not channel.memberships.exists()
    assert names(client_for(bob).get(TOPICS)) == ["general"]


def test_create_private_topic_makes_creator_first_member(ann: Any, bob: Any) -> None:
    response = client_for(ann).post(TOPICS, {"name": "secret", "private": True}, format="json")
    assert response.status_code == 201 and response.json()["private"] is True
    assert members_of("secret") == {"ann"}
    assert names(client_for(ann).get(TOPICS)) == ["secret"]
    assert names(client_for(bob).get(TOPICS)) == []


@pytest.mark.parametrize("private", [False, True])
def test_create_taken_name_is_conflict(ann: Any, bob: Any, private: bool) -> None:
    services.topic_create(user=ann, name="general", private=private)
    assert_error(client_for(bob).post(TOPICS, {"name": "general"}, format="json"), 409, "conflict")
    assert Channel.objects.filter(name="topic:general").count() == 1


def test_create_topic_autocreated_by_publish_is_conflict(ann: Any) -> None:
    services.message_send(sender=ann, name=services.topic_channel("auto"), body="hi")
    assert_error(client_for(ann).post(TOPICS, {"name": "auto"}, format="json"), 409, "conflict")


@pytest.mark.parametrize("name", ["Bad Name", "topic:x", "Upper", "", "-lead", "_lead", "a/b", "a" * 65, "sp ace", "é"])
def test_create_bad_name_is_bad_request(ann: Any, name: str) -> None:
    assert_error(client_for(ann).post(TOPICS, {"name": name}, format="json"), 400, "bad_request")
    assert not Channel.objects.exists()


@pytest.mark.parametrize("name", ["Bad Name", "topic:x", "-lead", "a" * 65])
def test_create_serializer_rejects_bad_name_itself(name: str) -> None:
    """The request is refused where it is validated, not only by the service behind it."""
    from messaging.api.serializers import TopicCreateSerializer

    data = TopicCreateSerializer(data={"name": name})
    assert not data.is_valid()
    assert "name" in data.errors


@pytest.mark.parametrize("name", ["a", "0", "a.b-c_d", "x" * 64])
def test_create_good_names(ann: Any, name: str) -> None:
    response = client_for(ann).post(TOPICS, {"name": name}, format="json")
    assert response.status_code == 201
    assert Channel.objects.filter(name=f"topic:{name}").exists()


def test_create_missing_name_or_bad_private_is_bad_request(ann: Any) -> None:
    assert_error(client_for(ann).post(TOPICS, {}, format="json"), 400, "bad_request")
    assert_error(client_for(ann).post(TOPICS, {"name": "x", "private": "maybe"}, format="json"), 400, "bad_request")


def test_create_without_token_is_unauthorized(db: Any) -> None:
    assert_error(APIClient().post(TOPICS, {"name": "x"}, format="json"), 401, "unauthorized")
    assert not Channel.objects.exists()


# --- adding members -------------------------------------------------------------


@pytest.mark.parametrize("ref", ["id", "username"])
def test_member_adds_user(ann: Any, bob: Any, secret: Channel, ref: str) -> None:
    response = client_for(ann).post(members_url("secret"), {"user": bob.pk if ref == "id" else "bob"}, format="json")
    assert response.status_code == 201
    assert response.json() == {"id": bob.pk, "username": "bob"}
    assert members_of("secret") == {"ann", "bob"}


def test_any_member_may_add(ann: Any, bob: Any, cat: Any, secret: Channel) -> None:
    services.topic_member_add(by=ann, name="secret", user_ref=bob.pk)
    assert client_for(bob).post(members_url("secret"), {"user": "cat"}, format="json").status_code == 201
    assert members_of("secret") == {"ann", "bob", "cat"}


def test_non_member_may_not_add(ann: Any, bob: Any, cat: Any, secret: Channel) -> None:
    assert_error(client_for(bob).post(members_url("secret"), {"user": "cat"}, format="json"), 403, "forbidden")
    assert_error(client_for(bob).post(members_url("secret"), {"user": "bob"}, format="json"), 403, "forbidden")
    assert members_of("secret") == {"ann"}


def test_public_topic_has_no_members(ann: Any, bob: Any) -> None:
    services.topic_create(user=ann, name="general")
    assert_error(client_for(ann).post(members_url("general"), {"user": "bob"}, format="json"), 400, "bad_request")
    assert_error(client_for(ann).delete(members_url("general"), {"user": "bob"}, format="json"), 400, "bad_request")
    assert not ChannelMember.objects.exists()


@pytest.mark.parametrize("ref", [999_999, "nobody"])
def test_add_unknown_user_is_not_found(ann: Any, secret: Channel, ref: Any) -> None:
    assert_error(client_for(ann).post(members_url("secret"), {"user": ref}, format="json"), 404, "not_found")


def test_add_existing_member_is_conflict(ann: Any, bob: Any, secret: Channel) -> None:
    services.topic_member_add(by=ann, name="secret", user_ref=bob.pk)
    assert_error(client_for(ann).post(members_url("secret"), {"user": "bob"}, format="json"), 409, "conflict")
    assert_error(client_for(ann).post(members_url("secret"), {"user": ann.pk}, format="json"), 409, "conflict")


def test_add_to_missing_topic_is_not_found(ann: Any, bob: Any) -> None:
    assert_error(client_for(ann).post(members_url("nowhere"), {"user": "bob"}, format="json"), 404, "not_found")
    assert not Channel.objects.exists()


@pytest.mark.parametrize(
    "body", [{}, {"user": None}, {"user": True}, {"user": 0}, {"user": -3}, {"user": ""}, {"user": []}]
)
def test_add_bad_user_field_is_bad_request(ann: Any, secret: Channel, body: dict[str, Any]) -> None:
    assert_error(client_for(ann).post(members_url("secret"), body, format="json"), 400, "bad_request")


def test_members_of_bad_topic_name_is_bad_request(ann: Any, bob: Any) -> None:
    assert_error(client_for(ann).post(members_url("Bad.Name"), {"user": "bob"}, format="json"), 400, "bad_request")


def test_members_without_token_is_unauthorized(ann: Any, bob: Any, secret: Channel) -> None:
    assert_error(APIClient().post(members_url("secret"), {"user": "bob"}, format="json"), 401, "unauthorized")
    assert members_of("secret") == {"ann"}


# --- removing members -----------------------------------------------------------


@pytest.fixture
def trio(ann: Any, bob: Any, cat: Any, secret: Channel) -> Channel:
    """secret, created by ann, with bob and cat added."""
    services.topic_member_add(by=ann, name="secret", user_ref=bob.pk)
    services.topic_member_add(by=ann, name="secret", user_ref=cat.pk)
    return secret


@pytest.mark.parametrize("ref", ["id", "username"])
def test_creator_removes_member(ann: Any, bob: Any, trio: Channel, ref: str) -> None:
    response = client_for(ann).delete(members_url("secret"), {"user": bob.pk if ref == "id" else "bob"}, format="json")
    assert response.status_code == 204 and not response.content
    assert members_of("secret") == {"ann", "cat"}
    assert_error(client_for(bob).get("/api/channels/topic:secret/messages/"), 403, "forbidden")


def test_member_removes_self(bob: Any, trio: Channel) -> None:
    response = client_for(bob).delete(members_url("secret"), {"user": "bob"}, format="json")
    assert response.status_code == 204
    assert members_of("secret") == {"ann", "cat"}
    assert "secret" not in names(client_for(bob).get(TOPICS))


def test_non_creator_may_not_remove_others(ann: Any, bob: Any, trio: Channel) -> None:
    assert_error(client_for(bob).delete(members_url("secret"), {"user": "cat"}, format="json"), 403, "forbidden")
    assert_error(client_for(bob).delete(members_url("secret"), {"user": ann.pk}, format="json"), 403, "forbidden")
    assert members_of("secret") == {"ann", "bob", "cat"}


def test_non_member_may_not_remove(make_user: Any, trio: Channel) -> None:
    eve = make_user("eve")
    assert_error(client_for(eve).delete(members_url("secret"), {"user": "bob"}, format="json"), 403, "forbidden")
    assert members_of("secret") == {"ann", "bob", "cat"}


def test_remove_non_member_is_not_found(ann: Any, make_user: Any, trio: Channel) -> None:
    make_user("eve")
    assert_error(client_for(ann).delete(members_url("secret"), {"user": "eve"}, format="json"), 404, "not_found")
    assert_error(client_for(ann).delete(members_url("secret"), {"user": "nobody"}, format="json"), 404, "not_found")


def test_remove_from_missing_topic_is_not_found(ann: Any, bob: Any) -> None:
    assert_error(client_for(ann).delete(members_url("nowhere"), {"user": "bob"}, format="json"), 404, "not_found")


def test_remove_twice_second_is_forbidden(bob: Any, trio: Channel) -> None:
    """Once out, bob is no member: he may not even see who is left."""
    assert client_for(bob).delete(members_url("secret"), {"user": "bob"}, format="json").status_code == 204
    assert_error(client_for(bob).delete(members_url("secret"), {"user": "bob"}, format="json"), 403, "forbidden")


def test_remove_without_body_is_bad_request(ann: Any, trio: Channel) -> None:
    assert_error(client_for(ann).delete(members_url("secret")), 400, "bad_request")
    assert members_of("secret") == {"ann", "bob", "cat"}
