"""The session store's contract, held by both the Redis and the in-memory store."""

import asyncio
import itertools
import uuid

import pytest
import redis
from django.conf import settings

from realtime.store import MemorySessionStore, RedisSessionStore

LONG = 60.0  # a ttl no test outlives
SHORT = 0.3  # a ttl the test waits out
PAST_SHORT = 0.5

_sids = itertools.count(1)


def sid_new() -> str:
    return f"s_test{next(_sids)}"


@pytest.fixture(params=["redis", "memory"])
async def store(request):
    if request.param == "memory":
        yield MemorySessionStore()
        return
    if not settings.REDIS_URL:
        pytest.skip("REDIS_URL is not set")
    # A prefix of its own: keys of the app and of other tests stay apart.
    redis_store = RedisSessionStore(settings.REDIS_URL, prefix=f"test-{uuid.uuid4().hex}")
    try:
        yield redis_store
    finally:
        client = redis_store.redis
        keys = [key async for key in client.scan_iter(match=f"{redis_store.prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


# --- sessions ------------------------------------------------------------------------


async def test_create_then_load_round_trips(store):
    sid = sid_new()
    await store.create(sid, user_id=7, owner="actor-a", ttl=LONG)
    state = await store.load(sid)
    assert state is not None
    assert state.user_id == 7
    assert state.owner == "actor-a"
    assert state.topics == []
    assert state.acked == {}
    assert state.created > 0


async def test_load_of_unknown_session_is_none(store):
    assert await store.load("s_nobody") is None


async def test_claim_returns_the_previous_owner_and_sets_the_new_one(store):
    sid = sid_new()
    await store.create(sid, user_id=1, owner="actor-a", ttl=LONG)
    assert await store.claim(sid, owner="actor-b", ttl=LONG) == "actor-a"
    assert (await store.load(sid)).owner == "actor-b"
    assert await store.claim(sid, owner="actor-c", ttl=LONG) == "actor-b"
    assert (await store.load(sid)).owner == "actor-c"


async def test_claim_of_a_released_session_returns_no_owner(store):
    sid = sid_new()
    await store.create(sid, user_id=1, owner="actor-a", ttl=LONG)
    await store.release(sid, owner="actor-a", ttl=LONG)
    assert await store.claim(sid, owner="actor-b", ttl=LONG) == ""
    assert (await store.load(sid)).owner == "actor-b"


async def test_release_by_the_owner_detaches_and_shortens_the_ttl(store):
    sid = sid_new()
    await store.create(sid, user_id=1, owner="actor-a", ttl=LONG)
    await store.release(sid, owner="actor-a", ttl=SHORT)
    state = await store.load(sid)
    assert state is not None and state.owner == ""
    await asyncio.sleep(PAST_SHORT)
    assert await store.load(sid) is None


async def test_release_by_a_former_owner_changes_nothing(store):
    sid = sid_new()
    await store.create(sid, user_id=1, owner="actor-a", ttl=LONG)
    await store.claim(sid, owner="actor-b", ttl=LONG)
    # A's late disconnect must neither detach B nor cut the session's life short.
    await store.release(sid, owner="actor-a", ttl=SHORT)
    assert (await store.load(sid)).owner == "actor-b"
    await asyncio.sleep(PAST_SHORT)
    state = await store.load(sid)
    assert state is not None and state.owner == "actor-b"


async def test_ack_keeps_the_highest_per_channel(store):
    sid = sid_new()
    await store.create(sid, user_id=1, owner="actor-a", ttl=LONG)
    await store.ack(sid, "topic:a", 5)
    await store.ack(sid, "topic:a", 3)
    await store.ack(sid, "dm:1:2", 0)
    await store.ack(sid, "dm:1:2", 2)
    assert (await store.load(sid)).acked == {"topic:a": 5, "dm:1:2": 2}
    await store.ack(sid, "topic:a", 6)
    assert (await store.load(sid)).acked["topic:a"] == 6


async def test_ack_of_a_missing_session_creates_nothing(store):
    sid = sid_new()
    await store.ack(sid, "topic:a", 5)
    assert await store.load(sid) is None
    # Nothing half-made is left behind for a later session of that id either.
    await store.create(sid, user_id=1, owner="actor-a", ttl=LONG)
    assert (await store.load(sid)).acked == {}


async def test_topics_set_replaces_the_topics(store):
    sid = sid_new()
    await store.create(sid, user_id=1, owner="actor-a", ttl=LONG)
    await store.topics_set(sid, ["topic:a", "topic:b"])
    assert (await store.load(sid)).topics == ["topic:a", "topic:b"]
    await store.topics_set(sid, ["topic:b"])
    state = await store.load(sid)
    assert state.topics == ["topic:b"]
    assert state.user_id == 1 and state.owner == "actor-a"  # the rest is kept


async def test_a_session_expires_after_its_ttl(store):
    sid, other = sid_new(), sid_new()
    await store.create(sid, user_id=1, owner="actor-a", ttl=SHORT)
    await store.create(other, user_id=1, owner="actor-b", ttl=LONG)
    assert await store.load(sid) is not None
    await asyncio.sleep(PAST_SHORT)
    assert await store.load(sid) is None
    assert await store.load(other) is not None


async def test_touch_extends_the_life(store):
    sid = sid_new()
    await store.create(sid, user_id=1, owner="actor-a", ttl=SHORT)
    await store.touch(sid, ttl=LONG)
    await asyncio.sleep(PAST_SHORT)
    assert await store.load(sid) is not None


async def test_claim_extends_the_life(store):
    sid = sid_new()
    await store.create(sid, user_id=1, owner="actor-a", ttl=SHORT)
    await store.claim(sid, owner="actor-b", ttl=LONG)
    await asyncio.sleep(PAST_SHORT)
    assert (await store.load(sid)).owner == "actor-b"


# --- live sessions per user ------------------------------------------------------------


async def test_user_enter_admits_up_to_the_limit(store):
    assert await store.user_enter(1, "a", limit=2, ttl=LONG)
    assert await store.user_enter(1, "b", limit=2, ttl=LONG)
    assert not await store.user_enter(1, "c", limit=2, ttl=LONG)
    # A member already in (a refresh) is admitted again; other users are apart.
    assert await store.user_enter(1, "a", limit=2, ttl=LONG)
    assert await store.user_enter(2, "c", limit=2, ttl=LONG)
    assert not await store.user_enter(1, "c", limit=2, ttl=LONG)


async def test_user_enters_of_the_same_moment_each_get_their_own_answer(store):
    """(The Redis store runs them in one pipeline, in order.)"""
    answers = await asyncio.gather(
        store.user_enter(1, "a", limit=2, ttl=LONG),
        store.user_enter(1, "b", limit=2, ttl=LONG),
        store.user_enter(1, "c", limit=2, ttl=LONG),
        store.user_enter(2, "c", limit=2, ttl=LONG),
        store.user_enter(1, "a", limit=2, ttl=LONG),
    )
    assert answers == [True, True, False, True, True]


@pytest.mark.parametrize("store", ["redis"], indirect=True)  # only Redis fails one command of a pipeline
async def test_a_failing_user_enter_fails_only_its_caller(store):
    # A key of the wrong type makes the script fail for that user only.
    await store.redis.set(store._u(7), "not a sorted set")
    outcomes = await asyncio.gather(
        store.user_enter(7, "a", limit=2, ttl=LONG), store.user_enter(8, "a", limit=2, ttl=LONG), return_exceptions=True
    )
    assert isinstance(outcomes[0], Exception)
    assert outcomes[1] is True


async def test_touches_of_the_same_moment_each_push_their_expiry_back(store):
    sids = [sid_new() for _ in range(4)]
    for sid in sids:
        await store.create(sid, user_id=1, owner="actor-a", ttl=SHORT)
    await asyncio.gather(*(store.touch(sid, ttl=LONG) for sid in sids))
    await asyncio.sleep(PAST_SHORT)
    assert [await store.load(sid) is not None for sid in sids] == [True] * 4


async def test_user_leave_makes_room(store):
    assert await store.user_enter(1, "a", limit=2, ttl=LONG)
    assert await store.user_enter(1, "b", limit=2, ttl=LONG)
    assert not await store.user_enter(1, "c", limit=2, ttl=LONG)
    await store.user_leave(1, "a")
    assert await store.user_enter(1, "c", limit=2, ttl=LONG)
    assert not await store.user_enter(1, "a", limit=2, ttl=LONG)


async def test_user_leave_of_unknown_member_is_harmless(store):
    await store.user_leave(5, "nobody")
    assert await store.user_enter(5, "a", limit=1, ttl=LONG)
    await store.user_leave(5, "nobody")
    assert not await store.user_enter(5, "b", limit=1, ttl=LONG)


async def test_user_entries_expire_after_their_ttl(store):
    assert await store.user_enter(1, "a", limit=2, ttl=SHORT)
    assert await store.user_enter(1, "b", limit=2, ttl=LONG)
    assert not await store.user_enter(1, "c", limit=2, ttl=LONG)
    await asyncio.sleep(PAST_SHORT)
    # "a" was never refreshed (a crashed process): its place is free again.
    assert await store.user_enter(1, "c", limit=2, ttl=LONG)
    assert not await store.user_enter(1, "d", limit=2, ttl=LONG)


# --- a new session's start in one call -------------------------------------------------------


async def test_enter_create_admits_and_creates_the_session(store):
    sid = sid_new()
    assert await store.enter_create(sid, user_id=7, owner="actor-a", limit=2, ttl=LONG)
    state = await store.load(sid)
    assert (state.user_id, state.owner, state.topics, state.acked) == (7, "actor-a", [], {})
    # It counts towards the user's limit like `user_enter`...
    assert await store.user_enter(7, "actor-b", limit=2, ttl=LONG)
    assert not await store.user_enter(7, "actor-c", limit=2, ttl=LONG)
    # ...and leaves like it.
    await store.user_leave(7, "actor-a")
    assert await store.user_enter(7, "actor-c", limit=2, ttl=LONG)


async def test_enter_create_over_the_limit_creates_nothing(store):
    assert await store.user_enter(8, "actor-a", limit=1, ttl=LONG)
    sid = sid_new()
    assert not await store.enter_create(sid, user_id=8, owner="actor-b", limit=1, ttl=LONG)
    assert await store.load(sid) is None


async def test_a_session_from_enter_create_expires_after_its_ttl(store):
    sid = sid_new()
    assert await store.enter_create(sid, user_id=9, owner="actor-a", limit=2, ttl=SHORT)
    assert await store.load(sid) is not None
    await asyncio.sleep(PAST_SHORT)
    assert await store.load(sid) is None
    # The user's entry expired with it: its place is free.
    assert await store.user_enter(9, "actor-b", limit=1, ttl=LONG)


async def test_enter_creates_of_the_same_moment_each_get_their_own_answer(store):
    """(The Redis store runs them in one pipeline.) The limit counts in order."""
    sids = [sid_new() for _ in range(3)]
    admitted = await asyncio.gather(
        *(store.enter_create(sid, user_id=10, owner=f"actor-{i}", limit=2, ttl=LONG) for i, sid in enumerate(sids))
    )
    assert admitted == [True, True, False]
    assert [await store.load(sid) is not None for sid in sids] == [True, True, False]


async def test_acks_made_together_go_in_one_pipeline_each_error_to_its_caller():
    """Acks of many sessions asked for at once: one pipeline; a session key
    that is not a hash (a broken key) fails only its own ack."""
    if not settings.REDIS_URL:
        pytest.skip("REDIS_URL is not set")
    store = RedisSessionStore(settings.REDIS_URL, prefix=f"test-{uuid.uuid4().hex}")
    client = store.redis
    try:
        sids = [sid_new() for _ in range(5)]
        for sid in sids:
            await store.create(sid, user_id=1, owner="actor-a", ttl=LONG)
        broken = sid_new()
        await client.set(store._s(broken), "not a hash")
        pipeline = store._acking.for_loop()
        before = pipeline.batches
        outcomes = await asyncio.gather(
            *(store.ack(sid, "topic:a", i + 1) for i, sid in enumerate(sids)),
            store.ack(broken, "topic:a", 9),
            return_exceptions=True,
        )
        assert pipeline.batches - before == 1
        assert outcomes[:5] == [None] * 5
        assert isinstance(outcomes[5], redis.exceptions.ResponseError)
        assert [(await store.load(sid)).acked for sid in sids] == [{"topic:a": i + 1} for i in range(5)]
        await store.ack(sids[0], "topic:a", 7)  # the next batch runs
        assert (await store.load(sids[0])).acked == {"topic:a": 7}
    finally:
        keys = [key async for key in client.scan_iter(match=f"{store.prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def test_a_failed_ack_pipeline_fails_every_ack_of_its_batch():
    """No Redis listening: each caller of the batch hears the connection error."""
    store = RedisSessionStore("redis://127.0.0.1:1/0", prefix="unreachable")
    acks = [store.ack("s1", "topic:a", 1), store.ack("s2", "topic:a", 2)]
    outcomes = await asyncio.gather(*acks, return_exceptions=True)
    assert [type(o) for o in outcomes] == [redis.exceptions.ConnectionError] * 2
    assert store._acking.for_loop().batches == 1
    await store.redis.aclose()
