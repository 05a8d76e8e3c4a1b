"""Delivery and read cursors, receipt targets and `sync` (messaging/cursors.py), on PostgreSQL."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import pytest
from django.db import connection, transaction

from messaging import cursors, editing, services
from messaging.channels import dm_channel, parse_channel, topic_channel, user_group
from messaging.errors import Forbidden, NotFound
from messaging.models import Channel, ChannelCursor
from tests.builders import direct, publish

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]


def channel(name: str) -> Channel:
    return Channel.objects.get(name=name)


def cursor_of(user: Any, name: str) -> tuple[int, int]:
    row = ChannelCursor.objects.get(user=user, channel__name=name)
    return row.delivered_seq, row.read_seq


def by_channel(user: Any) -> dict[str, dict[str, Any]]:
    return {entry["channel"]: entry for entry in cursors.channels_sync(user=user)}


# --- cursor_move: forward only, clamped, read implies delivered ---------------------


def test_read_never_moves_back(ann: Any, bob: Any) -> None:
    publish(ann, "room", *(f"m{i}" for i in range(1, 7)))
    room = channel("topic:room")
    first = cursors.cursor_move(user=bob, channel=room, read=5)
    assert (first.read_before, first.read, first.moved) == (0, 5, True)
    again = cursors.cursor_move(user=bob, channel=room, read=3)
    assert (again.read_before, again.read, again.delivered, again.moved) == (5, 5, 5, False)
    assert cursor_of(bob, "topic:room") == (5, 5)


def test_received_never_moves_back_and_is_clamped_to_last_seq(ann: Any, bob: Any) -> None:
    publish(ann, "room", "m1", "m2", "m3", "m4")
    room = channel("topic:room")
    move = cursors.cursor_move(user=bob, channel=room, delivered=10)
    assert (move.delivered, move.read) == (4, 0)
    assert cursors.cursor_move(user=bob, channel=room, delivered=2).moved is False
    read = cursors.cursor_move(user=bob, channel=room, read=99)
    assert (read.delivered, read.read) == (4, 4)
    assert cursor_of(bob, "topic:room") == (4, 4)


def test_read_implies_delivered(ann: Any, bob: Any) -> None:
    publish(ann, "room", *(f"m{i}" for i in range(1, 7)))
    room = channel("topic:room")
    cursors.cursor_move(user=bob, channel=room, delivered=2)
    move = cursors.cursor_move(user=bob, channel=room, read=4)
    assert (move.delivered_before, move.delivered, move.read) == (2, 4, 4)
    # Delivered stays ahead of (or equal to) read; a lower `received` changes nothing.
    assert cursors.cursor_move(user=bob, channel=room, delivered=3).moved is False
    ahead = cursors.cursor_move(user=bob, channel=room, delivered=6)
    assert (ahead.delivered, ahead.read) == (6, 4)
    assert cursor_of(bob, "topic:room") == (6, 4)


def test_cursors_belong_to_the_user_and_channel(ann: Any, bob: Any, carol: Any) -> None:
    publish(ann, "room", "m1", "m2", "m3")
    publish(ann, "other", "m1", "m2", "m3")
    cursors.cursor_move(user=bob, channel=channel("topic:room"), read=3)
    cursors.cursor_move(user=carol, channel=channel("topic:room"), delivered=1)
    assert cursor_of(bob, "topic:room") == (3, 3)
    assert cursor_of(carol, "topic:room") == (1, 0)
    assert not ChannelCursor.objects.filter(user=bob, channel__name="topic:other").exists()


@pytest.mark.django_db(transaction=True)
def test_concurrent_reads_from_two_devices_end_at_the_max_with_one_row(ann: Any, bob: Any) -> None:
    """Two devices send `read` at once: half the rounds race to create the row,
    the other half update an existing one (subscribed before)."""
    rounds = 8
    rooms = []
    for i in range(rounds):
        room = services.topic_create(user=ann, name=f"race{i}")
        Channel.objects.filter(pk=room.pk).update(last_seq=100)
        if i % 2:
            cursors.cursor_join(user=bob, channel=room)
        rooms.append(room)
    errors: list[BaseException] = []

    def device(room: Channel, target: int, start: threading.Barrier) -> None:
        try:
            start.wait(timeout=10)
            cursors.cursor_move(user=bob, channel=room, read=target)
        except BaseException as exc:  # noqa: BLE001 -- asserted below
            errors.append(exc)
        finally:
            connection.close()  # each thread has its own connection

    for room in rooms:
        start = threading.Barrier(2)
        threads = [threading.Thread(target=device, args=(room, target, start)) for target in (40, 70)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    for room in rooms:
        rows = list(ChannelCursor.objects.filter(user=bob, channel=room).values_list("delivered_seq", "read_seq"))
        assert rows == [(70, 70)], room.name


# --- receipt_targets ------------------------------------------------------------------


def test_dm_receipt_goes_to_the_other_member(ann: Any, bob: Any) -> None:
    direct(ann, bob, "one", "two")
    dm = channel(str(dm_channel(ann.pk, bob.pk)))
    move = cursors.cursor_move(user=bob, channel=dm, delivered=2)
    assert cursors.receipt_targets(user=bob, channel=dm, move=move) == [
        (
            user_group(ann.pk),
            {"type": "receipt", "channel": dm.name, "user": {"id": bob.pk, "username": "bob"}, "delivered_seq": 2},
        )
    ]
    move = cursors.cursor_move(user=bob, channel=dm, read=2)
    [(group, frame)] = cursors.receipt_targets(user=bob, channel=dm, move=move)
    assert group == user_group(ann.pk)
    assert frame["read_seq"] == 2 and "delivered_seq" not in frame  # delivered did not move


def test_dm_receipt_even_when_the_covered_messages_are_the_readers_own(ann: Any, bob: Any) -> None:
    direct(bob, ann, "from bob")
    dm = channel(str(dm_channel(ann.pk, bob.pk)))
    move = cursors.cursor_move(user=bob, channel=dm, read=1)
    assert [group for group, _ in cursors.receipt_targets(user=bob, channel=dm, move=move)] == [user_group(ann.pk)]


def test_no_receipt_when_nothing_moved(ann: Any, bob: Any) -> None:
    direct(ann, bob, "one")
    dm = channel(str(dm_channel(ann.pk, bob.pk)))
    cursors.cursor_move(user=bob, channel=dm, read=1)
    move = cursors.cursor_move(user=bob, channel=dm, read=1)
    assert move.moved is False
    assert cursors.receipt_targets(user=bob, channel=dm, move=move) == []


def test_topic_receipts_go_to_authors_of_covered_messages(ann: Any, bob: Any, carol: Any, make_user: Any) -> None:
    dave = make_user("dave")
    publish(ann, "room", "a1", "a2")  # seq 1, 2
    publish(carol, "room", "c3")  # seq 3
    publish(bob, "room", "b4")  # seq 4, the reader's own
    room = channel("topic:room")

    move = cursors.cursor_move(user=dave, channel=room, read=2)
    assert [g for g, _ in cursors.receipt_targets(user=dave, channel=room, move=move)] == [user_group(ann.pk)]

    move = cursors.cursor_move(user=dave, channel=room, read=3)
    [(group, frame)] = cursors.receipt_targets(user=dave, channel=room, move=move)
    assert group == user_group(carol.pk)  # ann's messages were covered by the earlier move
    assert frame == {
        "type": "receipt",
        "channel": "topic:room",
        "user": {"id": dave.pk, "username": "dave"},
        "delivered_seq": 3,
        "read_seq": 3,
    }

    # The reader's own message covers nobody.
    move = cursors.cursor_move(user=bob, channel=room, read=4)
    targets = cursors.receipt_targets(user=bob, channel=room, move=move)
    assert sorted(g for g, _ in targets) == sorted([user_group(ann.pk), user_group(carol.pk)])


def test_topic_read_receipt_only_for_messages_the_read_move_covers(ann: Any, carol: Any, make_user: Any) -> None:
    """Delivered ran ahead to 3; reading up to 1 covers ann's message only, not carol's."""
    dave = make_user("dave")
    publish(ann, "room", "a1")
    publish(carol, "room", "c2", "c3")
    room = channel("topic:room")
    cursors.cursor_move(user=dave, channel=room, delivered=3)
    move = cursors.cursor_move(user=dave, channel=room, read=1)
    targets = cursors.receipt_targets(user=dave, channel=room, move=move)
    assert targets == [
        (
            user_group(ann.pk),
            {"type": "receipt", "channel": "topic:room", "user": {"id": dave.pk, "username": "dave"}, "read_seq": 1},
        )
    ]


def test_no_receipts_on_system_and_broadcast(ann: Any, bob: Any, make_user: Any) -> None:
    staff = make_user("boss", is_staff=True)
    services.system_notice_send(user=bob, body="notice")
    services.broadcast_send(sender=staff, body="hello all")
    for name in (f"system:{bob.pk}", "broadcast"):
        ch = channel(name)
        move = cursors.cursor_move(user=bob, channel=ch, read=1)
        assert move.moved
        assert cursors.receipt_targets(user=bob, channel=ch, move=move) == []


# --- cursor_request: authorisation -------------------------------------------------


def test_cursor_request_on_another_pairs_dm_is_forbidden(ann: Any, bob: Any, carol: Any) -> None:
    direct(ann, bob, "private")
    with pytest.raises(Forbidden):
        cursors.cursor_request(user=carol, name=dm_channel(ann.pk, bob.pk), read=1)
    assert not ChannelCursor.objects.filter(user=carol).exists()


def test_cursor_request_on_a_missing_topic_is_not_found(bob: Any) -> None:
    with pytest.raises(NotFound):
        cursors.cursor_request(user=bob, name=topic_channel("nowhere"), delivered=1)
    assert not Channel.objects.filter(name="topic:nowhere").exists()


def test_cursor_request_on_a_private_topic_of_others_is_forbidden(ann: Any, bob: Any) -> None:
    services.topic_create(user=ann, name="secret", private=True)
    publish(ann, "secret", "s1")
    with pytest.raises(Forbidden):
        cursors.cursor_request(user=bob, name=topic_channel("secret"), read=1)


def test_cursor_request_on_a_dm_without_messages_moves_nothing(ann: Any, bob: Any) -> None:
    move, targets = cursors.cursor_request(user=bob, name=dm_channel(ann.pk, bob.pk), read=3)
    assert (move.delivered, move.read, move.moved, targets) == (0, 0, False, [])
    assert not Channel.objects.filter(kind="direct").exists()


def test_cursor_request_moves_and_names_receipt_targets(ann: Any, bob: Any) -> None:
    direct(ann, bob, "one", "two", "three")
    move, targets = cursors.cursor_request(user=bob, name=dm_channel(ann.pk, bob.pk), read=2)
    assert (move.delivered, move.read) == (2, 2)
    assert [(g, f["read_seq"], f["delivered_seq"]) for g, f in targets] == [(user_group(ann.pk), 2, 2)]


# --- channels_sync -------------------------------------------------------------------


def test_unread_counts_other_users_live_messages_after_read_seq(ann: Any, bob: Any) -> None:
    sent = direct(ann, bob, "a1", "a2", "a3")  # seq 1..3
    direct(bob, ann, "b4")  # bob's own: never unread for bob
    sent += direct(ann, bob, "a5", "a6")  # seq 5, 6
    editing.message_delete(user=ann, message_id=sent[4].pk)  # seq 6 deleted
    name = str(dm_channel(ann.pk, bob.pk))
    assert by_channel(bob)[name] == {"channel": name, "last_seq": 6, "delivered_seq": 0, "read_seq": 0, "unread": 4}
    cursors.cursor_move(user=bob, channel=channel(name), read=2)
    assert by_channel(bob)[name]["unread"] == 2  # seq 3 and 5
    cursors.cursor_move(user=bob, channel=channel(name), read=6)
    assert by_channel(bob)[name] == {"channel": name, "last_seq": 6, "delivered_seq": 6, "read_seq": 6, "unread": 0}
    # ann's view: only bob's message counts, she read nothing.
    assert by_channel(ann)[name]["unread"] == 1


def test_system_notices_count_as_unread(bob: Any) -> None:
    services.system_notice_send(user=bob, body="one")
    services.system_notice_send(user=bob, body="two")
    entry = by_channel(bob)[f"system:{bob.pk}"]
    assert (entry["last_seq"], entry["unread"]) == (2, 2)
    cursors.cursor_move(user=bob, channel=channel(f"system:{bob.pk}"), read=1)
    assert by_channel(bob)[f"system:{bob.pk}"]["unread"] == 1


def test_sync_lists_the_users_channels_and_no_one_elses(ann: Any, bob: Any, carol: Any, make_user: Any) -> None:
    staff = make_user("boss", is_staff=True)
    direct(ann, bob, "ann-bob")
    direct(carol, ann, "carol-ann")  # ann and carol: not bob's
    services.system_notice_send(user=bob, body="for bob")
    services.system_notice_send(user=ann, body="for ann")
    publish(ann, "public-seen", "p1")
    publish(ann, "public-unseen", "p1")
    services.topic_create(user=ann, name="club", private=True)
    services.topic_member_add(by=ann, name="club", user_ref=bob.pk)
    services.topic_create(user=ann, name="hidden", private=True)
    publish(ann, "hidden", "h1")
    cursors.cursor_join(user=bob, channel=channel("topic:public-seen"))  # what subscribe does

    expected = {str(dm_channel(ann.pk, bob.pk)), f"system:{bob.pk}", "topic:public-seen", "topic:club"}
    assert set(by_channel(bob)) == expected
    # broadcast is listed once it exists.
    services.broadcast_send(sender=staff, body="hello all")
    listing = cursors.channels_sync(user=bob)
    assert [e["channel"] for e in listing] == sorted(expected | {"broadcast"})
    assert by_channel(bob)["broadcast"]["unread"] == 1
    assert by_channel(bob)["topic:public-seen"] == {
        "channel": "topic:public-seen",
        "last_seq": 1,
        "delivered_seq": 0,
        "read_seq": 0,
        "unread": 1,
    }


def test_sync_drops_a_private_topic_the_user_was_removed_from(ann: Any, bob: Any) -> None:
    """A subscribed member (cursor row) removed from a private topic no longer sees it."""
    services.topic_create(user=ann, name="club", private=True)
    services.topic_member_add(by=ann, name="club", user_ref=bob.pk)
    cursors.cursor_join(user=bob, channel=channel("topic:club"))
    publish(ann, "club", "still secret")
    assert "topic:club" in by_channel(bob)
    services.topic_member_remove(by=ann, name="club", user_ref=bob.pk)
    assert "topic:club" not in by_channel(bob)
    assert "topic:club" in by_channel(ann)


def test_subscribing_creates_the_cursor_row_that_lists_a_topic(ann: Any, bob: Any) -> None:
    publish(ann, "news", "n1", "n2")
    assert "topic:news" not in by_channel(bob)
    cursors.cursor_join(user=bob, channel=channel("topic:news"))
    cursors.cursor_join(user=bob, channel=channel("topic:news"))  # idempotent
    assert ChannelCursor.objects.filter(user=bob, channel__name="topic:news").count() == 1
    assert by_channel(bob)["topic:news"]["unread"] == 2


def test_sync_is_one_query(ann: Any, bob: Any, carol: Any, make_user: Any, django_assert_num_queries: Any) -> None:
    staff = make_user("boss", is_staff=True)
    direct(ann, bob, "1", "2")
    direct(carol, bob, "3")
    services.system_notice_send(user=bob, body="n")
    services.broadcast_send(sender=staff, body="b")
    for topic in ("t1", "t2", "t3"):
        publish(ann, topic, "x", "y")
        cursors.cursor_join(user=bob, channel=channel(f"topic:{topic}"))
    services.topic_create(user=ann, name="club", private=True)
    services.topic_member_add(by=ann, name="club", user_ref=bob.pk)
    cursors.cursor_move(user=bob, channel=channel("topic:t1"), read=1)
    with django_assert_num_queries(1):
        listing = cursors.channels_sync(user=bob)
    assert len(listing) == 8
    assert {e["channel"]: e["unread"] for e in listing}["topic:t1"] == 1


def test_sync_of_a_new_user_is_empty(make_user: Any) -> None:
    assert cursors.channels_sync(user=make_user()) == []


def test_parse_round_trip_of_listed_names(ann: Any, bob: Any) -> None:
    """Every listed name is a valid wire name (clients send them back in `read`)."""
    direct(ann, bob, "x")
    services.system_notice_send(user=bob, body="y")
    for entry in cursors.channels_sync(user=bob):
        assert str(parse_channel(entry["channel"])) == entry["channel"]


# --- cursor_requests: the batch of a process -------------------------------------------


def ask(user: Any, name: Any, **seqs: int) -> cursors.CursorAsk:
    return cursors.CursorAsk(user, parse_channel(name) if isinstance(name, str) else name, **seqs)


def same_topic_twice(ann: Any, carol: Any, bob: Any) -> None:
    """topic:one and topic:two with the same authors at the same seqs."""
    for topic in ("one", "two"):
        publish(ann, topic, "a1", "a2")
        publish(carol, topic, "c3", "c4")
        publish(bob, topic, "b5")
        publish(ann, topic, "a6")


def test_a_batch_answers_as_the_one_by_one_path_does(ann: Any, bob: Any, carol: Any, make_user: Any) -> None:
    """The same requests, one by one on topic:one and as batches on topic:two:
    the same cursors, answers and receipts."""
    dave = make_user("dave")
    same_topic_twice(ann, carol, bob)
    rounds = [
        [(dave, {"delivered": 3}), (bob, {"read": 2}), (carol, {"delivered": 99})],
        [(dave, {"read": 1}), (bob, {"delivered": 1}), (carol, {"read": 4, "delivered": 6})],
        [(dave, {"read": 5, "delivered": 2}), (bob, {"read": 6}), (carol, {"delivered": 0})],
        [(dave, {"read": 4}), (bob, {"read": 9}), (carol, {"read": 6})],
    ]
    for requests in rounds:
        one_by_one = [cursors.cursor_request(user=u, name=topic_channel("one"), **s) for u, s in requests]
        batched = cursors.cursor_requests([ask(u, "topic:two", **s) for u, s in requests])
        for (move1, targets1), (move2, targets2) in zip(one_by_one, batched, strict=True):
            assert (move1.channel, move2.channel) == ("topic:one", "topic:two")
            assert dataclasses.replace(move1, channel="") == dataclasses.replace(move2, channel="")
            assert [(g, {**f, "channel": ""}) for g, f in targets1] == [(g, {**f, "channel": ""}) for g, f in targets2]
    for user in (dave, bob, carol):
        assert cursor_of(user, "topic:one") == cursor_of(user, "topic:two")
    assert cursor_of(dave, "topic:two") == (5, 5)
    assert cursor_of(carol, "topic:two") == (6, 6)


def test_a_batch_moves_dm_cursors_and_names_the_other_member(ann: Any, bob: Any, carol: Any) -> None:
    direct(ann, bob, "one", "two", "three")
    direct(carol, bob, "hi")
    ab, bc = str(dm_channel(ann.pk, bob.pk)), str(dm_channel(bob.pk, carol.pk))
    outcomes = cursors.cursor_requests([ask(bob, ab, delivered=3), ask(bob, bc, read=1), ask(ann, ab, read=3)])
    (m1, t1), (m2, t2), (m3, t3) = outcomes
    assert (m1.delivered, m1.read, m2.delivered, m2.read, m3.delivered, m3.read) == (3, 0, 1, 1, 3, 3)
    assert t1 == [(user_group(ann.pk), {"type": "receipt", "channel": ab, "user": ref(bob), "delivered_seq": 3})]
    assert t2 == [
        (user_group(carol.pk), {"type": "receipt", "channel": bc, "user": ref(bob), "delivered_seq": 1, "read_seq": 1})
    ]
    assert t3 == [
        (user_group(bob.pk), {"type": "receipt", "channel": ab, "user": ref(ann), "delivered_seq": 3, "read_seq": 3})
    ]
    assert (cursor_of(bob, ab), cursor_of(bob, bc), cursor_of(ann, ab)) == ((3, 0), (1, 1), (3, 3))


def ref(user: Any) -> dict[str, Any]:
    return {"id": user.pk, "username": user.username}


def test_errors_in_a_batch_reach_only_their_request(ann: Any, bob: Any, carol: Any) -> None:
    direct(ann, bob, "private")
    services.topic_create(user=ann, name="secret", private=True)
    publish(ann, "secret", "s1")
    publish(ann, "room", "r1", "r2")
    ab = str(dm_channel(ann.pk, bob.pk))
    outcomes = cursors.cursor_requests(
        [
            ask(carol, ab, read=1),  # another pair's DM
            ask(bob, "topic:room", read=2),
            ask(bob, "topic:nowhere", delivered=1),  # missing topic
            ask(bob, "topic:secret", read=1),  # a private topic of others
            ask(ann, "topic:secret", read=1),  # its member
            ask(carol, str(dm_channel(ann.pk, carol.pk)), read=3),  # a DM with no message yet
            ask(bob, ab, delivered=1),
        ]
    )
    forbidden, room, missing, secret, own_secret, empty_dm, dm = outcomes
    assert isinstance(forbidden, Forbidden) and forbidden.code == "forbidden"
    assert isinstance(missing, NotFound) and missing.code == "not_found"
    assert isinstance(secret, Forbidden)
    assert (room[0].read, own_secret[0].read, dm[0].delivered) == (2, 1, 1)
    assert (empty_dm[0].moved, empty_dm[1]) == (False, [])
    assert cursor_of(bob, "topic:room") == (2, 2) and cursor_of(bob, ab) == (1, 0)
    assert not ChannelCursor.objects.filter(user=carol).exists()
    assert not Channel.objects.filter(name="topic:nowhere").exists()
    assert not ChannelCursor.objects.filter(user=bob, channel__name="topic:secret").exists()


def test_authorising_a_batch_takes_two_queries(ann: Any, bob: Any, carol: Any, make_user: Any) -> None:
    from django.test.utils import CaptureQueriesContext

    from messaging.selectors import channels_readable

    services.topic_create(user=ann, name="secret", private=True)
    services.topic_create(user=carol, name="hidden", private=True)
    publish(ann, "room", "r1")
    direct(ann, bob, "hi")
    users = [make_user(f"u{i}") for i in range(5)]
    asks = [(u, topic_channel(t)) for u in users for t in ("secret", "hidden", "room")]
    asks += [(ann, topic_channel("secret")), (carol, topic_channel("hidden")), (bob, dm_channel(ann.pk, bob.pk))]
    with CaptureQueriesContext(connection) as queries:
        outcomes = channels_readable(asks=asks)
    assert len(queries) == 2
    assert [type(o).__name__ for o in outcomes[:3]] == ["Forbidden", "Forbidden", "Channel"]
    assert [type(o).__name__ for o in outcomes[-3:]] == ["Channel", "Channel", "Channel"]


def test_requests_of_one_cursor_in_a_batch_end_at_the_max(ann: Any, bob: Any, carol: Any) -> None:
    """Two devices of bob in one batch: one move (at the max), one receipt, both
    answers carry the cursor after it."""
    publish(ann, "room", "a1", "a2")
    publish(carol, "room", "c3", "c4")
    outcomes = cursors.cursor_requests(
        [ask(bob, "topic:room", delivered=4), ask(bob, "topic:room", read=2), ask(bob, "topic:room", delivered=1)]
    )
    assert [(m.delivered_before, m.delivered, m.read_before, m.read) for m, _ in outcomes] == [(0, 4, 0, 2)] * 3
    receipts = [targets for _, targets in outcomes]
    assert receipts[1:] == [[], []]
    assert sorted(g for g, _ in receipts[0]) == sorted([user_group(ann.pk), user_group(carol.pk)])
    assert {f["delivered_seq"] for _, f in receipts[0]} == {4} and {f["read_seq"] for _, f in receipts[0]} == {2}
    assert cursor_of(bob, "topic:room") == (4, 2)


def test_a_batch_writes_only_cursors_that_move(ann: Any, bob: Any, carol: Any) -> None:
    publish(ann, "room", "a1", "a2")
    cursors.cursor_move(user=bob, channel=channel("topic:room"), read=2)
    before = ChannelCursor.objects.get(user=bob).updated_at
    [(still, targets), (moved, _)] = cursors.cursor_requests(
        [ask(bob, "topic:room", delivered=1, read=2), ask(carol, "topic:room", delivered=2)]
    )
    assert (still.moved, targets) == (False, [])
    assert (still.delivered, still.read, still.last_seq) == (2, 2, 2)
    assert (moved.delivered_before, moved.delivered, moved.read) == (0, 2, 0)
    assert ChannelCursor.objects.get(user=bob).updated_at == before
    assert cursor_of(carol, "topic:room") == (2, 0)


def test_the_per_request_path_of_other_databases_answers_the_same(
    ann: Any, bob: Any, carol: Any, monkeypatch: Any
) -> None:
    """SQLite (the embedded default) moves each request with cursor_move; run
    that branch on PostgreSQL against the batched one."""
    same_topic_twice(ann, carol, bob)
    requests = [(bob, {"read": 3}), (carol, {"delivered": 5}), (bob, {"delivered": 6}), (carol, {"read": 9})]
    batched = cursors.cursor_requests([ask(u, "topic:one", **s) for u, s in requests[:2]])
    batched += cursors.cursor_requests([ask(u, "topic:one", **s) for u, s in requests[2:]])
    monkeypatch.setattr(connection, "vendor", "sqlite")
    each = cursors.cursor_requests([ask(u, "topic:two", **s) for u, s in requests[:2]])
    each += cursors.cursor_requests([ask(u, "topic:two", **s) for u, s in requests[2:]])
    monkeypatch.undo()
    for (move1, targets1), (move2, targets2) in zip(batched, each, strict=True):
        assert dataclasses.replace(move1, channel="") == dataclasses.replace(move2, channel="")
        assert [g for g, _ in targets1] == [g for g, _ in targets2]
    assert cursor_of(bob, "topic:one") == cursor_of(bob, "topic:two") == (6, 3)
    assert cursor_of(carol, "topic:one") == cursor_of(carol, "topic:two") == (6, 6)


@pytest.mark.django_db(transaction=True)
def test_concurrent_batches_moving_one_cursor_end_at_the_max(ann: Any, bob: Any, carol: Any) -> None:
    """Two processes' batches at once, each moving bob's and carol's cursors of
    several topics (in opposite orders): no deadlock, every cursor at the max,
    one row each; half the topics race to create the rows."""
    rounds = 6
    rooms = []
    for i in range(rounds):
        room = services.topic_create(user=ann, name=f"race{i}")
        Channel.objects.filter(pk=room.pk).update(last_seq=100)
        if i % 2:
            cursors.cursor_join(user=bob, channel=room)
        rooms.append(room)
    errors: list[BaseException] = []
    results: list[Any] = []

    def process(asks: list[cursors.CursorAsk], start: threading.Barrier) -> None:
        try:
            start.wait(timeout=10)
            results.append(cursors.cursor_requests(asks))
        except BaseException as exc:  # noqa: BLE001 -- asserted below
            errors.append(exc)
        finally:
            connection.close()  # each thread has its own connection

    for _ in range(3):
        start = threading.Barrier(2)
        first = [ask(u, r.name, read=40) for r in rooms for u in (bob, carol)]
        second = [ask(u, r.name, delivered=70, read=30) for r in rooms for u in (carol, bob)]
        threads = [threading.Thread(target=process, args=(asks, start)) for asks in (first, second[::-1])]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert all(not isinstance(o, BaseException) for batch in results for o in batch)
    for room in rooms:
        for user in (bob, carol):
            rows = list(ChannelCursor.objects.filter(user=user, channel=room).values_list("delivered_seq", "read_seq"))
            assert rows == [(70, 40)], (room.name, user.username)


@pytest.mark.django_db(transaction=True)
def test_a_batch_aborted_by_a_deadlock_runs_again(ann: Any, bob: Any) -> None:
    """Another transaction holds bob's cursor of topic:b and then wants the one
    of topic:a that the batch locked first: PostgreSQL aborts the batch (it
    waited first), which runs again once the other commits."""
    publish(ann, "a", "a1", "a2")
    publish(ann, "b", "b1", "b2")
    for name in ("topic:a", "topic:b"):
        cursors.cursor_move(user=bob, channel=channel(name), delivered=1)
    row_a, row_b = (ChannelCursor.objects.get(user=bob, channel__name=n).pk for n in ("topic:a", "topic:b"))
    deadlocks = database_deadlocks()
    holding, errors, outcome = threading.Event(), [], []

    def other() -> None:
        try:
            with transaction.atomic():
                ChannelCursor.objects.select_for_update().get(pk=row_b)
                holding.set()
                wait_for_a_lock_wait()  # the batch holds topic:a and waits for topic:b
                ChannelCursor.objects.select_for_update().get(pk=row_a)
        except BaseException as exc:  # noqa: BLE001 -- asserted below
            errors.append(exc)
        finally:
            holding.set()
            connection.close()

    def batch() -> None:
        try:
            holding.wait(timeout=30)
            outcome.extend(cursors.cursor_requests([ask(bob, "topic:a", read=2), ask(bob, "topic:b", read=2)]))
        except BaseException as exc:  # noqa: BLE001 -- asserted below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=other), threading.Thread(target=batch)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert [(m.delivered_before, m.read) for m, _ in outcome] == [(1, 2), (1, 2)]
    assert cursor_of(bob, "topic:a") == cursor_of(bob, "topic:b") == (2, 2)
    assert database_deadlocks() == deadlocks + 1


def database_deadlocks() -> int:
    with connection.cursor() as cur:
        cur.execute("SELECT pg_stat_clear_snapshot()")
        cur.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        return cur.fetchone()[0]


def wait_for_a_lock_wait() -> None:
    """Until another backend of this database waits for a row lock."""
    with connection.cursor() as cur:
        for _ in range(3000):
            cur.execute("SELECT pg_stat_clear_snapshot()")  # else one view per transaction
            cur.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
            )
            if cur.fetchone()[0]:
                return
            threading.Event().wait(0.01)
    raise AssertionError("the batch never waited for the lock")
