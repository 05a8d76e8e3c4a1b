"""The presence store's contract, held by both the Redis and the in-memory store.

Times are passed in (`now=`) where the store takes them, so nothing sleeps.
"""

import asyncio
import itertools
import time
import uuid

import pytest
from django.conf import settings

from presence.rules import AWAY, DND, OFFLINE, ONLINE, TYPING_EXPIRY
from presence.store import MemoryPresenceStore, RedisPresenceStore

LONG = 60.0  # a ttl no test outlives
GRACE = 5.0

_uids = itertools.count(1)


def uid_new() -> int:
    return next(_uids)


@pytest.fixture(params=["redis", "memory"])
async def store(request):
    if request.param == "memory":
        yield MemoryPresenceStore()
        return
    if not settings.REDIS_URL:
        pytest.skip("REDIS_URL is not set")
    # A prefix of its own: the app's keys and other tests' stay apart.
    redis_store = RedisPresenceStore(settings.REDIS_URL, f"test-{uuid.uuid4().hex}")
    try:
        yield redis_store
    finally:
        client = redis_store.redis
        keys = [key async for key in client.scan_iter(match=f"{redis_store.p}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


# --- sessions and status ------------------------------------------------------------------


async def test_unknown_user_is_offline(store):
    assert await store.status(uid_new(), now=time.time()) == OFFLINE


async def test_a_session_makes_the_user_online_until_it_expires(store):
    uid = uid_new()
    await store.session_set(uid, "actor-a", ONLINE, ttl=LONG)
    now = time.time()
    assert await store.status(uid, now=now) == ONLINE
    assert await store.status(uid, now=now + LONG + 1) == OFFLINE


async def test_status_aggregates_sessions_and_dnd(store):
    uid = uid_new()
    await store.session_set(uid, "actor-a", AWAY, ttl=LONG)
    await store.session_set(uid, "actor-b", AWAY, ttl=LONG)
    assert await store.status(uid, now=time.time()) == AWAY
    await store.session_set(uid, "actor-b", ONLINE, ttl=LONG)  # the same actor again: replaced
    assert await store.status(uid, now=time.time()) == ONLINE
    await store.dnd_set(uid, True)
    assert await store.status(uid, now=time.time()) == DND
    await store.dnd_set(uid, False)
    assert await store.status(uid, now=time.time()) == ONLINE


async def test_dnd_without_a_session_is_offline(store):
    uid = uid_new()
    await store.dnd_set(uid, True)
    assert await store.status(uid, now=time.time()) == OFFLINE


async def test_dropping_one_of_two_sessions_keeps_the_user_online(store):
    uid = uid_new()
    await store.session_set(uid, "actor-a", ONLINE, ttl=LONG)
    await store.session_set(uid, "actor-b", AWAY, ttl=LONG)
    await store.session_drop(uid, "actor-a", grace=GRACE)
    assert await store.status(uid, now=time.time()) == AWAY
    await store.session_drop(uid, "actor-b", grace=GRACE)
    assert await store.status(uid, now=time.time()) == OFFLINE


async def test_statuses_of_several_users(store):
    on, away, nobody = uid_new(), uid_new(), uid_new()
    await store.session_set(on, "a", ONLINE, ttl=LONG)
    await store.session_set(away, "b", AWAY, ttl=LONG)
    got = await store.statuses([on, away, nobody], now=time.time())
    assert got == {on: ONLINE, away: AWAY, nobody: OFFLINE}


# --- sweeping: grace and expiry ---------------------------------------------------------------


async def test_grace_check_comes_due_only_after_the_grace_period_and_once(store):
    uid = uid_new()
    await store.session_set(uid, "actor-a", ONLINE, ttl=LONG)
    await store.session_drop(uid, "actor-a", grace=GRACE)
    now = time.time()
    assert await store.sweep(now=now) == set()
    assert await store.sweep(now=now + GRACE - 1) == set()
    assert await store.sweep(now=now + GRACE + 1) == {uid}
    assert await store.sweep(now=now + GRACE + 2) == set()


async def test_a_new_session_within_the_grace_leaves_nothing_to_announce(store):
    """A reconnect within the grace: the check still comes due, finds the user
    online as announced, and nothing flaps."""
    uid = uid_new()
    await store.session_set(uid, "actor-a", ONLINE, ttl=LONG)
    assert await store.announce(uid, ONLINE) is True
    await store.session_drop(uid, "actor-a", grace=GRACE)
    await store.session_set(uid, "actor-b", ONLINE, ttl=LONG)
    now = time.time()
    assert await store.status(uid, now=now) == ONLINE
    for uid_due in await store.sweep(now=now + GRACE + 1):
        assert await store.announce(uid_due, await store.status(uid_due, now=now + GRACE + 1)) is False
    assert await store.sweep(now=now + GRACE + 2) == set()


async def test_a_refresh_does_not_cancel_the_check_after_another_session_ended(store):
    """Away phone, online laptop; the laptop ends and the phone refreshes within
    the grace: the check must still come, and find the user away."""
    uid = uid_new()
    await store.session_set(uid, "phone", AWAY, ttl=LONG)
    await store.session_set(uid, "laptop", ONLINE, ttl=LONG)
    await store.session_drop(uid, "laptop", grace=GRACE)
    await store.session_set(uid, "phone", AWAY, ttl=LONG)  # the phone's heartbeat refresh
    now = time.time()
    assert await store.sweep(now=now + GRACE + 1) == {uid}
    assert await store.status(uid, now=now + GRACE + 1) == AWAY


async def test_an_expired_session_is_swept_once_and_removed(store):
    """The session of a process that died: not refreshed, taken over once."""
    dead, alive = uid_new(), uid_new()
    await store.session_set(dead, "actor-dead", ONLINE, ttl=10)
    await store.session_set(alive, "actor-alive", ONLINE, ttl=LONG)
    now = time.time()
    assert await store.sweep(now=now + 5) == set()
    assert await store.sweep(now=now + 11) == {dead}
    assert await store.sweep(now=now + 12) == set()
    # Removed, not only ignored: it no longer counts even at an earlier time.
    assert await store.status(dead, now=now) == OFFLINE
    assert await store.status(alive, now=now + 11) == ONLINE


async def test_a_refresh_pushes_the_expiry_back(store):
    uid = uid_new()
    await store.session_set(uid, "actor-a", ONLINE, ttl=10)
    await store.session_set(uid, "actor-a", ONLINE, ttl=LONG)
    assert await store.sweep(now=time.time() + 11) == set()
    assert await store.status(uid, now=time.time() + 11) == ONLINE


# --- announcing ----------------------------------------------------------------------------------


async def test_announce_only_on_a_real_change(store):
    uid = uid_new()
    assert await store.announce(uid, OFFLINE) is False  # nothing announced yet counts as offline
    assert await store.announce(uid, ONLINE) is True
    assert await store.announce(uid, ONLINE) is False
    assert await store.announce(uid, AWAY) is True
    assert await store.announce(uid, OFFLINE) is True
    assert await store.announce(uid, OFFLINE) is False
    other = uid_new()
    assert await store.announce(other, ONLINE) is True  # per user


# --- typing ----------------------------------------------------------------------------------------


async def test_typing_start_throttle_and_expiry(store):
    uid, channel = uid_new(), "topic:room"
    t = time.time()
    first = await store.typing(uid, channel, "start", now=t)
    assert first.forward is True and first.stop_due == t + TYPING_EXPIRY
    again = await store.typing(uid, channel, "start", now=t + 1)
    assert again.forward is False and again.stop_due == t + 1 + TYPING_EXPIRY
    later = await store.typing(uid, channel, "start", now=t + 2.5)
    assert later.forward is True
    # Another channel of the same user is throttled on its own.
    assert (await store.typing(uid, "topic:other", "start", now=t + 1)).forward is True

    # The stop is due 6 s after the last start (t + 2.5), not after the first.
    assert await store.typing_due(now=t + 7) == [(uid, "topic:other")]
    assert await store.typing_due(now=t + 8) == []
    assert await store.typing_due(now=t + 9) == [(uid, channel)]
    assert await store.typing_due(now=t + 20) == []


async def test_a_stop_is_forwarded_only_after_a_start_and_cancels_the_automatic_stop(store):
    uid, channel = uid_new(), "dm:1:2"
    t = time.time()
    assert (await store.typing(uid, channel, "stop", now=t)).forward is False
    assert (await store.typing(uid, channel, "start", now=t)).forward is True
    stop = await store.typing(uid, channel, "stop", now=t + 1)
    assert stop.forward is True and stop.stop_due is None
    assert await store.typing_due(now=t + 30) == []
    assert (await store.typing(uid, channel, "stop", now=t + 2)).forward is False


async def test_after_the_automatic_stop_the_next_start_is_forwarded(store):
    uid, channel = uid_new(), "topic:room"
    t = time.time()
    await store.typing(uid, channel, "start", now=t)
    assert await store.typing_due(now=t + TYPING_EXPIRY) == [(uid, channel)]
    assert (await store.typing(uid, channel, "stop", now=t + 6.5)).forward is False  # nothing pending
    assert (await store.typing(uid, channel, "start", now=t + 7)).forward is True


# --- last seen ----------------------------------------------------------------------------------------


async def test_last_seen_due_once_a_minute_per_user(store):
    uid, other = uid_new(), uid_new()
    assert await store.last_seen_due(uid) is True
    assert await store.last_seen_due(uid) is False
    assert await store.last_seen_due(other) is True
    # A minute later it is due again.
    if isinstance(store, MemoryPresenceStore):
        store.ls[uid] -= 60
    else:
        ttl = await store.redis.ttl(f"{store.p}:ls:{uid}")
        assert 0 < ttl <= 60
        await store.redis.delete(f"{store.p}:ls:{uid}")  # what its expiry does after 60 s
    assert await store.last_seen_due(uid) is True
    assert await store.last_seen_due(uid) is False


# --- a session's start ---------------------------------------------------------------------------------


async def test_enter_sets_the_session_and_answers_last_seen_due_and_the_status(store):
    uid = uid_new()
    now = time.time()
    assert await store.enter(uid, "actor-a", AWAY, ttl=LONG, now=now) == (True, AWAY)
    # The second session: last_seen was just due; the aggregate counts both.
    assert await store.enter(uid, "actor-b", ONLINE, ttl=LONG, now=now) == (False, ONLINE)
    assert await store.status(uid, now=now) == ONLINE
    # Each entered session expires like one set by `session_set`.
    assert await store.status(uid, now=now + LONG + 1) == OFFLINE
    assert await store.sweep(now=now + LONG + 1) == {uid}


async def test_enter_of_a_user_who_chose_dnd_is_dnd(store):
    uid = uid_new()
    await store.dnd_set(uid, True)
    assert await store.enter(uid, "actor-a", ONLINE, ttl=LONG, now=time.time()) == (True, DND)


async def test_enters_and_announces_of_the_same_moment_each_get_their_own_answer(store):
    """(The Redis store runs them in one pipeline each.)"""
    ann, bob = uid_new(), uid_new()
    await store.dnd_set(bob, True)
    now = time.time()
    entered = await asyncio.gather(
        store.enter(ann, "actor-a", AWAY, ttl=LONG, now=now),
        store.enter(bob, "actor-a", ONLINE, ttl=LONG, now=now),
        store.enter(ann, "actor-b", AWAY, ttl=LONG, now=now),
    )
    assert entered == [(True, AWAY), (True, DND), (False, AWAY)]
    announced = await asyncio.gather(store.announce(ann, AWAY), store.announce(bob, DND), store.announce(ann, AWAY))
    assert announced == [True, True, False]
