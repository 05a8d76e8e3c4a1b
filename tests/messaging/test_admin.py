"""Moderation in the Django admin: the changelists, search and filters, deactivating a user."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from messaging import services
from messaging.channels import topic_channel
from messaging.models import Message

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fast_passwords(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def admin_client(make_user: Any) -> Client:
    client = Client()
    client.force_login(make_user("root", is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def data(make_user: Any) -> dict[str, Any]:
    """Two users, a topic with two messages and a dm with one."""
    ann, bob = make_user("ann"), make_user("bob")
    topic_msgs = [
        services.message_send(sender=ann, name=topic_channel("general"), body=b)[0]
        for b in ("hello everyone", "lunch at noon?")
    ]
    dm, _ = services.direct_send(sender=bob, to=ann.pk, body="private pineapple")
    return {"ann": ann, "bob": bob, "topic": topic_msgs, "dm": dm}


def listed(response: Any) -> list[Any]:
    assert response.status_code == 200
    return list(response.context["cl"].result_list)


def test_anonymous_is_sent_to_login(data: Any) -> None:
    response = Client().get("/admin/messaging/message/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_non_staff_is_refused(make_user: Any) -> None:
    client = Client()
    client.force_login(make_user("plain"))
    response = client.get("/admin/messaging/message/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_user_changelist(admin_client: Client, data: Any) -> None:
    users = listed(admin_client.get("/admin/auth/user/"))
    assert {u.username for u in users} == {"root", "ann", "bob"}


def test_channel_changelist(admin_client: Client, data: Any) -> None:
    channels = listed(admin_client.get("/admin/messaging/channel/"))
    assert {c.name for c in channels} == {"topic:general", data["dm"].channel.name}


def test_channel_filter_and_change_page(admin_client: Client, data: Any) -> None:
    channels = listed(admin_client.get("/admin/messaging/channel/", {"kind__exact": "direct"}))
    assert [c.name for c in channels] == [data["dm"].channel.name]
    channel = data["topic"][0].channel
    response = admin_client.get(f"/admin/messaging/channel/{channel.pk}/change/")
    assert response.status_code == 200
    assert "topic:general" in response.content.decode()


def test_message_changelist(admin_client: Client, data: Any) -> None:
    response = admin_client.get("/admin/messaging/message/")
    messages = listed(response)
    assert {m.pk for m in messages} == {m.pk for m in data["topic"]} | {data["dm"].pk}
    assert "private pineapple" in response.content.decode()


@pytest.mark.parametrize(
    ("q", "expected"),
    [("pineapple", ["dm"]), ("noon", ["topic1"]), ("general", ["topic0", "topic1"]), ("bob", ["dm"]), ("zzz", [])],
)
def test_message_search(admin_client: Client, data: Any, q: str, expected: list[str]) -> None:
    by_name = {"dm": data["dm"], "topic0": data["topic"][0], "topic1": data["topic"][1]}
    messages = listed(admin_client.get("/admin/messaging/message/", {"q": q}))
    assert {m.pk for m in messages} == {by_name[name].pk for name in expected}


@pytest.mark.parametrize(("kind", "expected"), [("topic", 2), ("direct", 1), ("system", 0)])
def test_message_filter_by_channel_kind(admin_client: Client, data: Any, kind: str, expected: int) -> None:
    messages = listed(admin_client.get("/admin/messaging/message/", {"channel__kind__exact": kind}))
    assert len(messages) == expected
    assert all(m.channel.kind == kind for m in messages)


def test_message_change_page_loads_and_add_is_disabled(admin_client: Client, data: Any) -> None:
    response = admin_client.get(f"/admin/messaging/message/{data['dm'].pk}/change/")
    assert response.status_code == 200
    assert admin_client.get("/admin/messaging/message/add/").status_code == 403


def test_message_fields_are_read_only_so_changes_go_through_delete(admin_client: Client, data: Any) -> None:
    """Moderators tombstone messages; rewriting a body in the admin would bypass
    the revision history and the live `message.edited` event."""
    message = data["topic"][0]
    url = f"/admin/messaging/message/{message.pk}/change/"
    form = admin_client.get(url).context["adminform"].form
    assert not {"seq", "channel", "body", "sender"} & set(form.fields)
    inline = {"revisions-TOTAL_FORMS": "0", "revisions-INITIAL_FORMS": "0"}
    response = admin_client.post(url, {"body": "moderated", **inline})
    assert response.status_code == 302
    message.refresh_from_db()
    assert message.body != "moderated" and message.seq == 1


def _change_form_data(form: Any) -> dict[str, Any]:
    """The POST a browser would send for an unchanged admin change form."""
    data: dict[str, Any] = {}
    for name, field in form.fields.items():
        if field.disabled:
            continue
        value = form.initial.get(name, field.initial)
        widget = field.widget
        if hasattr(widget, "widgets"):  # split date/time
            for index, part in enumerate(widget.decompress(value)):
                data[f"{name}_{index}"] = "" if part is None else str(part)
        elif isinstance(value, bool):
            if value:
                data[name] = "on"
        elif isinstance(value, list | tuple):
            data[name] = [getattr(v, "pk", v) for v in value]
        elif value is not None:
            data[name] = value
    return data


def test_deactivate_user_through_admin(admin_client: Client, data: Any) -> None:
    ann = data["ann"]
    url = f"/admin/auth/user/{ann.pk}/change/"
    response = admin_client.get(url)
    assert response.status_code == 200
    post = _change_form_data(response.context["adminform"].form)
    assert post["is_active"] == "on" and post["username"] == "ann"
    del post["is_active"]  # an unticked checkbox is not sent
    response = admin_client.post(url, post)
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else ""
    ann.refresh_from_db()
    assert ann.is_active is False
    assert ann.username == "ann" and ann.check_password("Pass-word-123")
    other = get_user_model().objects.get(username="bob")
    assert other.is_active is True
    assert Message.objects.filter(sender=ann).count() == 2
