"""The session actor's delivery: topics, replay, gap fill, system notices, revocation."""

import asyncio
import time

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import transaction

from messaging import services
from messaging.channels import parse_channel
from messaging.models import Channel, Message
from tests.conftest import recv_messages, ws_session

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_passwords")]


def dm_name(a, b):
    lo, hi = sorted((a.pk, b.pk))
    return f"dm:{lo}:{hi}"


@sync_to_async
def stored(channel: str) -> list[int]:
    return list(Message.objects.filter(channel__name=channel).order_by("seq").values_list("seq", flat=True))


@sync_to_async
def channel_row(name: str) -> Channel | None:
    return Channel.objects.filter(name=name).first()


@sync_to_async
def seed(name: str, count: int, sender) -> None:
    """`count` stored messages m1..mN on a channel, without delivering any."""
    channel = services.channel_ensure(name=parse_channel(name), created_by=sender)
    Message.objects.bulk_create(
        [Message(channel=channel, seq=i, sender=sender, body=f"m{i}") for i in range(1, count + 1)]
    )
    Channel.objects.filter(pk=channel.pk).update(last_seq=count)


@sync_to_async
def store_silently(name: str, sender, body: str) -> int:
    """Store the next message on an existing channel as a send would, but publish nothing."""
    message, created = services.message_store(channel=Channel.objects.get(name=name), sender=sender, body=body)
    assert created
    return message.seq


async def subscribe(session, channel: str, **extra) -> dict:
    ok = await session.request({"type": "subscribe", "channel": channel, **extra})
    assert ok["type"] == "ok", ok
    return ok


# --- topics: creation, events, unsubscribe ------------------------------------------


async def test_subscribe_creates_a_public_topic(auser):
    async with ws_session(await auser()) as s:
        ok = await subscribe(s, "topic:brand-new")
        assert ok["channel"] == "topic:brand-new" and ok["last_seq"] == 0
    row = await channel_row("topic:brand-new")
    assert row is not None and row.kind == "topic" and row.is_private is False


async def test_publish_creates_a_public_topic(auser):
    async with ws_session(await auser()) as s:
        ok = await s.request({"type": "publish", "channel": "topic:fresh.one", "body": "first"})
        assert ok["type"] == "ok"
        msg = ok["message"]
        assert msg["kind"] == "topic" and msg["channel"] == "topic:fresh.one" and msg["seq"] == 1
    row = await channel_row("topic:fresh.one")
    assert row is not None and row.is_private is False and row.last_seq == 1


async def test_no_autocreate_when_turned_off(auser, chat_settings):
    chat_settings(TOPIC_AUTOCREATE=False)
    async with ws_session(await auser()) as s:
        for frame in (
            {"type": "subscribe", "channel": "topic:absent"},
            {"type": "publish", "channel": "topic:absent", "body": "x"},
        ):
            err = await s.request(frame)
            assert err["type"] == "error" and err["code"] == "not_found"
    assert await channel_row("topic:absent") is None


async def test_subscribers_get_events_others_do_not_and_unsubscribe_stops(auser):
    ann, bob, carol = await auser(), await auser(), await auser()
    async with (
        ws_session(ann) as a,
        ws_session(bob) as b,
        ws_session(bob) as b_other,
        ws_session(carol) as c,
    ):
        await subscribe(b, "topic:news")
        ok = await a.request({"type": "publish", "channel": "topic:news", "body": "one"})
        assert (await b.recv()) == ok["message"]
        # Subscriptions belong to the session: bob's other session, carol and
        # the (unsubscribed) publisher get nothing.
        assert await b_other.nothing() and await c.nothing(0.1) and await a.nothing(0.1)

        unsub = await b.request({"type": "unsubscribe", "channel": "topic:news"})
        assert unsub["type"] == "ok" and unsub["channel"] == "topic:news"
        await a.request({"type": "publish", "channel": "topic:news", "body": "two"})
        assert await b.nothing(0.5)

        again = await subscribe(b, "topic:news")
        assert again["last_seq"] == 2
        await a.request({"type": "publish", "channel": "topic:news", "body": "three"})
        ev = await b.recv()
        assert (ev["seq"], ev["body"]) == (3, "three")
        assert await b.nothing()


async def test_subscribe_without_since_replays_nothing(auser):
    ann, bob = await auser(), await auser()
    await seed("topic:quiet", 4, ann)
    async with ws_session(bob) as b:
        ok = await b.request({"type": "subscribe", "channel": "topic:quiet"})
        assert ok["type"] == "ok" and ok["last_seq"] == 4
        assert b.skipped == []
        assert await b.nothing()


async def test_own_publish_is_not_echoed_and_does_not_confuse_order(auser):
    ann, bob = await auser(), await auser()
    async with ws_session(ann) as a, ws_session(bob) as b:
        await subscribe(a, "topic:chat")
        await subscribe(b, "topic:chat")
        mine = await a.request({"type": "publish", "channel": "topic:chat", "body": "from a"})
        assert mine["message"]["seq"] == 1
        theirs = await b.request({"type": "publish", "channel": "topic:chat", "body": "from b"})
        assert theirs["message"]["seq"] == 2
        got_b = b.skipped or await recv_messages(b, 1)
        assert [(m["seq"], m["body"]) for m in got_b] == [(1, "from a")]
        # `a` gets only the other's message, once, not its own again.
        got = a.skipped + await recv_messages(a, 1)
        assert [(m["seq"], m["body"]) for m in got] == [(2, "from b")]
        assert await a.nothing() and await b.nothing(0.1)


@pytest.mark.parametrize("channel", ["broadcast", "dm", "system"])
async def test_unsubscribe_from_auto_channels_is_bad_request(auser, channel):
    ann, bob = await auser(), await auser()
    name = {"broadcast": "broadcast", "dm": dm_name(ann, bob), "system": f"system:{ann.pk}"}[channel]
    async with ws_session(ann) as a:
        err = await a.request({"type": "unsubscribe", "channel": name})
        assert err["type"] == "error" and err["code"] == "bad_request"


async def test_unsubscribe_from_topic_not_subscribed_is_ok(auser):
    async with ws_session(await auser()) as s:
        ok = await s.request({"type": "unsubscribe", "channel": "topic:never"})
        assert ok["type"] == "ok" and ok["channel"] == "topic:never"


# --- private topics and channels one may not write -----------------------------------


async def test_private_topic_is_forbidden_to_non_members(auser):
    ann, bob = await auser(), await auser()
    await sync_to_async(services.topic_create)(user=ann, name="secret", private=True)
    async with ws_session(ann) as a, ws_session(bob) as b:
        for frame in (
            {"type": "subscribe", "channel": "topic:secret"},
            {"type": "subscribe", "channel": "topic:secret", "since": 0},
            {"type": "publish", "channel": "topic:secret", "body": "let me in"},
            {"type": "history", "channel": "topic:secret"},
        ):
            err = await b.request(frame)
            assert err["type"] == "error" and err["code"] == "forbidden", (frame, err)
        # The member is served, and the refused publish took no seq.
        await subscribe(a, "topic:secret")
        ok = await a.request({"type": "publish", "channel": "topic:secret", "body": "members only"})
        assert ok["message"]["seq"] == 1
        assert await b.nothing()
    assert await stored("topic:secret") == [1]


@pytest.mark.parametrize(
    ("target", "code"),
    [
        ("own-system", "forbidden"),  # system: is written by the server only
        ("other-system", "forbidden"),
        ("own-dm", "bad_request"),  # a misuse of publish: DMs go through `direct`
        ("other-dm", "forbidden"),  # a channel ann may not read
    ],
)
async def test_publish_to_non_topic_channel_is_refused(auser, target, code):
    ann, bob, carol = await auser(), await auser(), await auser()
    name = {
        "own-system": f"system:{ann.pk}",
        "other-system": f"system:{bob.pk}",
        "own-dm": dm_name(ann, bob),
        "other-dm": dm_name(bob, carol),
    }[target]
    async with ws_session(ann) as a, ws_session(bob) as b:
        err = await a.request({"type": "publish", "channel": name, "body": "sneaky"})
        assert err["type"] == "error" and err["code"] == code
        assert await b.nothing()
    assert await stored(name) == []


async def test_publish_to_broadcast_by_non_staff_is_forbidden(auser):
    ann, bob = await auser(), await auser()
    async with ws_session(ann) as a, ws_session(bob) as b:
        err = await a.request({"type": "publish", "channel": "broadcast", "body": "hear me"})
        assert err["type"] == "error" and err["code"] == "forbidden"
        assert await b.nothing()
    assert await stored("broadcast") == []


async def test_subscribe_to_another_pairs_dm_is_forbidden(auser):
    ann, bob, carol = await auser(), await auser(), await auser()
    async with ws_session(carol) as c:
        err = await c.request({"type": "subscribe", "channel": dm_name(ann, bob), "since": 0})
        assert err["type"] == "error" and err["code"] == "forbidden"


# --- replay with `since` -------------------------------------------------------------


async def test_subscribe_since_replays_then_goes_live(auser):
    ann, bob = await auser(), await auser()
    await seed("topic:log", 5, ann)
    async with ws_session(ann) as a, ws_session(bob) as b:
        ok = await b.request({"type": "subscribe", "channel": "topic:log", "since": 2})
        assert ok["type"] == "ok" and ok["last_seq"] == 5
        assert [(m["seq"], m["body"]) for m in b.skipped] == [(3, "m3"), (4, "m4"), (5, "m5")]
        assert all(m["type"] == "message" and m["channel"] == "topic:log" for m in b.skipped)
        live = await a.request({"type": "publish", "channel": "topic:log", "body": "m6"})
        assert (await b.recv()) == live["message"]
        assert await b.nothing()


async def test_subscribe_since_last_seq_or_beyond_replays_nothing(auser):
    ann, bob = await auser(), await auser()
    await seed("topic:log2", 3, ann)
    async with ws_session(bob) as b:
        for since in (3, 10):
            ok = await b.request({"type": "subscribe", "channel": "topic:log2", "since": since})
            assert ok["last_seq"] == 3 and b.skipped == []


async def test_subscribe_since_on_a_dm_replays_it(auser):
    ann, bob = await auser(), await auser()
    await seed(dm_name(ann, bob), 3, ann)
    async with ws_session(bob) as b:
        ok = await b.request({"type": "subscribe", "channel": dm_name(ann, bob), "since": 1})
        assert ok["type"] == "ok" and ok["last_seq"] == 3
        assert [m["seq"] for m in b.skipped] == [2, 3]
        assert {m["kind"] for m in b.skipped} == {"direct"}


async def test_replay_races_concurrent_publishes(auser, monkeypatch):
    """300 stored, since=0, while another session publishes 20 more: 1..320, once each, in order."""
    monkeypatch.setattr("realtime.consumers.REPLAY_PAGE", 64)  # several replay pages
    ann, bob = await auser(), await auser()
    await seed("topic:busy", 300, ann)
    async with ws_session(ann) as pub, ws_session(bob) as sub:
        some_published = asyncio.Event()

        async def publish_more():
            for i in range(301, 321):
                ok = await pub.request({"type": "publish", "channel": "topic:busy", "body": f"m{i}"})
                assert ok["type"] == "ok" and ok["message"]["seq"] == i
                if i == 303:
                    some_published.set()

        publisher = asyncio.create_task(publish_more())
        await asyncio.wait_for(some_published.wait(), 5)
        await sub.send({"type": "subscribe", "channel": "topic:busy", "since": 0, "ref": "sub"})
        seqs: list[int] = []
        answer, replayed = None, -1
        deadline = time.monotonic() + 10
        while len(seqs) < 320 or answer is None:
            assert time.monotonic() < deadline, (len(seqs), answer)
            frame = await sub.recv(5)
            if frame.get("ref") == "sub":
                answer, replayed = frame, len(seqs)
            else:
                assert frame["type"] == "message" and frame["body"] == f"m{frame['seq']}", frame
                seqs.append(frame["seq"])
        await publisher
        assert seqs == list(range(1, 321))
        assert answer["type"] == "ok" and 303 <= answer["last_seq"] <= 320
        # Everything up to last_seq came before the ok, the rest after it.
        assert replayed == answer["last_seq"]
        assert await sub.nothing(0.5)


async def test_replay_with_live_events_on_both_sides_of_the_snapshot(auser, monkeypatch):
    """Deterministic interleaving: messages published after the subscriber joined
    the group but before it read last_seq arrive both live and in the replay (sent
    once); those published during the replay arrive live after the ok."""
    from realtime import consumers

    in_snapshot, in_replay = asyncio.Event(), asyncio.Event()
    go_snapshot, go_replay = asyncio.Event(), asyncio.Event()
    real_last_seq, real_between = consumers.channel_last_seq, consumers.messages_between

    async def paused_last_seq(**kwargs):
        in_snapshot.set()
        await asyncio.wait_for(go_snapshot.wait(), 5)
        return await real_last_seq(**kwargs)

    async def paused_between(**kwargs):
        rows = await real_between(**kwargs)
        if not in_replay.is_set():
            in_replay.set()
            await asyncio.wait_for(go_replay.wait(), 5)
        return rows

    monkeypatch.setattr(consumers, "channel_last_seq", paused_last_seq)
    monkeypatch.setattr(consumers, "messages_between", paused_between)
    ann, bob = await auser(), await auser()
    await seed("topic:edge", 20, ann)
    async with ws_session(ann) as pub, ws_session(bob) as sub:

        async def publish(seqs):
            for i in seqs:
                ok = await pub.request({"type": "publish", "channel": "topic:edge", "body": f"m{i}"})
                assert ok["message"]["seq"] == i

        await sub.send({"type": "subscribe", "channel": "topic:edge", "since": 0, "ref": "sub"})
        await asyncio.wait_for(in_snapshot.wait(), 5)
        await publish(range(21, 24))  # joined, not yet snapshotted
        go_snapshot.set()
        await asyncio.wait_for(in_replay.wait(), 5)
        await publish(range(24, 27))  # during the replay
        go_replay.set()
        replayed = []
        while (frame := await sub.recv()).get("ref") != "sub":
            replayed.append(frame)
        assert frame["type"] == "ok" and frame["last_seq"] == 23
        assert [m["seq"] for m in replayed] == list(range(1, 24))
        assert [m["seq"] for m in await recv_messages(sub, 3)] == [24, 25, 26]
        assert await sub.nothing(0.5)


# --- gap fill ------------------------------------------------------------------------


async def test_gap_in_live_topic_stream_is_filled_from_the_database(auser):
    ann, bob = await auser(), await auser()
    async with ws_session(ann) as a, ws_session(bob) as b:
        await subscribe(b, "topic:gappy")
        first = await a.request({"type": "publish", "channel": "topic:gappy", "body": "one"})
        assert (await b.recv())["id"] == first["message"]["id"]
        assert await store_silently("topic:gappy", ann, "lost on the way") == 2
        await a.request({"type": "publish", "channel": "topic:gappy", "body": "three"})
        got = await recv_messages(b, 2)
        assert [(m["seq"], m["body"]) for m in got] == [(2, "lost on the way"), (3, "three")]
        assert await b.nothing()


async def test_gap_right_after_subscribe_is_filled(auser):
    ann, bob = await auser(), await auser()
    async with ws_session(ann) as a, ws_session(bob) as b:
        await subscribe(b, "topic:gap0")
        assert await store_silently("topic:gap0", ann, "skipped") == 1
        await a.request({"type": "publish", "channel": "topic:gap0", "body": "next"})
        got = await recv_messages(b, 2)
        assert [(m["seq"], m["body"]) for m in got] == [(1, "skipped"), (2, "next")]
        assert await b.nothing()


async def test_gap_in_dm_stream_is_filled(auser):
    ann, bob = await auser(), await auser()
    dm = dm_name(ann, bob)
    async with ws_session(ann) as a, ws_session(bob) as b:
        await a.request({"type": "direct", "to": bob.pk, "body": "one"})
        assert (await b.recv())["seq"] == 1
        assert await store_silently(dm, ann, "two") == 2
        await a.request({"type": "direct", "to": bob.pk, "body": "three"})
        got = await recv_messages(b, 2)
        assert [(m["seq"], m["body"]) for m in got] == [(2, "two"), (3, "three")]
        assert await b.nothing()


async def test_gap_longer_than_one_page_is_filled_completely(auser):
    ann, bob = await auser(), await auser()
    async with ws_session(ann) as a, ws_session(bob) as b:
        await subscribe(b, "topic:wide-gap")
        await seed("topic:wide-gap", 520, ann)  # more than one gap-fill page (500)
        ok = await a.request({"type": "publish", "channel": "topic:wide-gap", "body": "m521"})
        assert ok["message"]["seq"] == 521
        got = await recv_messages(b, 521)
        assert [m["seq"] for m in got] == list(range(1, 522))
        assert await b.nothing()


# --- system notices ------------------------------------------------------------------


async def test_system_notice_reaches_only_its_users_sessions(auser):
    ann, bob = await auser(), await auser()
    async with ws_session(ann) as a1, ws_session(ann) as a2, ws_session(bob) as b:
        notice = await sync_to_async(services.system_notice_send)(user=ann, body="your export is ready")
        for s in (a1, a2):
            ev = await s.recv()
            assert ev["type"] == "message" and ev["id"] == notice.pk
            assert ev["kind"] == "system" and ev["channel"] == f"system:{ann.pk}"
            assert ev["seq"] == 1 and ev["from"] is None and ev["body"] == "your export is ready"
        assert await b.nothing()
        await sync_to_async(services.system_notice_send)(user=ann, body="second")
        assert (await a1.recv())["seq"] == 2
        assert (await a2.recv())["seq"] == 2
        assert await b.nothing(0.1)
        err = await b.request({"type": "history", "channel": f"system:{ann.pk}"})
        assert err["type"] == "error" and err["code"] == "forbidden"


async def test_system_notice_is_delivered_only_after_commit(auser):
    ann = await auser()
    async with ws_session(ann) as a:

        def in_transaction(*, fail: bool) -> None:
            with transaction.atomic():
                services.system_notice_send(user=ann, body="rolled back" if fail else "committed")
                time.sleep(0.6)
                if fail:
                    raise RuntimeError("roll back")

        with pytest.raises(RuntimeError):
            await sync_to_async(in_transaction)(fail=True)
        assert await a.nothing(0.3)

        sender = asyncio.create_task(sync_to_async(in_transaction)(fail=False))
        assert await a.nothing(0.3)  # still inside the transaction
        await sender
        ev = await a.recv()
        assert ev["body"] == "committed" and ev["seq"] == 1  # the rolled-back one took no seq
    assert await stored(f"system:{ann.pk}") == [1]


# --- revoked membership --------------------------------------------------------------


async def test_removed_member_stops_receiving_the_private_topic(auser):
    ann, bob = await auser(), await auser()
    await sync_to_async(services.topic_create)(user=ann, name="club", private=True)
    await sync_to_async(services.topic_member_add)(by=ann, name="club", user_ref=bob.pk)
    async with ws_session(ann) as a, ws_session(bob) as b:
        await subscribe(b, "topic:club")
        await a.request({"type": "publish", "channel": "topic:club", "body": "welcome bob"})
        assert (await b.recv())["body"] == "welcome bob"

        await sync_to_async(services.topic_member_remove)(by=ann, name="club", user_ref=bob.pk)
        ok = await a.request({"type": "publish", "channel": "topic:club", "body": "bob is gone"})
        assert ok["message"]["seq"] == 2
        assert await b.nothing(0.5)
        for frame in (
            {"type": "subscribe", "channel": "topic:club"},
            {"type": "history", "channel": "topic:club"},
        ):
            err = await b.request(frame)
            assert err["type"] == "error" and err["code"] == "forbidden"
        assert (await a.request({"type": "ping"}))["type"] == "pong"


# --- dispatch ----------------------------------------------------------------------------


async def test_events_are_dispatched_without_channels_close_old_connections_hop(auser, monkeypatch):
    """Channels' dispatch hops to its sync thread before each event; ours does not
    (every ORM call goes through `db()`, which closes stale connections itself)."""
    import channels.consumer

    hops = []

    async def counted() -> None:
        hops.append(1)

    monkeypatch.setattr(channels.consumer, "aclose_old_connections", counted)
    ann, bob = await auser(), await auser()
    async with ws_session(ann) as a, ws_session(bob) as b:
        ok = await b.request({"type": "direct", "to": ann.pk, "body": "hi"})
        assert ok["type"] == "ok"
        (got,) = await recv_messages(a, 1)
        assert got["body"] == "hi"
    assert hops == []


async def test_an_event_of_unknown_type_is_refused():
    from realtime.consumers import SessionConsumer

    consumer = SessionConsumer()
    with pytest.raises(ValueError, match="No handler"):
        await consumer.dispatch({"type": "no.such.event"})


# --- the fan-out hub's subscription lost and taken again -----------------------------------


@pytest.mark.skipif(not settings.REDIS_URL, reason="the Redis fan-out path")
async def test_a_session_gets_what_was_published_while_the_hubs_subscription_was_down(auser):
    """Pub/sub drops what is published while the hub is not subscribed: messages
    stored but never delivered live stand for those. Once the subscription is
    back, the session reads them from the database: its topic's, and a DM
    channel it had never seen; then live delivery goes on without repeats."""
    from messaging import fanout
    from messaging.channels import dm_channel
    from tests.messaging.test_fanout import kill_subscription

    ann, bob = await auser(), await auser()
    await seed("topic:resub", 2, bob)
    async with ws_session(ann) as a, ws_session(bob) as b:
        await subscribe(a, "topic:resub")
        hub = fanout.fanout_hub()
        before = hub.subscribed
        assert before >= 1
        lost = [await store_silently("topic:resub", bob, f"lost{i}") for i in range(3)]
        await sync_to_async(services.channel_ensure)(name=dm_channel(ann.pk, bob.pk), created_by=bob)
        dm = dm_name(ann, bob)
        lost_dm = await store_silently(dm, bob, "lost dm")
        await kill_subscription(hub)
        got = await recv_messages(a, 4)
        assert [(m["channel"], m["seq"], m["body"]) for m in got] == [
            ("topic:resub", 3, "lost0"),
            ("topic:resub", 4, "lost1"),
            ("topic:resub", 5, "lost2"),
            (dm, lost_dm, "lost dm"),
        ]
        assert lost == [3, 4, 5] and hub.subscribed == before + 1
        ok = await b.request({"type": "publish", "channel": "topic:resub", "body": "live"})
        assert ok["type"] == "ok"
        (live,) = await recv_messages(a, 1)
        assert (live["seq"], live["body"]) == (6, "live")
        assert await a.nothing()
