"""Presence and typing over WebSocket (and the REST read), on the real ASGI app,
PostgreSQL and the Redis channel layer and presence store.

The sweeper runs every second in the test's own event loop, so tests that
wait for an offline shorten PRESENCE_GRACE with `chat_settings`.
"""

import asyncio
import contextlib
import time
from datetime import UTC, datetime, timedelta

import pytest
from channels.db import database_sync_to_async
from rest_framework.test import APIClient

from messaging.channels import dm_channel
from messaging.services import channel_ensure
from messaging.wire import iso_utc
from presence.hub import _hubs
from presence.models import LastSeen
from tests.conftest import token_for, ws_session

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_passwords")]


@pytest.fixture(autouse=True)
async def _hub_stopped():
    """Stop this loop's presence hub after the test: its sweeper and listener
    must not outlive the test's event loop (nor be destroyed while pending)."""
    yield
    hub = _hubs.pop(asyncio.get_running_loop(), None)
    if hub is not None:
        for task in hub.tasks:
            task.cancel()
        await asyncio.gather(*hub.tasks, return_exceptions=True)


SWEEP_WAIT = 1.6  # longer than one sweep period (1 s) plus a short grace
EVENT_WAIT = 4.0  # an offline: grace + one sweep + the database


@database_sync_to_async
def dm_make(a, b) -> str:
    """The DM channel between two users exists (what makes them see each other)."""
    return channel_ensure(name=dm_channel(a.pk, b.pk)).name


@database_sync_to_async
def last_seen_of(user) -> datetime | None:
    row = LastSeen.objects.filter(user_id=user.pk).first()
    return row.at if row else None


def ref(user) -> dict:
    return {"id": user.pk, "username": user.get_username()}


async def watch(session, users) -> dict:
    answer = await session.request({"type": "presence.subscribe", "users": users})
    assert answer["type"] == "ok", answer
    return answer


async def presence_event(session, timeout: float = 3) -> dict:
    frame = await session.recv(timeout)
    assert frame["type"] == "presence", frame
    return frame


async def set_status(session, status: str) -> str:
    answer = await session.request({"type": "presence.set", "status": status})
    assert answer["type"] == "ok", answer
    return answer["status"]


async def settled(*sessions) -> None:
    """Each session's `connect` finished, presence announce included.

    `welcome` goes out before the session enters presence; a frame is
    handled only after `connect` returned, so a ping answered means done.
    """
    for session in sessions:
        assert (await session.request({"type": "ping"}))["type"] == "pong"


async def error_of(session, frame: dict) -> str:
    answer = await session.request(frame)
    assert answer["type"] == "error", answer
    return answer["code"]


# --- subscribe: current states at once, then only real changes ------------------------------


async def test_subscribe_answers_current_states_at_once(auser):
    watcher, on, never = await auser(), await auser(), await auser()
    await dm_make(watcher, on)
    await dm_make(watcher, never)
    async with ws_session(on) as o, ws_session(watcher) as w:
        await settled(o)
        answer = await watch(w, [on.pk, never.get_username(), watcher.pk])
        assert answer["denied"] == []
        states = {s["user"]["id"]: s for s in answer["presence"]}
        assert set(states) == {on.pk, never.pk, watcher.pk}
        assert states[on.pk]["user"] == ref(on) and states[on.pk]["status"] == "online"
        stored = await last_seen_of(on)
        assert stored is not None and states[on.pk]["last_seen"] == iso_utc(stored)
        assert states[never.pk] == {"user": ref(never), "status": "offline", "last_seen": None}
        assert states[watcher.pk]["status"] == "online"  # one may always see oneself
        assert await w.nothing(0.5)


async def test_a_change_is_pushed_once_and_a_second_session_pushes_nothing(auser, chat_settings):
    chat_settings(PRESENCE_GRACE=0.5)
    watcher, bob = await auser(), await auser()
    await dm_make(watcher, bob)
    async with ws_session(watcher) as w:
        [state] = (await watch(w, [bob.pk]))["presence"]
        assert state["status"] == "offline"
        async with ws_session(bob):
            event = await presence_event(w)
            assert event["user"] == ref(bob) and event["status"] == "online"
            assert event["last_seen"] is not None  # connecting is activity
            async with ws_session(bob):
                pass  # a second session comes and goes
            # Neither its arrival nor (after the grace) its leaving is a change.
            assert await w.nothing(SWEEP_WAIT)
        event = await presence_event(w, EVENT_WAIT)
        assert event["status"] == "offline"
        assert await w.nothing(1.1)  # announced once


async def test_users_connecting_at_once_are_each_announced_once_with_their_last_seen(auser):
    """Their presence enters, announces and publishes share batches; each
    user's own event still comes, once, with that user's last_seen."""
    watcher, bob, carol = await auser(), await auser(), await auser()
    await dm_make(watcher, bob)
    await dm_make(watcher, carol)
    async with ws_session(watcher) as w:
        await watch(w, [bob.pk, carol.pk])
        async with contextlib.AsyncExitStack() as stack:
            await asyncio.gather(*(stack.enter_async_context(ws_session(u)) for u in (bob, carol)))
            events = [await presence_event(w), await presence_event(w)]
            assert sorted((e["user"]["id"], e["status"]) for e in events) == sorted(
                [(bob.pk, "online"), (carol.pk, "online")]
            )
            for event in events:
                stored = await last_seen_of(bob if event["user"]["id"] == bob.pk else carol)
                assert event["last_seen"] == iso_utc(stored)
            assert await w.nothing(0.5)


# --- multi-device, grace, away, dnd ------------------------------------------------------------


async def test_online_while_any_session_lives(auser, chat_settings):
    chat_settings(PRESENCE_GRACE=0.5)
    watcher, bob = await auser(), await auser()
    await dm_make(watcher, bob)
    async with ws_session(watcher) as w, ws_session(bob) as phone, ws_session(bob) as laptop:
        await settled(phone, laptop)
        [state] = (await watch(w, [bob.get_username()]))["presence"]
        assert state["status"] == "online"
        await phone.comm.disconnect()
        assert await w.nothing(SWEEP_WAIT)  # no offline: the laptop lives
        [state] = (await watch(w, [bob.pk]))["presence"]
        assert state["status"] == "online"
        await laptop.comm.disconnect()
        assert (await presence_event(w, EVENT_WAIT))["status"] == "offline"


async def test_a_quick_resume_within_the_grace_does_not_flap_then_a_real_leave_is_offline(auser, chat_settings):
    chat_settings(PRESENCE_GRACE=0.8)
    watcher, bob = await auser(), await auser()
    await dm_make(watcher, bob)
    async with ws_session(watcher) as w:
        async with ws_session(bob) as first:
            sid = first.welcome["session"]
            await settled(first)
            await watch(w, [bob.pk])
            await first.comm.disconnect()
            async with ws_session(bob, query=f"session={sid}") as second:
                assert second.welcome["resumed"] is True
                assert await w.nothing(1.9)  # past the grace and a sweep: still no event
                left_at = datetime.now(UTC)
            # The offline waits for the grace...
            assert await w.nothing(0.4)
        # ...then comes once, with last_seen as stored in PostgreSQL.
        event = await presence_event(w, EVENT_WAIT)
        assert event["status"] == "offline"
        stored = await last_seen_of(bob)
        assert stored is not None and stored >= left_at - timedelta(seconds=1)
        assert event["last_seen"] == iso_utc(stored)
        assert await w.nothing(1.1)  # announced once


async def test_away_only_when_every_session_is_away(auser):
    watcher, bob = await auser(), await auser()
    await dm_make(watcher, bob)
    async with ws_session(watcher) as w, ws_session(bob) as phone, ws_session(bob) as laptop:
        await settled(phone, laptop)
        await watch(w, [bob.pk])
        assert await set_status(phone, "away") == "online"
        assert await w.nothing(0.5)
        assert await set_status(laptop, "away") == "away"
        assert (await presence_event(w))["status"] == "away"
        assert await set_status(phone, "online") == "online"
        assert (await presence_event(w))["status"] == "online"
        assert await w.nothing(0.3)


async def test_dnd_is_the_users_across_sessions_until_online(auser):
    watcher, bob = await auser(), await auser()
    await dm_make(watcher, bob)
    async with ws_session(watcher) as w, ws_session(bob) as phone, ws_session(bob) as laptop:
        await settled(phone, laptop)
        await watch(w, [bob.pk])
        assert await set_status(phone, "dnd") == "dnd"
        event = await presence_event(w)
        assert event["user"] == ref(bob) and event["status"] == "dnd"
        assert await set_status(laptop, "away") == "dnd"  # dnd wins over a session's away
        assert await w.nothing(0.5)
        [state] = (await watch(w, [bob.pk]))["presence"]
        assert state["status"] == "dnd"
        assert await set_status(phone, "online") == "online"
        assert (await presence_event(w))["status"] == "online"


async def test_a_session_leaving_changes_the_aggregate_after_the_grace(auser, chat_settings):
    """Phone away and laptop online make online; once the laptop leaves, every
    live session is away: announced after the grace, although the phone keeps
    refreshing its presence meanwhile (a heartbeat of 1 s here)."""
    chat_settings(PRESENCE_GRACE=1.5, HEARTBEAT=1)
    watcher, bob = await auser(), await auser()
    await dm_make(watcher, bob)
    async with ws_session(watcher) as w, ws_session(bob) as phone:
        async with ws_session(bob) as laptop:
            await settled(phone, laptop)
            [state] = (await watch(w, [bob.pk]))["presence"]
            assert state["status"] == "online"
            assert await set_status(phone, "away") == "online"
        events: list[dict] = []
        for _ in range(10):  # up to 5 s, pinging to keep both sessions open
            await settled(phone, w)
            events += [f for f in w.skipped if f["type"] == "presence"]
            if events:
                break
            await asyncio.sleep(0.5)
        assert [e["status"] for e in events] == ["away"], events


async def test_presence_set_accepts_only_the_three_statuses(auser):
    async with ws_session(await auser()) as s:
        for status in ("offline", "busy", ""):
            assert await error_of(s, {"type": "presence.set", "status": status}) == "bad_request"


# --- visibility: who may be seen ---------------------------------------------------------------


async def test_a_stranger_is_denied_like_an_unknown_user_and_never_leaks(auser, chat_settings):
    chat_settings(PRESENCE_GRACE=0.3)
    watcher, stranger = await auser(), await auser()
    async with ws_session(watcher) as w:
        refs = [stranger.pk, stranger.get_username(), 987654321, "no-such-user"]
        answer = await watch(w, refs)
        assert answer["presence"] == [] and answer["denied"] == refs
        async with ws_session(stranger) as s:
            await set_status(s, "away")
            await set_status(s, "dnd")
        assert await w.nothing(SWEEP_WAIT)  # came, changed, left: not one event

        # Over REST the same: listed under `denied`, exactly like an unknown id.
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(watcher)}")
        response = await database_sync_to_async(client.get)(
            f"/api/presence/?users={stranger.pk},987654321,no-such-user"
        )
        assert response.status_code == 200
        assert response.json() == {"results": [], "denied": [stranger.pk, 987654321, "no-such-user"]}


async def test_a_dm_partner_is_visible_only_once_the_dm_exists(auser):
    watcher, bob = await auser(), await auser()
    async with ws_session(watcher) as w, ws_session(bob) as b:
        assert (await watch(w, [bob.pk]))["denied"] == [bob.pk]
        assert (await w.request({"type": "direct", "to": bob.pk, "body": "hi"}))["type"] == "ok"
        assert (await b.recv())["type"] == "message"
        answer = await watch(w, [bob.pk])
        assert answer["denied"] == [] and answer["presence"][0]["status"] == "online"
        await set_status(b, "away")
        assert (await presence_event(w))["status"] == "away"


async def test_members_of_a_subscribed_topic_are_visible(auser):
    watcher, bob, carol = await auser(), await auser(), await auser()
    async with ws_session(watcher) as w, ws_session(bob) as b, ws_session(carol) as c:
        ok = await b.request({"type": "subscribe", "channel": "topic:lobby"})
        assert ok["type"] == "ok", ok
        ok = await c.request({"type": "subscribe", "channel": "topic:elsewhere"})
        assert ok["type"] == "ok", ok
        # Not before the watcher takes part in the topic.
        assert (await watch(w, [bob.pk]))["denied"] == [bob.pk]
        ok = await w.request({"type": "subscribe", "channel": "topic:lobby"})
        assert ok["type"] == "ok", ok
        answer = await watch(w, [bob.pk, carol.pk])
        assert [s["user"] for s in answer["presence"]] == [ref(bob)]
        assert answer["denied"] == [carol.pk]  # in another topic only
        await set_status(b, "away")
        assert (await presence_event(w))["user"] == ref(bob)
        await set_status(c, "away")
        assert await w.nothing(0.5)


# --- limits and unsubscribe -----------------------------------------------------------------------


async def test_more_than_1000_users_in_one_request_is_bad_request(auser):
    async with ws_session(await auser()) as s:
        code = await error_of(s, {"type": "presence.subscribe", "users": list(range(1, 1002))})
        assert code == "bad_request"
        assert await error_of(s, {"type": "presence.subscribe", "users": []}) == "bad_request"
        answer = await s.request({"type": "presence.subscribe", "users": list(range(10**9, 10**9 + 1000))})
        assert answer["type"] == "ok" and len(answer["denied"]) == 1000


async def test_max_presence_watch_counts_users_per_session(auser, chat_settings):
    chat_settings(MAX_PRESENCE_WATCH=2)
    watcher, bob, carol, dave = await auser(), await auser(), await auser(), await auser()
    for other in (bob, carol, dave):
        await dm_make(watcher, other)
    async with ws_session(watcher) as w:
        assert await error_of(w, {"type": "presence.subscribe", "users": [bob.pk, carol.pk, dave.pk]}) == "bad_request"
        await watch(w, [bob.pk])
        await watch(w, [carol.get_username()])  # two users: within the limit
        await watch(w, [bob.pk])  # watching one again takes no more room
        assert await error_of(w, {"type": "presence.subscribe", "users": [dave.pk]}) == "bad_request"
        ok = await w.request({"type": "presence.unsubscribe", "users": [bob.pk]})
        assert ok["type"] == "ok"
        await watch(w, [dave.pk])  # room again


async def test_unsubscribe_stops_events(auser):
    watcher, bob = await auser(), await auser()
    await dm_make(watcher, bob)
    async with ws_session(watcher) as w, ws_session(bob) as b:
        await settled(b)
        await watch(w, [bob.get_username()])
        await set_status(b, "away")
        assert (await presence_event(w))["status"] == "away"
        # Watched by name, unwatched by id: the same user.
        ok = await w.request({"type": "presence.unsubscribe", "users": [bob.pk]})
        assert ok == {"type": "ok", "ref": ok["ref"]}
        await set_status(b, "online")
        await set_status(b, "dnd")
        assert await w.nothing(0.5)


# --- typing -----------------------------------------------------------------------------------------


def typing_of(frame: dict, channel: str, user, state: str) -> None:
    assert frame == {"type": "typing", "channel": channel, "user": ref(user), "state": state}, frame


async def typing(session, channel: str, state: str) -> None:
    answer = await session.request({"type": "typing", "channel": channel, "state": state})
    assert answer["type"] == "ok", answer


async def test_typing_in_a_dm_reaches_the_partner_and_not_the_typist(auser):
    ann, bob = await auser(), await auser()
    channel = str(dm_channel(ann.pk, bob.pk))
    async with ws_session(ann) as a, ws_session(ann) as a2, ws_session(bob) as b:
        await typing(a, channel, "start")
        typing_of(await b.recv(), channel, ann, "start")
        await typing(a, channel, "stop")
        typing_of(await b.recv(), channel, ann, "stop")
        assert await a.nothing(0.3) and await a2.nothing(0.1)  # not to any session of the typist
        assert await b.nothing(0.1)


async def test_typing_in_a_topic_reaches_its_other_subscribers_only(auser):
    ann, bob, carol = await auser(), await auser(), await auser()
    async with ws_session(ann) as a, ws_session(bob) as b, ws_session(carol) as c:
        for s in (a, b):
            assert (await s.request({"type": "subscribe", "channel": "topic:desk"}))["type"] == "ok"
        await typing(a, "topic:desk", "start")
        typing_of(await b.recv(), "topic:desk", ann, "start")
        await typing(a, "topic:desk", "stop")
        typing_of(await b.recv(), "topic:desk", ann, "stop")
        assert await a.nothing(0.3) and await c.nothing(0.1)


async def test_typing_starts_are_forwarded_at_most_once_per_2_seconds(auser):
    ann, bob = await auser(), await auser()
    channel = str(dm_channel(ann.pk, bob.pk))
    async with ws_session(ann) as a, ws_session(bob) as b:
        await typing(a, channel, "start")
        await typing(a, channel, "start")
        await typing(a, channel, "start")
        typing_of(await b.recv(), channel, ann, "start")
        assert await b.nothing(0.5)
        await typing(a, channel, "stop")
        typing_of(await b.recv(), channel, ann, "stop")


async def test_a_start_not_renewed_is_followed_by_a_server_stop(auser):
    ann, bob = await auser(), await auser()
    channel = str(dm_channel(ann.pk, bob.pk))
    async with ws_session(ann) as a, ws_session(bob) as b:
        await typing(a, channel, "start")
        started = time.monotonic()
        typing_of(await b.recv(), channel, ann, "start")
        typing_of(await b.recv(timeout=9), channel, ann, "stop")
        assert time.monotonic() - started >= 5.5  # not before the 6 s automatic stop (less a margin)
        assert await a.nothing(0.2)  # the typist gets no stop either
        assert await b.nothing(1.2)  # one stop, not one per sweep


async def test_typing_where_it_is_not_shown_or_not_allowed_is_refused(auser):
    ann, bob, carol = await auser(), await auser(), await auser()
    async with ws_session(ann) as a, ws_session(bob) as b:
        assert await error_of(a, {"type": "typing", "channel": "broadcast", "state": "start"}) == "forbidden"
        assert await error_of(a, {"type": "typing", "channel": f"system:{ann.pk}", "state": "start"}) == "forbidden"
        await dm_make(bob, carol)
        others = str(dm_channel(bob.pk, carol.pk))
        assert await error_of(a, {"type": "typing", "channel": others, "state": "start"}) == "forbidden"
        assert await error_of(a, {"type": "typing", "channel": "topic:desk", "state": "typing"}) == "bad_request"
        assert await b.nothing(0.3)


# --- REST -------------------------------------------------------------------------------------------


async def test_rest_presence_lists_visible_states_and_denies_the_rest(auser):
    viewer, bob, never, stranger = await auser(), await auser(), await auser(), await auser()
    await dm_make(viewer, bob)
    await dm_make(viewer, never)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(viewer)}")
    get = database_sync_to_async(client.get)
    async with ws_session(bob) as b:
        await set_status(b, "away")
        users = f"{bob.get_username()},{never.pk},{stranger.pk},{viewer.pk},0"
        response = await get(f"/api/presence/?users={users}")
        assert response.status_code == 200
        body = response.json()
        assert body["denied"] == [stranger.pk, 0]
        results = {r["user"]["id"]: r for r in body["results"]}
        assert results[bob.pk] == {"user": ref(bob), "status": "away", "last_seen": iso_utc(await last_seen_of(bob))}
        assert results[bob.pk]["last_seen"] is not None
        assert results[never.pk] == {"user": ref(never), "status": "offline", "last_seen": None}
        assert results[viewer.pk]["status"] == "offline"  # REST is no session


async def test_rest_presence_sees_members_of_the_users_topics(auser):
    viewer, bob = await auser(), await auser()
    async with ws_session(viewer) as v, ws_session(bob) as b:
        for s in (v, b):
            assert (await s.request({"type": "subscribe", "channel": "topic:plaza"}))["type"] == "ok"
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(viewer)}")
    body = (await database_sync_to_async(client.get)(f"/api/presence/?users={bob.pk}")).json()
    assert [r["user"] for r in body["results"]] == [ref(bob)] and body["denied"] == []


async def test_rest_presence_needs_users_and_auth(auser):
    viewer = await auser()
    client = APIClient()
    get = database_sync_to_async(client.get)
    response = await get("/api/presence/?users=1")
    assert response.status_code == 401
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(viewer)}")
    for query in ("", "?users=", "?users=,,"):
        response = await get(f"/api/presence/{query}")
        assert response.status_code == 400, query
        assert response.json()["code"] == "bad_request"
    too_many = ",".join(str(n) for n in range(1, 1002))
    assert (await get(f"/api/presence/?users={too_many}")).status_code == 400
