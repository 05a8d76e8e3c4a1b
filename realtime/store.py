"""Session state that outlives a socket: in Redis, or in memory when embedded.

Per session: its user, creation time, the topics it subscribed, the
positions it acknowledged per channel (`received`), and the channel name of
the actor that holds it now (`owner`, empty while no socket is attached).
Live sessions keep their key alive; a dropped one keeps it for
`resume_window` seconds, so any server process can resume it.

Per user: the live sessions, to cap connections per user.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Protocol

from django.conf import settings

from .batching import LoopBatcher
from .redis_clients import LoopRedis


@dataclass(slots=True)
class SessionState:
    user_id: int
    created: float
    owner: str = ""
    topics: list[str] = field(default_factory=list)
    acked: dict[str, int] = field(default_factory=dict)


class SessionStore(Protocol):
    async def create(self, sid: str, *, user_id: int, owner: str, ttl: float) -> None: ...
    async def load(self, sid: str) -> SessionState | None: ...
    async def claim(self, sid: str, *, owner: str, ttl: float) -> str: ...
    async def release(self, sid: str, *, owner: str, ttl: float) -> None: ...
    async def touch(self, sid: str, *, ttl: float) -> None: ...
    async def topics_set(self, sid: str, topics: list[str]) -> None: ...
    async def ack(self, sid: str, channel: str, seq: int) -> None: ...
    async def ack_forget(self, sid: str, channel: str) -> None: ...
    async def user_enter(self, user_id: int, sid: str, *, limit: int, ttl: float) -> bool: ...
    async def user_leave(self, user_id: int, sid: str) -> None: ...
    async def enter_create(self, sid: str, *, user_id: int, owner: str, limit: int, ttl: float) -> bool: ...


# --- Redis ----------------------------------------------------------------------

_ACK = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 1 and (not cur or tonumber(cur) < tonumber(ARGV[2])) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
"""
_SET_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
"""
# Only the actor that owns the session may detach it: a session resumed
# elsewhere meanwhile keeps its new owner.
_RELEASE = """
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'owner', '')
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
"""
# Drop expired entries, then admit while under the limit.
_ADMIT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) == false and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
"""
_ENTER = _ADMIT + "return 1"
# Admitted, then `create` of session KEYS[2] (owner ARGV[1]): a new session's
# start in one round trip; a refused one creates nothing.
_ENTER_CREATE = (
    _ADMIT
    + """
redis.call('HSET', KEYS[2], 'user', ARGV[6], 'created', ARGV[7], 'owner', ARGV[1], 'topics', '[]')
redis.call('PEXPIRE', KEYS[2], ARGV[8])
return 1
"""
)


class RedisSessionStore:
    """Hash `chat:s:<sid>` (user, created, owner, topics, a:<channel>) and
    sorted set `chat:u:<uid>` of the live sessions' actors (channel-layer
    names, one per socket) scored by expiry."""

    def __init__(self, url: str, prefix: str = "chat") -> None:
        self.url = url
        self.prefix = prefix
        self._redis = LoopRedis(url, max_connections=512)
        # The new sessions of a connect burst: one pipeline, not a round trip each.
        self._entering = LoopBatcher(self._enter_create_many, in_thread=False)
        # The keep-alives of the moment (hundreds a second with 10,000
        # sessions): one pipeline each kind, not a pool connection per session.
        self._touching = LoopBatcher(self._touch_many, in_thread=False)
        self._user_entering = LoopBatcher(self._user_enter_many, in_thread=False)
        # The resume points written while the previous ones are on their way:
        # one pipeline, each `received`'s error its own caller's.
        self._acking = LoopBatcher(self._ack_many, in_thread=False)

    @property
    def redis(self):  # type: ignore[no-untyped-def]
        return self._redis.client()

    def _s(self, sid: str) -> str:
        return f"{self.prefix}:s:{sid}"

    def _u(self, user_id: int) -> str:
        return f"{self.prefix}:u:{user_id}"

    async def create(self, sid: str, *, user_id: int, owner: str, ttl: float) -> None:
        key = self._s(sid)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"user": user_id, "created": time.time(), "owner": owner, "topics": "[]"})
            pipe.pexpire(key, int(ttl * 1000))
            await pipe.execute()

    async def load(self, sid: str) -> SessionState | None:
        raw = await self.redis.hgetall(self._s(sid))
        if not raw or b"user" not in raw:
            return None
        acked = {k[2:].decode(): int(v) for k, v in raw.items() if k.startswith(b"a:")}
        return SessionState(
            user_id=int(raw[b"user"]),
            created=float(raw[b"created"]),
            owner=raw.get(b"owner", b"").decode(),
            topics=json.loads(raw.get(b"topics", b"[]")),
            acked=acked,
        )

    async def claim(self, sid: str, *, owner: str, ttl: float) -> str:
        key = self._s(sid)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hget(key, "owner")
            pipe.hset(key, "owner", owner)
            pipe.pexpire(key, int(ttl * 1000))
            previous, _, _ = await pipe.execute()
        return (previous or b"").decode()

    async def release(self, sid: str, *, owner: str, ttl: float) -> None:
        await self.redis.eval(_RELEASE, 1, self._s(sid), owner, int(ttl * 1000))

    async def touch(self, sid: str, *, ttl: float) -> None:
        await self._touching.submit((sid, ttl))

    async def _touch_many(self, items: list[tuple[str, float]]) -> list[None]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for sid, ttl in items:
                pipe.pexpire(self._s(sid), int(ttl * 1000))
            await pipe.execute()
        return [None] * len(items)

    async def topics_set(self, sid: str, topics: list[str]) -> None:
        # HSET on an expired key would create one without expiry.
        await self.redis.eval(_SET_IF_EXISTS, 1, self._s(sid), "topics", json.dumps(topics))

    async def ack_forget(self, sid: str, channel: str) -> None:
        await self.redis.hdel(self._s(sid), f"a:{channel}")

    async def ack(self, sid: str, channel: str, seq: int) -> None:
        await self._acking.submit((self._s(sid), f"a:{channel}", seq))

    async def _ack_many(self, items: list[tuple[str, str, int]]) -> list[None | BaseException]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for key, field, seq in items:
                pipe.eval(_ACK, 1, key, field, seq)
            results = await pipe.execute(raise_on_error=False)
        return [r if isinstance(r, BaseException) else None for r in results]

    async def user_enter(self, user_id: int, sid: str, *, limit: int, ttl: float) -> bool:
        """Admit (or refresh) `sid` among the user's live sessions; the calls
        of the same moment share one pipeline, each with its own answer."""
        return await self._user_entering.submit((user_id, sid, limit, ttl))

    async def _user_enter_many(self, items: list[tuple[int, str, int, float]]) -> list[bool | BaseException]:
        now = time.time()
        async with self.redis.pipeline(transaction=False) as pipe:
            for user_id, sid, limit, ttl in items:
                pipe.eval(_ENTER, 1, self._u(user_id), sid, limit, now, now + ttl, int(ttl * 1000) + 1000)
            results = await pipe.execute(raise_on_error=False)
        return [r if isinstance(r, BaseException) else bool(r) for r in results]

    async def user_leave(self, user_id: int, sid: str) -> None:
        await self.redis.zrem(self._u(user_id), sid)

    async def enter_create(self, sid: str, *, user_id: int, owner: str, limit: int, ttl: float) -> bool:
        """`user_enter(user_id, owner)` and, if admitted, `create(sid)`: one
        script (nothing is created for a refused session), run in one
        pipeline with those of the other connects of the moment."""
        return await self._entering.submit((sid, user_id, owner, limit, ttl))

    async def _enter_create_many(self, items: list[tuple[str, int, str, int, float]]) -> list[bool | BaseException]:
        now = time.time()
        async with self.redis.pipeline(transaction=False) as pipe:
            for sid, user_id, owner, limit, ttl in items:
                ms = int(ttl * 1000)
                pipe.eval(
                    _ENTER_CREATE, 2, self._u(user_id), self._s(sid), owner, limit, now, now + ttl, ms + 1000,
                    user_id, repr(now), ms,
                )  # fmt: skip
            results = await pipe.execute(raise_on_error=False)
        return [r if isinstance(r, BaseException) else bool(r) for r in results]


# --- In memory (embedded default, one process) ---------------------------------------


class MemorySessionStore:
    """The same contract in one process's memory, with lazy expiry."""

    def __init__(self) -> None:
        self.sessions: dict[str, tuple[SessionState, float]] = {}
        self.users: dict[int, dict[str, float]] = {}

    def _get(self, sid: str) -> SessionState | None:
        entry = self.sessions.get(sid)
        if entry is None:
            return None
        if entry[1] < time.monotonic():
            del self.sessions[sid]
            return None
        return entry[0]

    def _expire(self, sid: str, ttl: float) -> None:
        state = self._get(sid)
        if state is not None:
            self.sessions[sid] = (state, time.monotonic() + ttl)

    async def create(self, sid: str, *, user_id: int, owner: str, ttl: float) -> None:
        self.sessions[sid] = (SessionState(user_id=user_id, created=time.time(), owner=owner), time.monotonic() + ttl)

    async def load(self, sid: str) -> SessionState | None:
        state = self._get(sid)
        if state is None:
            return None
        return SessionState(state.user_id, state.created, state.owner, list(state.topics), dict(state.acked))

    async def claim(self, sid: str, *, owner: str, ttl: float) -> str:
        state = self._get(sid)
        if state is None:
            return ""
        previous, state.owner = state.owner, owner
        self._expire(sid, ttl)
        return previous

    async def release(self, sid: str, *, owner: str, ttl: float) -> None:
        state = self._get(sid)
        if state is not None and state.owner == owner:
            state.owner = ""
            self._expire(sid, ttl)

    async def touch(self, sid: str, *, ttl: float) -> None:
        self._expire(sid, ttl)

    async def topics_set(self, sid: str, topics: list[str]) -> None:
        state = self._get(sid)
        if state is not None:
            state.topics = list(topics)

    async def ack(self, sid: str, channel: str, seq: int) -> None:
        state = self._get(sid)
        if state is not None and seq > state.acked.get(channel, -1):
            state.acked[channel] = seq

    async def ack_forget(self, sid: str, channel: str) -> None:
        state = self._get(sid)
        if state is not None:
            state.acked.pop(channel, None)

    async def user_enter(self, user_id: int, sid: str, *, limit: int, ttl: float) -> bool:
        now = time.monotonic()
        live = {s: exp for s, exp in self.users.get(user_id, {}).items() if exp > now}
        if sid not in live and len(live) >= limit:
            self.users[user_id] = live
            return False
        live[sid] = now + ttl
        self.users[user_id] = live
        return True

    async def user_leave(self, user_id: int, sid: str) -> None:
        self.users.get(user_id, {}).pop(sid, None)

    async def enter_create(self, sid: str, *, user_id: int, owner: str, limit: int, ttl: float) -> bool:
        if not await self.user_enter(user_id, owner, limit=limit, ttl=ttl):
            return False
        await self.create(sid, user_id=user_id, owner=owner, ttl=ttl)
        return True


_store: list[SessionStore] = []


def session_store() -> SessionStore:
    """The process's store, built from settings on first use."""
    if not _store:
        url = settings.REDIS_URL
        _store.append(RedisSessionStore(url, prefix=settings.CHAT["STORE_PREFIX"]) if url else MemorySessionStore())
    return _store[0]


def session_store_reset() -> None:
    """Forget the store (tests that change settings)."""
    _store.clear()
