"""Sessions that outlive sockets: resume, acknowledgements, takeover, limits, 4409."""

import asyncio

import pytest
from asgiref.sync import sync_to_async

from messaging import services
from realtime import consumers
from realtime.consumers import SessionConsumer
from realtime.store import session_store
from tests.conftest import recv_messages, ws_session

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_passwords")]


def dm_name(a, b) -> str:
    lo, hi = sorted((a.pk, b.pk))
    return f"dm:{lo}:{hi}"


async def subscribe(session, channel: str, **extra) -> dict:
    ok = await session.request({"type": "subscribe", "channel": channel, **extra})
    assert ok["type"] == "ok", ok
    return ok


async def publish(session, channel: str, body: str) -> int:
    ok = await session.request({"type": "publish", "channel": channel, "body": body})
    assert ok["type"] == "ok", ok
    return ok["message"]["seq"]


async def ack(session, channel: str, seq: int) -> dict:
    ok = await session.request({"type": "received", "channel": channel, "seq": seq})
    assert ok["type"] == "ok", ok
    return ok


def pairs(messages: list[dict]) -> list[tuple[str, int]]:
    return [(m["channel"], m["seq"]) for m in messages]


def resumed(session, sid: str, channels: list[str]) -> None:
    w = session.welcome
    assert w["resumed"] is True, w
    assert w["session"] == sid
    assert w["channels"] == channels


# --- resume within the window -----------------------------------------------------------


async def test_resume_resends_exactly_the_unacknowledged_then_goes_live(auser):
    ann, bob = await auser(), await auser()
    async with ws_session(bob) as b:
        async with ws_session(ann) as a:
            sid = a.welcome["session"]
            await subscribe(a, "topic:a")
            for i in range(1, 5):
                await publish(b, "topic:a", f"a{i}")
            assert [m["seq"] for m in await recv_messages(a, 4)] == [1, 2, 3, 4]
            assert (await ack(a, "topic:a", 2))["seq"] == 2

        # While ann is away: more on the topic, a direct message, a notice.
        for i in range(5, 7):
            await publish(b, "topic:a", f"a{i}")
        dm = await b.request({"type": "direct", "to": ann.pk, "body": "psst"})
        assert dm["type"] == "ok"
        notice = await sync_to_async(services.system_notice_send)(user=ann, body="export ready")

        async with ws_session(ann, query=f"session={sid}") as a:
            resumed(a, sid, ["topic:a"])
            # Sent right away: it must come after the whole backlog.
            await publish(b, "topic:a", "a7")
            backlog = await recv_messages(a, 6)
            assert sorted(pairs(backlog)) == sorted(
                [
                    ("topic:a", 3),
                    ("topic:a", 4),
                    ("topic:a", 5),
                    ("topic:a", 6),
                    (dm_name(ann, bob), 1),
                    (f"system:{ann.pk}", 1),
                ]
            )
            topic = [m for m in backlog if m["channel"] == "topic:a"]
            assert [m["seq"] for m in topic] == [3, 4, 5, 6]
            assert [m["body"] for m in topic] == ["a3", "a4", "a5", "a6"]
            by_channel = {m["channel"]: m for m in backlog}
            assert by_channel[dm_name(ann, bob)]["id"] == dm["message"]["id"]
            assert by_channel[f"system:{ann.pk}"]["id"] == notice.pk

            live = await a.recv()
            assert live["type"] == "message" and pairs([live]) == [("topic:a", 7)]
            assert await a.nothing()

            # The restored subscription keeps flowing, the DM too.
            await publish(b, "topic:a", "a8")
            assert pairs(await recv_messages(a, 1)) == [("topic:a", 8)]
            await b.request({"type": "direct", "to": ann.pk, "body": "again"})
            assert pairs(await recv_messages(a, 1)) == [(dm_name(ann, bob), 2)]
            assert await a.nothing()


async def test_received_but_unacknowledged_is_sent_again(auser):
    ann, bob = await auser(), await auser()
    async with ws_session(bob) as b:
        async with ws_session(ann) as a:
            sid = a.welcome["session"]
            await subscribe(a, "topic:b")
            await publish(b, "topic:b", "one")
            await publish(b, "topic:b", "two")
            await b.request({"type": "direct", "to": ann.pk, "body": "dm one"})
            assert pairs(await recv_messages(a, 3)) == [("topic:b", 1), ("topic:b", 2), (dm_name(ann, bob), 1)]
            await ack(a, "topic:b", 1)
        async with ws_session(ann, query=f"session={sid}") as a:
            resumed(a, sid, ["topic:b"])
            again = await recv_messages(a, 2)
            assert sorted(pairs(again)) == sorted([("topic:b", 2), (dm_name(ann, bob), 1)])
            assert await a.nothing()


async def test_a_resume_without_acks_resends_the_same_again(auser):
    ann, bob = await auser(), await auser()
    async with ws_session(bob) as b:
        async with ws_session(ann) as a:
            sid = a.welcome["session"]
            await subscribe(a, "topic:twice")
        await publish(b, "topic:twice", "one")
    for _ in range(2):
        async with ws_session(ann, query=f"session={sid}") as a:
            resumed(a, sid, ["topic:twice"])
            assert pairs(await recv_messages(a, 1)) == [("topic:twice", 1)]
            assert await a.nothing(0.2)
    async with ws_session(ann, query=f"session={sid}") as a:
        await recv_messages(a, 1)
        await ack(a, "topic:twice", 1)
    async with ws_session(ann, query=f"session={sid}") as a:
        resumed(a, sid, ["topic:twice"])
        assert await a.nothing()


async def test_a_topic_message_racing_the_resume_is_not_missed(auser, monkeypatch):
    """A message stored after the backlog was read but before the topic's group
    was joined again must still arrive, without waiting for a later one."""
    ann, bob = await auser(), await auser()
    async with ws_session(ann) as a:
        sid = a.welcome["session"]
        await subscribe(a, "topic:race")

    real_backlog = consumers.backlog_for_resume
    send = consumers.db(services.message_send)

    async def backlog_then_a_publish(**kwargs):
        found = await real_backlog(**kwargs)
        message, _ = await send(sender=bob, name=consumers.parse_channel("topic:race"), body="racer")
        await consumers.message_publish(message)
        return found

    monkeypatch.setattr(consumers, "backlog_for_resume", backlog_then_a_publish)
    async with ws_session(ann, query=f"session={sid}") as a:
        resumed(a, sid, ["topic:race"])
        racer = (await recv_messages(a, 1))[0]
        assert pairs([racer]) == [("topic:race", 1)] and racer["body"] == "racer"
        assert await a.nothing()


# --- what is not resumed ----------------------------------------------------------------


async def test_another_users_session_id_gives_a_fresh_session(auser):
    ann, bob = await auser(), await auser()
    async with ws_session(ann) as a:
        sid = a.welcome["session"]
        await subscribe(a, "topic:mine")
    async with ws_session(bob, query=f"session={sid}") as b:
        assert b.welcome["resumed"] is False
        assert b.welcome["session"] != sid
        assert b.welcome["channels"] == []
    # The attempt neither took nor spoiled it: ann still resumes it.
    async with ws_session(ann, query=f"session={sid}") as a:
        resumed(a, sid, ["topic:mine"])


async def test_unknown_session_id_gives_a_fresh_session(auser):
    ann = await auser()
    async with ws_session(ann, query="session=s_ffffffffffffffffffffffffffffffff") as a:
        assert a.welcome["resumed"] is False
        assert a.welcome["session"] != "s_ffffffffffffffffffffffffffffffff"
        assert a.welcome["channels"] == []


async def test_expired_session_gives_a_fresh_session(auser, chat_settings):
    chat_settings(RESUME_WINDOW=1)
    ann, bob = await auser(), await auser()
    async with ws_session(ann) as a:
        assert a.welcome["resume_window"] == 1
        sid = a.welcome["session"]
        await subscribe(a, "topic:late")
    async with ws_session(bob) as b:
        await publish(b, "topic:late", "missed")
    await asyncio.sleep(1.6)
    async with ws_session(ann, query=f"session={sid}") as a:
        assert a.welcome["resumed"] is False
        assert a.welcome["session"] != sid
        assert a.welcome["channels"] == []
        assert await a.nothing()


# --- takeover ---------------------------------------------------------------------------


async def test_resume_while_the_first_socket_lives_takes_it_over(auser):
    ann, bob = await auser(), await auser()
    async with ws_session(bob) as b, ws_session(ann) as first:
        sid = first.welcome["session"]
        await subscribe(first, "topic:t")
        await publish(b, "topic:t", "one")
        await recv_messages(first, 1)
        await ack(first, "topic:t", 1)
        async with ws_session(ann, query=f"session={sid}") as second:
            resumed(second, sid, ["topic:t"])
            assert await first.closed() == 4000
            # The first actor's disconnect comes after the claim: it must not
            # detach the session from the second.
            await first.comm.disconnect()
            state = await session_store().load(sid)
            assert state is not None and state.owner != ""

            await publish(b, "topic:t", "two")
            assert pairs(await recv_messages(second, 1)) == [("topic:t", 2)]
            assert await second.nothing()


# --- private topic revoked while away ---------------------------------------------------


async def test_a_topic_revoked_while_away_is_not_restored_nor_resent(auser):
    ann, bob = await auser(), await auser()
    await sync_to_async(services.topic_create)(user=ann, name="club", private=True)
    await sync_to_async(services.topic_member_add)(by=ann, name="club", user_ref=bob.pk)
    async with ws_session(ann) as a:
        async with ws_session(bob) as b:
            sid = b.welcome["session"]
            await subscribe(b, "topic:club")
            await subscribe(b, "topic:open")
        await publish(a, "topic:club", "for members")
        await publish(a, "topic:open", "for all")
        await sync_to_async(services.topic_member_remove)(by=ann, name="club", user_ref=bob.pk)
        await publish(a, "topic:club", "bob is gone")

        async with ws_session(bob, query=f"session={sid}") as b:
            resumed(b, sid, ["topic:open"])
            assert pairs(await recv_messages(b, 1)) == [("topic:open", 1)]
            assert await b.nothing()
            await publish(a, "topic:club", "still secret")
            assert await b.nothing()
    stored = await session_store().load(sid)
    assert stored.topics == ["topic:open"]


# --- received ---------------------------------------------------------------------------


async def test_received_answers_with_channel_and_seq(auser):
    ann, bob = await auser(), await auser()
    async with ws_session(ann) as a, ws_session(bob) as b:
        await subscribe(a, "topic:r")
        await publish(b, "topic:r", "one")
        await recv_messages(a, 1)
        ok = await a.request({"type": "received", "channel": "topic:r", "seq": 1})
        assert ok["type"] == "ok" and ok["channel"] == "topic:r" and ok["seq"] == 1
        await b.request({"type": "direct", "to": ann.pk, "body": "hi"})
        await recv_messages(a, 1)
        ok = await a.request({"type": "received", "channel": dm_name(ann, bob), "seq": 1})
        assert ok["type"] == "ok" and ok["channel"] == dm_name(ann, bob) and ok["seq"] == 1


async def test_a_lower_ack_keeps_the_higher(auser):
    ann, bob = await auser(), await auser()
    async with ws_session(bob) as b:
        async with ws_session(ann) as a:
            sid = a.welcome["session"]
            await subscribe(a, "topic:low")
            for i in range(1, 6):
                await publish(b, "topic:low", f"m{i}")
            await recv_messages(a, 5)
            assert (await ack(a, "topic:low", 3))["seq"] == 3
            assert (await ack(a, "topic:low", 1))["seq"] == 3
        async with ws_session(ann, query=f"session={sid}") as a:
            resumed(a, sid, ["topic:low"])
            assert pairs(await recv_messages(a, 2)) == [("topic:low", 4), ("topic:low", 5)]
            assert await a.nothing()


async def test_received_on_another_pairs_dm_is_forbidden(auser):
    ann, bob, carol = await auser(), await auser(), await auser()
    async with ws_session(bob) as b:
        await b.request({"type": "direct", "to": carol.pk, "body": "between us"})
    async with ws_session(ann) as a:
        for name in (dm_name(bob, carol), f"system:{bob.pk}"):
            err = await a.request({"type": "received", "channel": name, "seq": 1})
            assert err["type"] == "error" and err["code"] == "forbidden", (name, err)
        assert (await a.request({"type": "ping"}))["type"] == "pong"


async def test_received_on_a_missing_topic_is_not_found(auser):
    async with ws_session(await auser()) as a:
        err = await a.request({"type": "received", "channel": "topic:nowhere", "seq": 1})
        assert err["type"] == "error" and err["code"] == "not_found"


@pytest.mark.parametrize("seq", [-1, "3", None, 1.5])
async def test_received_with_a_bad_seq_is_bad_request(auser, seq):
    async with ws_session(await auser()) as a:
        await subscribe(a, "topic:seqs")
        err = await a.request({"type": "received", "channel": "topic:seqs", "seq": seq})
        assert err["type"] == "error" and err["code"] == "bad_request"
        assert (await a.request({"type": "ping"}))["type"] == "pong"


# --- connections per user ---------------------------------------------------------------


async def test_one_connection_over_the_limit_is_closed_4429(auser, chat_settings):
    chat_settings(MAX_CONNECTIONS_PER_USER=2)
    ann, bob = await auser(), await auser()
    async with ws_session(ann) as first, ws_session(ann):
        async with ws_session(ann, expect_welcome=False) as third:
            out = await third.comm.receive_output(3)
            assert out["type"] == "websocket.close" and out["code"] == 4429  # no welcome first
        async with ws_session(bob) as other:  # the limit is per user
            assert other.welcome["resumed"] is False
        await first.comm.disconnect()
        async with ws_session(ann) as again:
            assert again.welcome["type"] == "welcome"
            assert (await again.request({"type": "ping"}))["type"] == "pong"


# --- subscribe sets the resume point ----------------------------------------------------


async def test_subscribe_without_since_resumes_after_last_seq(auser):
    ann, bob = await auser(), await auser()
    async with ws_session(bob) as b:
        for i in range(1, 4):
            await publish(b, "topic:base", f"old{i}")
        async with ws_session(ann) as a:
            sid = a.welcome["session"]
            assert (await subscribe(a, "topic:base"))["last_seq"] == 3
            await publish(b, "topic:base", "new4")
            await publish(b, "topic:base", "new5")
            assert pairs(await recv_messages(a, 2)) == [("topic:base", 4), ("topic:base", 5)]
        await publish(b, "topic:base", "new6")
        async with ws_session(ann, query=f"session={sid}") as a:
            resumed(a, sid, ["topic:base"])
            again = await recv_messages(a, 3)
            assert pairs(again) == [("topic:base", 4), ("topic:base", 5), ("topic:base", 6)]
            assert [m["body"] for m in again] == ["new4", "new5", "new6"]
            assert await a.nothing()


async def test_subscribe_with_since_resumes_after_since(auser):
    ann, bob = await auser(), await auser()
    async with ws_session(bob) as b:
        for i in range(1, 4):
            await publish(b, "topic:since", f"m{i}")
        async with ws_session(ann) as a:
            sid = a.welcome["session"]
            await subscribe(a, "topic:since", since=1)
            assert [m["seq"] for m in a.skipped] == [2, 3]
        async with ws_session(ann, query=f"session={sid}") as a:
            resumed(a, sid, ["topic:since"])
            assert pairs(await recv_messages(a, 2)) == [("topic:since", 2), ("topic:since", 3)]
            assert await a.nothing()


# --- a client that falls behind ---------------------------------------------------------


async def test_a_client_that_stops_reading_is_closed_4409_and_loses_nothing(auser, chat_settings, monkeypatch):
    chat_settings(OUTBOUND_BUFFER=1)
    ann, bob, carol = await auser(), await auser(), await auser()

    write_loop = SessionConsumer.write_loop

    async def write_two_then_stall(self):
        # Ann's welcome and subscribe `ok` go out, then her client stops
        # reading: the outbox fills and nothing drains it. (A writer runs
        # only while there is something to write: the others' writers,
        # started while this is patched in, must still write.)
        if self.user.pk != ann.pk:
            return await write_loop(self)
        while self.outbox and getattr(self, "written", 0) < 2:
            self.written = getattr(self, "written", 0) + 1
            await self.send(text_data=self.outbox.popleft())
        if self.written == 2:
            await asyncio.Event().wait()

    async with ws_session(bob) as b, ws_session(carol) as c:
        await subscribe(c, "topic:slow")
        with monkeypatch.context() as patch:
            patch.setattr(SessionConsumer, "write_loop", write_two_then_stall)
            async with ws_session(ann) as slow:
                sid = slow.welcome["session"]
                await subscribe(slow, "topic:slow")
                for i in range(1, 4):
                    await publish(b, "topic:slow", f"m{i}")
                out = await slow.comm.receive_output(3)
                assert out["type"] == "websocket.close" and out["code"] == 4409
        # A slow member costs the others nothing.
        assert pairs(await recv_messages(c, 3)) == [("topic:slow", 1), ("topic:slow", 2), ("topic:slow", 3)]

        async with ws_session(ann, query=f"session={sid}") as again:
            resumed(again, sid, ["topic:slow"])
            got = await recv_messages(again, 3)
            assert [m["body"] for m in got] == ["m1", "m2", "m3"]
            assert pairs(got) == [("topic:slow", 1), ("topic:slow", 2), ("topic:slow", 3)]
            await publish(b, "topic:slow", "m4")
            assert pairs(await recv_messages(again, 1)) == [("topic:slow", 4)]
            assert await again.nothing()


async def test_events_piling_up_behind_a_stalled_actor_are_read_again_from_the_database(
    auser, chat_settings, monkeypatch, settings
):
    """An actor stuck on a replay (its client not reading) keeps at most
    OUTBOUND_BUFFER waiting events; past that they are replaced by one
    catch-up from the database, and nothing is lost or sent twice."""
    settings.REDIS_URL = ""  # the in-process hub: events reach the actor as they are published
    chat_settings(OUTBOUND_BUFFER=3)
    ann, bob = await auser(), await auser()
    stalled, release = asyncio.Event(), asyncio.Event()
    write_loop = SessionConsumer.write_loop

    async def stall_during_the_replay(self):
        if self.user.pk == ann.pk and "topic:pile" in self.topics and not release.is_set():
            stalled.set()  # the replay has filled the outbox and waits for room
            await release.wait()
        return await write_loop(self)

    monkeypatch.setattr(SessionConsumer, "write_loop", stall_during_the_replay)
    async with ws_session(bob) as b:
        for i in range(1, 7):
            await publish(b, "topic:pile", f"old{i}")
        async with ws_session(ann) as a:
            await a.send({"type": "subscribe", "channel": "topic:pile", "since": 0, "ref": "s"})
            await stalled.wait()
            for i in range(1, 6):
                await publish(b, "topic:pile", f"live{i}")  # ann's actor is still in its replay
            release.set()
            frames = [await a.recv() for _ in range(12)]
            assert frames[6] == {"type": "ok", "ref": "s", "channel": "topic:pile", "last_seq": 6}
            got = [(f["seq"], f["body"]) for f in frames[:6] + frames[7:]]
            assert got == [(i, f"old{i}") for i in range(1, 7)] + [(6 + i, f"live{i}") for i in range(1, 6)]
            assert await a.nothing()
