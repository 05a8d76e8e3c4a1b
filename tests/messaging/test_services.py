"""messaging.services: storing messages (seq, idempotency), authorisation, topics."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from messaging import services
from messaging.channels import BROADCAST, dm_channel, parse_channel, system_channel, topic_channel
from messaging.errors import BadRequest, Conflict, Forbidden, NotFound, TooLarge
from messaging.models import Channel, ChannelMember, Message
from messaging.selectors import channel_readable

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _cheap_passwords(settings: Any) -> None:
    """These tests make many users and never log in: skip PBKDF2's rounds."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def topic(make_user: Any) -> Channel:
    return services.topic_create(user=make_user(), name="general")


def last_seq(channel: Channel) -> int:
    return Channel.objects.get(pk=channel.pk).last_seq


def seqs(channel: Channel) -> list[int]:
    return list(Message.objects.filter(channel=channel).order_by("seq").values_list("seq", flat=True))


@pytest.fixture
def chat_setting(settings: Any) -> Any:
    def set_(**values: Any) -> None:
        settings.CHAT = {**settings.CHAT, **values}

    return set_


# --- message_store: seq -------------------------------------------------------------


def test_store_takes_seq_1_2_3(make_user: Any, topic: Channel) -> None:
    ann = make_user()
    stored = [services.message_store(channel=topic, sender=ann, body=f"m{i}") for i in range(3)]
    assert [m.seq for m, _ in stored] == [1, 2, 3]
    assert all(created for _, created in stored)
    assert [m.body for m, _ in stored] == ["m0", "m1", "m2"]
    assert seqs(topic) == [1, 2, 3]
    assert last_seq(topic) == 3
    assert topic.last_seq == 3  # the caller's object is kept current
    message = stored[0][0]
    assert message.channel == topic and message.sender == ann and message.client_id is None


def test_each_channel_counts_its_own_seq(make_user: Any) -> None:
    ann = make_user()
    a = services.topic_create(user=ann, name="a")
    b = services.topic_create(user=ann, name="b")
    assert services.message_store(channel=a, sender=ann, body="1")[0].seq == 1
    assert services.message_store(channel=a, sender=ann, body="2")[0].seq == 2
    assert services.message_store(channel=b, sender=ann, body="1")[0].seq == 1
    assert (last_seq(a), last_seq(b)) == (2, 1)


# --- message_store: idempotency -----------------------------------------------------


def test_same_client_id_gives_the_first_message_back(make_user: Any, topic: Channel) -> None:
    ann = make_user()
    first, created = services.message_store(channel=topic, sender=ann, body="hi", client_id="c-1")
    again, created_again = services.message_store(channel=topic, sender=ann, body="hi (retry)", client_id="c-1")
    assert created and not created_again
    assert again.pk == first.pk and again.seq == 1 and again.body == "hi"
    assert Message.objects.filter(channel=topic).count() == 1
    assert last_seq(topic) == 1  # no seq taken by the retry
    assert services.message_store(channel=topic, sender=ann, body="next", client_id="c-2")[0].seq == 2


def test_client_id_is_per_sender(make_user: Any, topic: Channel) -> None:
    ann, bob = make_user(), make_user()
    first, _ = services.message_store(channel=topic, sender=ann, body="a", client_id="same")
    other, created = services.message_store(channel=topic, sender=bob, body="b", client_id="same")
    assert created and other.pk != first.pk and other.seq == 2


def test_client_id_repeat_through_direct_send(make_user: Any) -> None:
    ann, bob = make_user(), make_user()
    first, _ = services.direct_send(sender=ann, to=bob.pk, body="hi", client_id="d-1")
    again, created = services.direct_send(sender=ann, to=bob.pk, body="hi", client_id="d-1")
    assert not created and again.pk == first.pk
    assert last_seq(first.channel) == 1


def test_client_id_after_the_window_stores_a_new_message(make_user: Any, topic: Channel) -> None:
    ann = make_user()
    first, _ = services.message_store(channel=topic, sender=ann, body="old", client_id="c-1")
    Message.objects.filter(pk=first.pk).update(created_at=timezone.now() - timedelta(days=1, seconds=5))
    second, created = services.message_store(channel=topic, sender=ann, body="new", client_id="c-1")
    assert created and second.pk != first.pk and second.seq == 2
    # Within the window again, the newest one is what comes back.
    third, created = services.message_store(channel=topic, sender=ann, body="again", client_id="c-1")
    assert not created and third.pk == second.pk


def test_client_id_just_inside_the_window_is_still_a_repeat(make_user: Any, topic: Channel) -> None:
    ann = make_user()
    first, _ = services.message_store(channel=topic, sender=ann, body="old", client_id="c-1")
    Message.objects.filter(pk=first.pk).update(created_at=timezone.now() - timedelta(hours=23, minutes=59))
    again, created = services.message_store(channel=topic, sender=ann, body="old", client_id="c-1")
    assert not created and again.pk == first.pk


def test_idempotency_window_setting(make_user: Any, topic: Channel, chat_setting: Any) -> None:
    ann = make_user()
    first, _ = services.message_store(channel=topic, sender=ann, body="x", client_id="w")
    Message.objects.filter(pk=first.pk).update(created_at=timezone.now() - timedelta(seconds=30))
    chat_setting(IDEMPOTENCY_WINDOW=10)
    second, created = services.message_store(channel=topic, sender=ann, body="x", client_id="w")
    assert created and second.seq == 2
    chat_setting(IDEMPOTENCY_WINDOW=3600)
    assert services.message_store(channel=topic, sender=ann, body="x", client_id="w")[0].pk == second.pk


def test_no_client_id_never_deduplicates(make_user: Any, topic: Channel) -> None:
    ann = make_user()
    a, _ = services.message_store(channel=topic, sender=ann, body="same")
    b, created = services.message_store(channel=topic, sender=ann, body="same")
    assert created and a.pk != b.pk


# --- refused sends store nothing and take no seq ----------------------------------


@pytest.mark.parametrize(
    "body, client_id, error",
    [("", None, BadRequest), ("x" * 16385, None, TooLarge), (5, None, BadRequest), ("ok", "c" * 65, BadRequest)],
)
def test_refused_store_takes_no_seq(make_user: Any, topic: Channel, body: Any, client_id: Any, error: type) -> None:
    ann = make_user()
    services.message_store(channel=topic, sender=ann, body="first")
    with pytest.raises(error):
        services.message_store(channel=topic, sender=ann, body=body, client_id=client_id)
    assert last_seq(topic) == 1 and seqs(topic) == [1]
    assert services.message_store(channel=topic, sender=ann, body="second")[0].seq == 2


def test_refused_publish_takes_no_seq(make_user: Any) -> None:
    owner, outsider = make_user(), make_user()
    private = services.topic_create(user=owner, name="inner", private=True)
    services.message_send(sender=owner, name=private.parsed, body="1")
    with pytest.raises(Forbidden):
        services.message_send(sender=outsider, name=private.parsed, body="2")
    with pytest.raises(TooLarge):
        services.message_send(sender=owner, name=private.parsed, body="\u20ac" * 6000)
    assert last_seq(private) == 1 and seqs(private) == [1]
    assert services.message_send(sender=owner, name=private.parsed, body="3")[0].seq == 2


# --- direct_send -------------------------------------------------------------------


def test_direct_by_id_and_by_username_share_the_pair_channel(make_user: Any) -> None:
    ann, bob = make_user("ann_d"), make_user("bob_d")
    first, created = services.direct_send(sender=bob, to=ann.pk, body="hi ann")
    second, _ = services.direct_send(sender=ann, to="bob_d", body="hi bob")
    lo, hi = sorted((ann.pk, bob.pk))
    assert created
    assert first.channel.name == second.channel.name == f"dm:{lo}:{hi}"
    assert first.channel.kind == "direct"
    assert (first.seq, second.seq) == (1, 2)
    assert (first.sender, second.sender) == (bob, ann)


def test_direct_to_self_is_bad_request(make_user: Any) -> None:
    ann = make_user("self_d")
    for to in (ann.pk, "self_d"):
        with pytest.raises(BadRequest):
            services.direct_send(sender=ann, to=to, body="me")
    assert not Message.objects.exists()
    assert not Channel.objects.filter(kind="direct").exists()


@pytest.mark.parametrize("to", ["nobody_here", 10**9, 10**20])
def test_direct_to_unknown_user_is_not_found(make_user: Any, to: Any) -> None:
    ann = make_user()
    with pytest.raises(NotFound) as info:
        services.direct_send(sender=ann, to=to, body="hello?")
    assert info.value.code == "not_found"
    assert not Message.objects.exists() and not Channel.objects.exists()


def test_direct_with_bad_body_checks_body_first(make_user: Any) -> None:
    ann = make_user()
    with pytest.raises(TooLarge):
        services.direct_send(sender=ann, to="nobody_here", body="x" * 16385)
    assert not Channel.objects.exists()


# --- message_send: authorisation -----------------------------------------------------


def test_publish_to_system_is_forbidden(make_user: Any) -> None:
    ann, bob = make_user(), make_user(is_staff=True)
    for sender, owner in ((ann, ann), (ann, bob), (bob, ann), (bob, bob)):
        with pytest.raises(Forbidden):
            services.message_send(sender=sender, name=system_channel(owner.pk), body="x")
    assert not Message.objects.exists() and not Channel.objects.exists()


def test_broadcast_by_non_staff_is_forbidden(make_user: Any) -> None:
    ann = make_user()
    with pytest.raises(Forbidden):
        services.message_send(sender=ann, name=BROADCAST, body="everyone!")
    with pytest.raises(Forbidden):
        services.broadcast_send(sender=ann, body="everyone!")
    assert not Message.objects.exists() and not Channel.objects.exists()


def test_broadcast_by_staff(make_user: Any) -> None:
    staff = make_user(is_staff=True)
    message, created = services.message_send(sender=staff, name=BROADCAST, body="maintenance at 5")
    again, _ = services.broadcast_send(sender=staff, body="done")
    assert created and message.channel.name == "broadcast" and message.channel.kind == "broadcast"
    assert (message.seq, again.seq) == (1, 2) and again.channel.pk == message.channel.pk


def test_publish_to_own_dm_is_bad_request(make_user: Any) -> None:
    ann, bob = make_user(), make_user()
    with pytest.raises(BadRequest):
        services.message_send(sender=ann, name=dm_channel(ann.pk, bob.pk), body="x")
    assert not Message.objects.exists()


def test_publish_to_another_pairs_dm_is_forbidden(make_user: Any) -> None:
    ann, bob, eve = make_user(), make_user(), make_user()
    with pytest.raises(Forbidden):
        services.message_send(sender=eve, name=dm_channel(ann.pk, bob.pk), body="x")
    assert not Message.objects.exists()


def test_private_topic_only_for_members(make_user: Any) -> None:
    owner, outsider, staff = make_user(), make_user(), make_user(is_staff=True)
    private = services.topic_create(user=owner, name="secret", private=True)
    for sender in (outsider, staff):  # staff get no extra rights over the API
        with pytest.raises(Forbidden):
            services.message_send(sender=sender, name=private.parsed, body="let me in")
    message, created = services.message_send(sender=owner, name=private.parsed, body="hi")
    assert created and message.seq == 1


def test_public_topic_any_user(make_user: Any, topic: Channel) -> None:
    message, created = services.message_send(sender=make_user(), name=topic.parsed, body="hi")
    assert created and message.channel.pk == topic.pk and message.channel.kind == "topic"


def test_publish_autocreates_public_topic(make_user: Any, chat_setting: Any) -> None:
    chat_setting(TOPIC_AUTOCREATE=True)
    ann = make_user()
    message, created = services.message_send(sender=ann, name=topic_channel("fresh"), body="first!")
    channel = Channel.objects.get(name="topic:fresh")
    assert created and message.channel.pk == channel.pk and message.seq == 1
    assert channel.kind == "topic" and not channel.is_private and channel.created_by == ann


def test_publish_without_autocreate_is_not_found(make_user: Any, chat_setting: Any, topic: Channel) -> None:
    chat_setting(TOPIC_AUTOCREATE=False)
    ann = make_user()
    with pytest.raises(NotFound):
        services.message_send(sender=ann, name=topic_channel("absent"), body="x")
    assert not Channel.objects.filter(name="topic:absent").exists()
    assert not Message.objects.exists()
    # An existing topic is still writable.
    assert services.message_send(sender=ann, name=topic.parsed, body="ok")[0].seq == 1


def test_channel_for_write_without_create(make_user: Any) -> None:
    ann = make_user()
    with pytest.raises(NotFound):
        services.channel_for_write(user=ann, name=topic_channel("nope"), create=False)
    assert not Channel.objects.exists()


# --- system notices -----------------------------------------------------------------


def test_system_notice(make_user: Any, django_capture_on_commit_callbacks: Any) -> None:
    ann = make_user()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        first = services.system_notice_send(user=ann, body="welcome")
        second = services.system_notice_send(user=ann, body="again")
    assert first.channel.name == f"system:{ann.pk}" and first.channel.kind == "system"
    assert first.sender is None and first.body == "welcome"
    assert (first.seq, second.seq) == (1, 2)
    # Per notice, both wait for the commit: the hand-over to the notification task, and delivery.
    assert len(callbacks) == 4
    assert Message.objects.filter(channel__name=f"system:{ann.pk}", sender=None).count() == 2


def test_system_notice_bad_body_stores_nothing(make_user: Any) -> None:
    ann = make_user()
    with pytest.raises(BadRequest):
        services.system_notice_send(user=ann, body="")
    assert not Message.objects.exists()


# --- topics -----------------------------------------------------------------------------


def test_topic_create_public(make_user: Any) -> None:
    ann = make_user()
    channel = services.topic_create(user=ann, name="news")
    assert channel.name == "topic:news" and channel.kind == "topic"
    assert not channel.is_private and channel.created_by == ann and channel.last_seq == 0
    assert not ChannelMember.objects.filter(channel=channel).exists()


def test_topic_create_private_creator_is_member(make_user: Any) -> None:
    ann = make_user()
    channel = services.topic_create(user=ann, name="club", private=True)
    assert channel.is_private
    assert list(ChannelMember.objects.filter(channel=channel).values_list("user_id", flat=True)) == [ann.pk]


def test_topic_create_duplicate_is_conflict(make_user: Any) -> None:
    ann, bob = make_user(), make_user()
    services.topic_create(user=ann, name="dup")
    with pytest.raises(Conflict):
        services.topic_create(user=bob, name="dup", private=True)
    assert Channel.objects.filter(name="topic:dup").count() == 1
    assert not Channel.objects.get(name="topic:dup").is_private
    assert not ChannelMember.objects.exists()


def test_topic_create_conflicts_with_autocreated(make_user: Any) -> None:
    ann = make_user()
    services.message_send(sender=ann, name=topic_channel("auto"), body="x")
    with pytest.raises(Conflict):
        services.topic_create(user=ann, name="auto")


@pytest.mark.parametrize("name", ["Bad", "", "-x", "a" * 65, "topic:x"])
def test_topic_create_bad_name(make_user: Any, name: str) -> None:
    with pytest.raises(BadRequest):
        services.topic_create(user=make_user(), name=name)
    assert not Channel.objects.exists()


@pytest.fixture
def club(make_user: Any) -> dict[str, Any]:
    owner, member, other = make_user("owner"), make_user("member"), make_user("other")
    channel = services.topic_create(user=owner, name="club", private=True)
    services.topic_member_add(by=owner, name="club", user_ref=member.pk)
    return {"channel": channel, "owner": owner, "member": member, "other": other}


def members_of(channel: Channel) -> set[int]:
    return set(ChannelMember.objects.filter(channel=channel).values_list("user_id", flat=True))


def test_any_member_adds(club: dict[str, Any], make_user: Any) -> None:
    newcomer = make_user("newcomer")
    added = services.topic_member_add(by=club["member"], name="club", user_ref="newcomer")
    assert added.user == newcomer and added.channel == club["channel"]
    assert members_of(club["channel"]) == {club["owner"].pk, club["member"].pk, newcomer.pk}
    assert channel_readable(user=newcomer, name=club["channel"].parsed) == club["channel"]


def test_non_member_cannot_add(club: dict[str, Any]) -> None:
    with pytest.raises(Forbidden):
        services.topic_member_add(by=club["other"], name="club", user_ref=club["other"].pk)
    assert club["other"].pk not in members_of(club["channel"])


def test_add_already_member_is_conflict(club: dict[str, Any]) -> None:
    with pytest.raises(Conflict):
        services.topic_member_add(by=club["owner"], name="club", user_ref="member")
    assert len(members_of(club["channel"])) == 2


def test_add_unknown_user_or_topic_is_not_found(club: dict[str, Any]) -> None:
    with pytest.raises(NotFound):
        services.topic_member_add(by=club["owner"], name="club", user_ref="ghost")
    with pytest.raises(NotFound):
        services.topic_member_add(by=club["owner"], name="nosuch", user_ref="other")


def test_members_of_public_topic_is_bad_request(club: dict[str, Any], topic: Channel) -> None:
    with pytest.raises(BadRequest):
        services.topic_member_add(by=club["owner"], name="general", user_ref="other")
    with pytest.raises(BadRequest):
        services.topic_member_remove(by=club["owner"], name="general", user_ref="other")
    assert not ChannelMember.objects.filter(channel=topic).exists()


def test_creator_removes_anyone(club: dict[str, Any], django_capture_on_commit_callbacks: Any) -> None:
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.topic_member_remove(by=club["owner"], name="club", user_ref="member")
    assert members_of(club["channel"]) == {club["owner"].pk}
    assert len(callbacks) == 1  # the removed user's sessions get told after commit
    with pytest.raises(Forbidden):
        channel_readable(user=club["member"], name=club["channel"].parsed)


def test_member_removes_self(club: dict[str, Any]) -> None:
    services.topic_member_remove(by=club["member"], name="club", user_ref=club["member"].pk)
    assert members_of(club["channel"]) == {club["owner"].pk}


def test_non_creator_removing_other_is_forbidden(club: dict[str, Any]) -> None:
    with pytest.raises(Forbidden):
        services.topic_member_remove(by=club["member"], name="club", user_ref="owner")
    assert members_of(club["channel"]) == {club["owner"].pk, club["member"].pk}


def test_non_member_cannot_remove(club: dict[str, Any]) -> None:
    with pytest.raises(Forbidden):
        services.topic_member_remove(by=club["other"], name="club", user_ref="member")
    assert len(members_of(club["channel"])) == 2


def test_remove_not_a_member_is_not_found(club: dict[str, Any]) -> None:
    with pytest.raises(NotFound):
        services.topic_member_remove(by=club["owner"], name="club", user_ref="other")
    with pytest.raises(NotFound):
        services.topic_member_remove(by=club["owner"], name="nosuch", user_ref="member")
    assert len(members_of(club["channel"])) == 2


def test_parsed_names_match_rows(club: dict[str, Any]) -> None:
    assert club["channel"].parsed == parse_channel("topic:club")
    assert club["channel"].topic_name == "club"
