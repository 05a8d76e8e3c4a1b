"""`services.messages_send`: many sessions' sends stored in one transaction (real PostgreSQL)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import DataError, connection
from django.test.utils import CaptureQueriesContext

from messaging import services
from messaging.channels import BROADCAST, ChannelName, Kind, dm_channel, parse_channel, system_channel
from messaging.errors import BadRequest, Forbidden, NotFound, TooLarge
from messaging.models import Channel, Message
from messaging.services import SendRequest, messages_send

from .test_seq_concurrency import run_threads

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _cheap_passwords(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def seqs(name: ChannelName) -> list[int]:
    return list(Message.objects.filter(channel__name=str(name)).order_by("seq").values_list("seq", flat=True))


def test_a_batch_takes_contiguous_seqs_per_channel_in_request_order(make_user: Any) -> None:
    ann, bob, carol = make_user(), make_user(), make_user()
    services.topic_create(user=ann, name="room")
    room = parse_channel("topic:room")
    requests = [
        SendRequest(ann, "a1", to=bob.pk),
        SendRequest(bob, "r1", name=room),
        SendRequest(bob, "a2", to=ann.username),
        SendRequest(carol, "r2", name=room),
        SendRequest(ann, "c1", to=carol.pk),
        SendRequest(ann, "r3", name=room),
    ]
    outcomes = messages_send(requests)
    assert all(created for _, created in outcomes)
    got = [(m.channel.name, m.seq, m.body) for m, _ in outcomes]
    ab, ac = str(dm_channel(ann.pk, bob.pk)), str(dm_channel(ann.pk, carol.pk))
    assert got == [
        (ab, 1, "a1"),
        ("topic:room", 1, "r1"),
        (ab, 2, "a2"),
        ("topic:room", 2, "r2"),
        (ac, 1, "c1"),
        ("topic:room", 3, "r3"),
    ]
    assert seqs(room) == [1, 2, 3]
    assert Channel.objects.get(name="topic:room").last_seq == 3
    assert Channel.objects.get(name=ab).last_seq == 2
    # What the answer and the live event need is loaded without a query.
    with CaptureQueriesContext(connection) as queries:
        frames = [(m.sender.pk, m.channel.kind, m.pk is not None) for m, _ in outcomes]
    assert len(queries) == 0
    assert frames[1] == (bob.pk, "topic", True)


def test_the_queries_of_a_batch_do_not_grow_with_its_size(make_user: Any) -> None:
    senders = [make_user() for _ in range(20)]
    bob = make_user()
    messages_send([SendRequest(s, "first", to=bob.pk) for s in senders])  # the channels exist now

    def queries_for(count: int) -> int:
        with CaptureQueriesContext(connection) as queries:
            outcomes = messages_send(
                [SendRequest(s, "again", client_id=f"c{count}", to=bob.pk) for s in senders[:count]]
            )
        assert all(created for _, created in outcomes)
        return len(queries)

    # recipients, channels, duplicates, then in the transaction: the lock
    # and the seqs of all channels, the re-check, one INSERT.
    assert queries_for(20) == queries_for(2)


def test_each_bad_request_gets_its_own_error_and_the_others_are_stored(make_user: Any, chat_settings: Any) -> None:
    chat_settings(MAX_BODY_BYTES=10, TOPIC_AUTOCREATE=False)
    ann, bob = make_user(), make_user()
    carol = make_user()
    services.topic_create(user=carol, name="secret", private=True)
    requests = [
        SendRequest(ann, "ok 1", to=bob.pk),
        SendRequest(ann, "to nobody", to="nobody"),  # unknown recipient
        SendRequest(ann, "", to=bob.pk),  # empty body
        SendRequest(ann, "x" * 11, to=bob.pk),  # too large
        SendRequest(ann, "bad id", client_id="x" * 65, to=bob.pk),
        SendRequest(ann, "not mine", name=parse_channel("topic:secret")),  # private, not a member
        SendRequest(ann, "system", name=system_channel(ann.pk)),
        SendRequest(ann, "all", name=BROADCAST),  # not staff
        SendRequest(ann, "no topic", name=parse_channel("topic:missing")),
        SendRequest(ann, "own dm", name=dm_channel(ann.pk, bob.pk)),  # publish to a dm: misuse
        SendRequest(ann, "their dm", name=dm_channel(bob.pk, carol.pk)),
        SendRequest(ann, "ok 2", to=bob.username),
    ]
    outcomes = messages_send(requests)
    kinds = [type(o) if isinstance(o, Exception) else "stored" for o in outcomes]
    assert kinds == [
        "stored",
        NotFound,
        BadRequest,
        TooLarge,
        BadRequest,
        Forbidden,
        Forbidden,
        Forbidden,
        NotFound,
        BadRequest,
        Forbidden,
        "stored",
    ]
    assert [(m.body, m.seq) for m, _ in (outcomes[0], outcomes[-1])] == [("ok 1", 1), ("ok 2", 2)]
    assert seqs(dm_channel(ann.pk, bob.pk)) == [1, 2]
    assert not Channel.objects.filter(name__in=["topic:missing", str(dm_channel(bob.pk, carol.pk))]).exists()


def test_a_duplicate_client_id_inside_one_batch_is_stored_once(make_user: Any) -> None:
    ann, bob = make_user(), make_user()
    outcomes = messages_send(
        [
            SendRequest(ann, "first", client_id="same", to=bob.pk),
            SendRequest(ann, "other", client_id="another", to=bob.pk),
            SendRequest(ann, "retry", client_id="same", to=bob.pk),
            SendRequest(bob, "bob's own", client_id="same", to=ann.pk),  # another sender: its own id space
        ]
    )
    (first, c1), (other, c2), (retry, c3), (bobs, c4) = outcomes
    assert (c1, c2, c3, c4) == (True, True, False, True)
    assert retry.pk == first.pk and retry.body == "first"
    assert [first.seq, other.seq, bobs.seq] == [1, 2, 3]
    assert seqs(dm_channel(ann.pk, bob.pk)) == [1, 2, 3]
    assert Channel.objects.get(name=str(dm_channel(ann.pk, bob.pk))).last_seq == 3


def test_a_duplicate_client_id_across_batches_answers_with_the_first(make_user: Any) -> None:
    ann, bob = make_user(), make_user()
    [(first, created)] = messages_send([SendRequest(ann, "first", client_id="once", to=bob.pk)])
    assert created
    [(again, created), (new, created_new)] = messages_send(
        [SendRequest(ann, "again", client_id="once", to=bob.pk), SendRequest(ann, "new", client_id="n", to=bob.pk)]
    )
    assert (again.pk, again.body, created) == (first.pk, "first", False)
    assert (new.seq, created_new) == (2, True)
    assert Channel.objects.get(name=str(dm_channel(ann.pk, bob.pk))).last_seq == 2
    # A batch of retries only: answered from the first look, no transaction.
    with CaptureQueriesContext(connection) as queries:
        [(retry, created)] = messages_send([SendRequest(ann, "x", client_id="once", to=bob.pk)])
    assert (retry.pk, created) == (first.pk, False)
    assert not [q for q in queries if "UPDATE" in q["sql"] or "INSERT" in q["sql"]]


def test_a_failing_item_fails_alone_and_the_batch_is_stored_without_it(make_user: Any) -> None:
    """PostgreSQL refuses a NUL in text: the batch's INSERT fails, each item is then stored alone."""
    ann, bob, carol = make_user(), make_user(), make_user()
    outcomes = messages_send(
        [
            SendRequest(ann, "before", to=bob.pk),
            SendRequest(ann, "nul \x00 inside", to=bob.pk),
            SendRequest(carol, "to bob", to=bob.pk),
            SendRequest(ann, "after", to=bob.pk),
        ]
    )
    assert isinstance(outcomes[1], DataError)
    stored = [outcomes[i][0] for i in (0, 2, 3)]
    assert [(m.body, m.seq) for m in stored] == [("before", 1), ("to bob", 1), ("after", 2)]
    # The failed batch's seqs were rolled back: no gap.
    assert seqs(dm_channel(ann.pk, bob.pk)) == [1, 2]
    assert Channel.objects.get(name=str(dm_channel(ann.pk, bob.pk))).last_seq == 2


def test_a_single_send_raises_its_error(make_user: Any) -> None:
    ann, bob = make_user(), make_user()
    with pytest.raises(NotFound):
        services.direct_send(sender=ann, to=999_999, body="hi")
    with pytest.raises(BadRequest):
        services.direct_send(sender=ann, to=ann.pk, body="to myself")
    with pytest.raises(DataError):
        services.direct_send(sender=ann, to=bob.pk, body="\x00")
    assert not Message.objects.exists()


def test_a_channel_deleted_under_a_batch_is_not_found(make_user: Any) -> None:
    ann, bob = make_user(), make_user()
    channel = services.channel_ensure(name=dm_channel(ann.pk, bob.pk))
    gone = Channel.objects.get(pk=channel.pk)
    Channel.objects.filter(pk=channel.pk).delete()
    with pytest.raises(NotFound):
        services.message_store(channel=gone, sender=ann, body="late")
    # In a batch over several channels: that item fails alone.
    carol = make_user()
    live = services.channel_ensure(name=dm_channel(ann.pk, carol.pk))
    items = [services._Item(channel=c, sender=ann, body="b", client_id=None) for c in (live, gone, live)]
    first, error, second = services._store_each(items)
    assert isinstance(error, NotFound)
    assert [(m.channel.pk, m.seq) for m, _ in (first, second)] == [(live.pk, 1), (live.pk, 2)]


def test_two_threads_batching_overlapping_channels_do_not_deadlock(make_user: Any) -> None:
    """Each thread's batches touch the same channels in opposite orders; the
    locks are taken in id order, so every batch commits."""
    users = [make_user(is_staff=True) for _ in range(6)]
    names = [parse_channel(f"topic:t{i}") for i in range(6)]
    for name in names:
        services.topic_create(user=users[0], name=name.topic)
    rounds = 15
    outcomes: list[Any] = []
    lock = threading.Lock()

    def send(i: int) -> None:
        order = names if i % 2 == 0 else names[::-1]
        for n in range(rounds):
            batch = [SendRequest(users[i % 6], f"{i}-{n}", name=name) for name in order]
            batch.append(SendRequest(users[i % 6], f"{i}-{n}", name=BROADCAST))
            result = messages_send(batch)
            with lock:
                outcomes.extend(result)

    assert run_threads(send) == []
    assert not [o for o in outcomes if isinstance(o, Exception)]
    threads = 8
    for name in [*names, BROADCAST]:
        assert seqs(name) == list(range(1, threads * rounds + 1))


def test_concurrent_batches_retrying_one_client_id_store_it_once(make_user: Any) -> None:
    """A retry racing the first send in another process's batch waits on the
    channel's row lock and then sees it (the re-check under the locks)."""
    ann, bob = make_user(), make_user()
    others = [make_user() for _ in range(8)]
    found: list[tuple[int, bool]] = []
    lock = threading.Lock()

    def send(i: int) -> None:
        batch = [
            SendRequest(others[i], f"filler {i}", to=bob.pk),
            SendRequest(ann, "once", client_id="race", to=bob.pk),
        ]
        result = messages_send(batch)
        with lock:
            found.append((result[1][0].pk, result[1][1]))

    assert run_threads(send) == []
    assert len({pk for pk, _ in found}) == 1
    assert sum(created for _, created in found) == 1
    assert Message.objects.filter(sender=ann, client_id="race").count() == 1
    assert seqs(dm_channel(ann.pk, bob.pk)) == [1]


def test_the_late_duplicate_check_gives_the_seq_back(make_user: Any) -> None:
    """A client_id stored between the first look and the row lock: the item
    answers with it and the seqs it took are returned, leaving no gap."""
    ann, bob = make_user(), make_user()
    original = services._recent_duplicates
    calls = 0

    def racing_send() -> None:
        try:
            services.direct_send(sender=ann, to=bob.pk, body="first", client_id="k")
        finally:
            connection.close()

    def stored_meanwhile(keys: set[tuple[int, str]]) -> dict[tuple[int, str], Message]:
        nonlocal calls
        calls += 1
        if calls == 1:  # the look before the transaction: the racing send commits right after it
            thread = threading.Thread(target=racing_send)
            thread.start()
            thread.join()
            return {}
        return original(keys)

    services._recent_duplicates = stored_meanwhile
    try:
        outcomes = messages_send(
            [SendRequest(ann, "retry", client_id="k", to=bob.pk), SendRequest(bob, "reply", client_id="k2", to=ann.pk)]
        )
    finally:
        services._recent_duplicates = original
    (retry, created), (reply, created_reply) = outcomes
    assert (retry.body, retry.seq, created) == ("first", 1, False)
    assert (reply.seq, created_reply) == (2, True)
    assert seqs(dm_channel(ann.pk, bob.pk)) == [1, 2]
    assert Channel.objects.get(name=str(dm_channel(ann.pk, bob.pk))).last_seq == 2


def test_broadcast_and_topic_channels_are_created_in_the_batch(make_user: Any, chat_settings: Any) -> None:
    chat_settings(TOPIC_AUTOCREATE=True)
    staff = make_user(is_staff=True)
    outcomes = messages_send(
        [
            SendRequest(staff, "hello all", name=BROADCAST),
            SendRequest(staff, "new room", name=parse_channel("topic:fresh")),
            SendRequest(staff, "again", name=parse_channel("topic:fresh")),
        ]
    )
    assert [(m.channel.name, m.seq, m.channel.kind) for m, _ in outcomes] == [
        ("broadcast", 1, Kind.BROADCAST),
        ("topic:fresh", 1, Kind.TOPIC),
        ("topic:fresh", 2, Kind.TOPIC),
    ]
    assert Channel.objects.get(name="topic:fresh").created_by_id == staff.pk
