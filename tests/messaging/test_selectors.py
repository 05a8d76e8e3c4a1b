"""messaging.selectors and messaging.wire: who may read what, history pages, the message frame."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from django.utils import timezone as dj_timezone

from messaging import services
from messaging.channels import BROADCAST, dm_channel, system_channel, topic_channel
from messaging.errors import BadRequest, Forbidden, NotFound
from messaging.models import Channel, Message
from messaging.selectors import (
    channel_last_seq,
    channel_may_read,
    channel_readable,
    history_limit,
    history_page,
    messages_between,
    messages_between_named,
    topics_visible,
    user_resolve,
)
from messaging.wire import iso_utc, message_frame, user_ref

pytestmark = pytest.mark.django_db

ISO_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")


@pytest.fixture(autouse=True)
def _cheap_passwords(settings: Any) -> None:
    """These tests make many users and never log in: skip PBKDF2's rounds."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def ten(ann: Any) -> Channel:
    """A public topic holding seq 1..10 (bodies m1..m10)."""
    channel = services.topic_create(user=ann, name="ten")
    for i in range(1, 11):
        services.message_store(channel=channel, sender=ann, body=f"m{i}")
    return channel


def page_seqs(channel: Channel | None, **kwargs: Any) -> tuple[list[int], bool]:
    page = history_page(channel=channel, **kwargs)
    return [m.seq for m in page.messages], page.has_more


# --- user_resolve ----------------------------------------------------------------------


def test_user_resolve(ann: Any) -> None:
    assert user_resolve(ref=ann.pk) == ann
    assert user_resolve(ref="ann") == ann
    for ref in ("nobody", str(ann.pk), ann.pk + 1000, 10**20):
        with pytest.raises(NotFound):
            user_resolve(ref=ref)


# --- history_page -------------------------------------------------------------------------


def test_history_newest_limit_without_bounds(ten: Channel) -> None:
    assert page_seqs(ten, limit=3) == ([8, 9, 10], True)
    assert page_seqs(ten, limit=10) == (list(range(1, 11)), False)
    assert page_seqs(ten, limit=200) == (list(range(1, 11)), False)
    assert page_seqs(ten) == (list(range(1, 11)), False)


def test_history_default_limit_is_50(ann: Any) -> None:
    channel = services.topic_create(user=ann, name="many")
    for i in range(55):
        services.message_store(channel=channel, sender=ann, body=str(i))
    assert page_seqs(channel) == (list(range(6, 56)), True)


def test_history_before(ten: Channel) -> None:
    assert page_seqs(ten, before=6, limit=2) == ([4, 5], True)
    assert page_seqs(ten, before=3, limit=2) == ([1, 2], False)
    assert page_seqs(ten, before=3, limit=5) == ([1, 2], False)
    assert page_seqs(ten, before=1) == ([], False)
    assert page_seqs(ten, before=100, limit=3) == ([8, 9, 10], True)


def test_history_after(ten: Channel) -> None:
    assert page_seqs(ten, after=7, limit=2) == ([8, 9], True)
    assert page_seqs(ten, after=8, limit=2) == ([9, 10], False)
    assert page_seqs(ten, after=0, limit=3) == ([1, 2, 3], True)
    assert page_seqs(ten, after=0) == (list(range(1, 11)), False)
    assert page_seqs(ten, after=10) == ([], False)


def test_history_between(ten: Channel) -> None:
    assert page_seqs(ten, after=2, before=8, limit=3) == ([3, 4, 5], True)
    assert page_seqs(ten, after=2, before=8, limit=5) == ([3, 4, 5, 6, 7], False)
    assert page_seqs(ten, after=2, before=8, limit=4) == ([3, 4, 5, 6], True)
    assert page_seqs(ten, after=4, before=5) == ([], False)


def test_history_pages_chain_without_overlap(ten: Channel) -> None:
    backwards: list[int] = []
    before, more = None, True
    while more:
        page = history_page(channel=ten, before=before, limit=3)
        backwards = [m.seq for m in page.messages] + backwards
        before, more = page.messages[0].seq, page.has_more
    assert backwards == list(range(1, 11))
    forwards: list[int] = []
    after, more = 0, True
    while more:
        page = history_page(channel=ten, after=after, limit=4)
        forwards += [m.seq for m in page.messages]
        after, more = page.messages[-1].seq, page.has_more
    assert forwards == list(range(1, 11))


def test_history_only_its_channel(ten: Channel, ann: Any) -> None:
    other = services.topic_create(user=ann, name="other")
    services.message_store(channel=other, sender=ann, body="elsewhere")
    page = history_page(channel=other)
    assert [m.body for m in page.messages] == ["elsewhere"]
    assert all(m.channel.pk == ten.pk for m in history_page(channel=ten).messages)


@pytest.mark.parametrize("limit", [0, -1, 201, 1000])
def test_history_limit_bounds(ten: Channel, limit: int) -> None:
    with pytest.raises(BadRequest):
        history_page(channel=ten, limit=limit)
    with pytest.raises(BadRequest):
        history_page(channel=None, limit=limit)


def test_history_limit_values() -> None:
    assert history_limit(None) == 50
    assert history_limit(1) == 1
    assert history_limit(200) == 200


def test_history_of_a_channel_without_messages() -> None:
    page = history_page(channel=None, limit=10)
    assert page.messages == [] and page.has_more is False


def test_history_frames_need_no_query_per_row(ten: Channel, django_assert_num_queries: Any) -> None:
    with django_assert_num_queries(1):
        frames = [message_frame(m) for m in history_page(channel=ten, limit=10).messages]
    assert [f["body"] for f in frames] == [f"m{i}" for i in range(1, 11)]
    assert {f["from"]["username"] for f in frames} == {"ann"}


def test_deleted_message_is_a_tombstone(ten: Channel) -> None:
    Message.objects.filter(channel=ten, seq=4).update(deleted_at=dj_timezone.now())
    page = history_page(channel=ten, after=2, limit=3)
    assert [m.seq for m in page.messages] == [3, 4, 5]
    tomb = message_frame(page.messages[1])
    assert tomb["deleted"] is True and tomb["body"] is None
    assert tomb["seq"] == 4 and tomb["id"] == Message.objects.get(channel=ten, seq=4).pk
    alive = message_frame(page.messages[0])
    assert alive["deleted"] is False and alive["body"] == "m3"


# --- messages_between, last_seq ------------------------------------------------------------


def test_messages_between(ten: Channel) -> None:
    assert [m.seq for m in messages_between(channel=ten, after=3, upto=6)] == [4, 5, 6]
    assert [m.seq for m in messages_between(channel=ten, after=0, upto=10, limit=4)] == [1, 2, 3, 4]
    assert messages_between(channel=ten, after=6, upto=6) == []
    assert [m.seq for m in messages_between_named(name="topic:ten", after=8, upto=99)] == [9, 10]
    assert messages_between_named(name="topic:absent", after=0, upto=5) == []
    assert channel_last_seq(channel_id=ten.pk) == 10


# --- channel_readable / channel_may_read -------------------------------------------------


def test_dm_readable_by_its_pair_only(make_user: Any) -> None:
    ann, bob, eve = make_user(), make_user(), make_user(is_staff=True)
    name = dm_channel(ann.pk, bob.pk)
    assert channel_readable(user=ann, name=name) is None  # no message yet
    message, _ = services.direct_send(sender=ann, to=bob.pk, body="hi")
    assert channel_readable(user=bob, name=name) == message.channel
    assert channel_readable(user=ann, name=name) == message.channel
    with pytest.raises(Forbidden):
        channel_readable(user=eve, name=name)  # staff read nothing extra
    with pytest.raises(Forbidden):
        channel_readable(user=ann, name=dm_channel(bob.pk, eve.pk))  # another pair, not stored yet


def test_system_readable_by_its_owner_only(make_user: Any) -> None:
    ann, bob = make_user(), make_user(is_staff=True)
    assert channel_readable(user=ann, name=system_channel(ann.pk)) is None
    notice = services.system_notice_send(user=ann, body="hello")
    assert channel_readable(user=ann, name=system_channel(ann.pk)) == notice.channel
    with pytest.raises(Forbidden):
        channel_readable(user=bob, name=system_channel(ann.pk))
    with pytest.raises(Forbidden):
        channel_readable(user=ann, name=system_channel(bob.pk))


def test_private_topic_readable_by_members_only(make_user: Any) -> None:
    owner, member, outsider, staff = make_user(), make_user("mem"), make_user(), make_user(is_staff=True)
    private = services.topic_create(user=owner, name="priv", private=True)
    services.topic_member_add(by=owner, name="priv", user_ref="mem")
    assert channel_readable(user=owner, name=topic_channel("priv")) == private
    assert channel_readable(user=member, name=topic_channel("priv")) == private
    for user in (outsider, staff):
        with pytest.raises(Forbidden):
            channel_readable(user=user, name=topic_channel("priv"))
        assert not channel_may_read(user=user, name=private.parsed, channel=private)


def test_public_topic_and_broadcast_readable_by_anyone(make_user: Any) -> None:
    ann, bob = make_user(), make_user()
    public = services.topic_create(user=ann, name="pub")
    assert channel_readable(user=bob, name=topic_channel("pub")) == public
    assert channel_readable(user=bob, name=BROADCAST) is None
    staff = make_user(is_staff=True)
    message, _ = services.broadcast_send(sender=staff, body="hear ye")
    assert channel_readable(user=bob, name=BROADCAST) == message.channel


def test_missing_topic_is_not_found(ann: Any) -> None:
    with pytest.raises(NotFound):
        channel_readable(user=ann, name=topic_channel("ghost"))
    assert not Channel.objects.filter(name="topic:ghost").exists()  # reading never creates


# --- topics_visible ------------------------------------------------------------------------


def test_topics_visible(make_user: Any) -> None:
    ann, bob, staff = make_user("vis_ann"), make_user("vis_bob"), make_user(is_staff=True)
    services.topic_create(user=ann, name="open")
    services.topic_create(user=ann, name="anns", private=True)
    services.topic_create(user=bob, name="bobs", private=True)
    services.topic_create(user=bob, name="shared", private=True)
    services.topic_member_add(by=bob, name="shared", user_ref="vis_ann")
    services.direct_send(sender=ann, to=bob.pk, body="dm")
    services.system_notice_send(user=ann, body="notice")
    services.broadcast_send(sender=staff, body="all")

    def visible(user: Any) -> set[str]:
        return set(topics_visible(user=user).values_list("name", flat=True))

    assert visible(ann) == {"topic:open", "topic:anns", "topic:shared"}
    assert visible(bob) == {"topic:open", "topic:bobs", "topic:shared"}
    assert visible(staff) == {"topic:open"}
    assert topics_visible(user=ann).count() == 3  # no duplicate rows from the membership join


# --- wire --------------------------------------------------------------------------------


def test_iso_utc_format() -> None:
    plus_one = timezone(timedelta(hours=1))
    value = datetime(2026, 11, 30, 13, 0, 0, 123456, tzinfo=plus_one)
    assert iso_utc(value) == "2026-11-30T12:00:00.123Z"
    assert iso_utc(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05.000Z"
    assert iso_utc(datetime(2026, 1, 1, 0, 30, 0, 999999, tzinfo=timezone(timedelta(hours=2)))) == (
        "2025-12-31T22:30:00.999Z"
    )
    assert iso_utc(None) is None


def test_message_frame_of_a_direct_message(make_user: Any) -> None:
    ann, bob = make_user("wire_ann"), make_user("wire_bob")
    message, _ = services.direct_send(sender=ann, to=bob.pk, body="hi", client_id="c-5d1e")
    frame = message_frame(message)
    lo, hi = sorted((ann.pk, bob.pk))
    assert frame == {
        "type": "message",
        "id": message.pk,
        "channel": f"dm:{lo}:{hi}",
        "seq": 1,
        "kind": "direct",
        "from": {"id": ann.pk, "username": "wire_ann"},
        "body": "hi",
        "client_id": "c-5d1e",
        "created_at": frame["created_at"],
        "edited_at": None,
        "deleted": False,
    }
    assert ISO_RE.fullmatch(frame["created_at"])
    parsed = datetime.strptime(frame["created_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert abs(parsed - message.created_at) < timedelta(milliseconds=1)


def test_message_frame_kinds_and_edited(make_user: Any) -> None:
    ann, staff = make_user(), make_user(is_staff=True)
    notice = services.system_notice_send(user=ann, body="n")
    assert message_frame(notice)["kind"] == "system" and message_frame(notice)["from"] is None
    topic_msg, _ = services.message_send(sender=ann, name=topic_channel("k"), body="t")
    assert message_frame(topic_msg)["kind"] == "topic"
    cast, _ = services.broadcast_send(sender=staff, body="b")
    assert message_frame(cast)["kind"] == "broadcast" and message_frame(cast)["channel"] == "broadcast"
    topic_msg.edited_at = datetime(2026, 5, 1, 8, 0, 0, 5000, tzinfo=UTC)
    assert message_frame(topic_msg)["edited_at"] == "2026-05-01T08:00:00.005Z"


def test_user_ref(ann: Any) -> None:
    assert user_ref(ann) == {"id": ann.pk, "username": "ann"}
    assert user_ref(None) is None
