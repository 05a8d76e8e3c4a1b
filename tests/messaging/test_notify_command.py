"""`manage.py notify`: system notices to users by name, id, or to everyone active."""

from __future__ import annotations

import json
from io import StringIO
from typing import Any

import msgspec
import pytest
import redis
from django.conf import settings
from django.core.management import CommandError, call_command

from messaging.channels import user_group
from messaging.fanout import fanout_channel
from messaging.models import Channel, Message

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fast_passwords(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def notify(*args: str) -> str:
    out = StringIO()
    call_command("notify", *args, stdout=out)
    return out.getvalue()


def notices_of(user: Any) -> list[Message]:
    return list(Message.objects.filter(channel__name=f"system:{user.pk}").order_by("seq"))


def test_notify_by_username(make_user: Any) -> None:
    alice = make_user("alice")
    output = notify("alice", "--body", "hi")
    [message] = notices_of(alice)
    assert message.seq == 1 and message.body == "hi" and message.sender is None
    assert message.channel.kind == "system"
    assert output.strip() == f"system:{alice.pk} seq 1"


def test_notify_by_id_numbers_on(make_user: Any) -> None:
    alice = make_user("alice")
    notify("alice", "--body", "first")
    notify(str(alice.pk), "--body", "second")
    assert [(m.seq, m.body) for m in notices_of(alice)] == [(1, "first"), (2, "second")]
    assert Channel.objects.get(name=f"system:{alice.pk}").last_seq == 2


def test_notify_several_users(make_user: Any) -> None:
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    notify("alice", str(bob.pk), "--body", "two of you")
    assert [m.body for m in notices_of(alice)] == ["two of you"]
    assert [m.body for m in notices_of(bob)] == ["two of you"]
    assert notices_of(carol) == []


def test_notify_all_active_users(make_user: Any) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    gone = make_user("gone", is_active=False)
    output = notify("--all", "--body", "maintenance tonight")
    assert [m.body for m in notices_of(alice)] == ["maintenance tonight"]
    assert [m.body for m in notices_of(bob)] == ["maintenance tonight"]
    assert notices_of(gone) == []
    assert len(output.strip().splitlines()) == 2


def test_notify_unknown_user_is_command_error(make_user: Any) -> None:
    make_user("alice")
    with pytest.raises(CommandError, match="nobody"):
        notify("nobody", "--body", "hi")
    with pytest.raises(CommandError):
        notify("999999", "--body", "hi")
    assert not Message.objects.exists()


def test_notify_resolves_every_user_before_sending(make_user: Any) -> None:
    make_user("alice")
    with pytest.raises(CommandError):
        notify("alice", "nobody", "--body", "hi")
    assert not Message.objects.exists()


def test_notify_needs_users_or_all(db: Any) -> None:
    with pytest.raises(CommandError):
        notify("--body", "hi")


def test_notify_refuses_users_and_all_together(make_user: Any) -> None:
    make_user("alice")
    with pytest.raises(CommandError):
        notify("alice", "--all", "--body", "hi")
    assert not Message.objects.exists()


def test_notify_needs_body(make_user: Any) -> None:
    make_user("alice")
    with pytest.raises(CommandError):
        notify("alice")


def test_notify_empty_body_is_command_error(make_user: Any) -> None:
    make_user("alice")
    with pytest.raises(CommandError, match="empty"):
        notify("alice", "--body", "")
    assert not Message.objects.exists()


def test_notify_delivers_after_commit(make_user: Any, django_capture_on_commit_callbacks: Any) -> None:
    """The notice is published once, to the user's group, when the transaction commits."""
    if not settings.REDIS_URL:
        pytest.skip("the Redis fan-out path; the in-process one is in tests/messaging/test_fanout.py")
    alice = make_user("alice")
    client = redis.Redis.from_url(settings.REDIS_URL)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(fanout_channel())
    try:
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            notify("alice", "--body", "hi")
        assert len(callbacks) == 2  # the hand-over to the notification task, and the delivery
        assert pubsub.get_message(timeout=0.2) is None  # nothing before the commit
        for callback in callbacks:
            callback()
        published = pubsub.get_message(timeout=5)
    finally:
        pubsub.close()
        client.close()
    group, _, body = published["data"].partition(b"\n")
    assert group.decode() == user_group(alice.pk)
    event = msgspec.json.decode(body)
    frame = json.loads(event["text"])
    assert event["type"] == "chat.message" and event["channel"] == f"system:{alice.pk}" and event["seq"] == 1
    assert frame["type"] == "message" and frame["channel"] == f"system:{alice.pk}"
    assert frame["kind"] == "system" and frame["body"] == "hi" and frame["from"] is None and frame["seq"] == 1
