"""Presence and typing state in Redis (or in memory when embedded), with expiry.

Redis keys (prefix `chat:p`):
    s:<uid>   hash  actor -> "status|expires_at"   a user's live sessions
    d:<uid>   string                                the user chose dnd
    due       zset  "uid|actor" by expires_at       sessions to sweep if not refreshed
    gone      zset  uid by when to check            offline after the grace period
    last      hash  uid -> status                   the status last announced
    ty        hash  "uid|channel" -> forwarded_at   typing throttle
    tydue     zset  "uid|channel" by stop time      automatic typing stops

Every process sweeps `due`, `gone` and `tydue`; a ZREM decides which process
handles an entry, so each change is announced once, also when the process
that held a session died.
"""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings

from realtime.batching import LoopBatcher
from realtime.redis_clients import LoopRedis

from . import rules

_ANNOUNCE = """
local old = redis.call('HGET', KEYS[1], ARGV[1]) or 'offline'
if old == ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


def _sessions(raw: dict[bytes, bytes]) -> dict[str, tuple[str, float]]:
    """A user's `s:<uid>` hash as `presence_aggregate` takes it."""
    sessions = {}
    for actor, value in raw.items():
        status, _, expires = value.decode().partition("|")
        sessions[actor.decode()] = (status, float(expires))
    return sessions


class RedisPresenceStore:
    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.p = f"{prefix}:p"
        self._redis = LoopRedis(url, max_connections=256)
        # The sessions of a connect burst: one pipeline each, not a round trip per session.
        self._entering = LoopBatcher(self._enter_many, in_thread=False)
        self._announcing = LoopBatcher(self._announce_many, in_thread=False)

    @property
    def redis(self) -> Any:
        return self._redis.client()

    async def session_set(self, uid: int, actor: str, status: str, *, ttl: float) -> None:
        expires = time.time() + ttl
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(f"{self.p}:s:{uid}", actor, f"{status}|{expires}")
            pipe.zadd(f"{self.p}:due", {f"{uid}|{actor}": expires})
            # The `gone` check stays: another session's end may still change
            # the aggregate (online -> away); a reconnect just finds it unchanged.
            await pipe.execute()

    async def enter(self, uid: int, actor: str, status: str, *, ttl: float, now: float) -> tuple[bool, str]:
        """A session's start: `session_set`, then whether last_seen is due
        (`last_seen_due`) and the user's status (`status`). One transaction
        for the sessions that start at the same moment (one round trip)."""
        return await self._entering.submit((uid, actor, status, ttl, now))

    async def _enter_many(self, items: list[tuple[int, str, str, float, float]]) -> list[tuple[bool, str]]:
        async with self.redis.pipeline(transaction=True) as pipe:
            for uid, actor, status, ttl, now in items:
                expires = now + ttl
                pipe.hset(f"{self.p}:s:{uid}", actor, f"{status}|{expires}")
                pipe.zadd(f"{self.p}:due", {f"{uid}|{actor}": expires})
                pipe.set(f"{self.p}:ls:{uid}", 1, nx=True, ex=60)
                pipe.hgetall(f"{self.p}:s:{uid}")
                pipe.exists(f"{self.p}:d:{uid}")
            results = await pipe.execute()
        out = []
        for i, (_, _, _, _, now) in enumerate(items):
            _, _, due, raw, dnd = results[5 * i : 5 * i + 5]
            out.append((bool(due), rules.presence_aggregate(sessions=_sessions(raw), dnd=bool(dnd), now=now)))
        return out

    async def session_drop(self, uid: int, actor: str, *, grace: float) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(f"{self.p}:s:{uid}", actor)
            pipe.zrem(f"{self.p}:due", f"{uid}|{actor}")
            pipe.zadd(f"{self.p}:gone", {str(uid): time.time() + grace})
            await pipe.execute()

    async def dnd_set(self, uid: int, on: bool) -> None:
        if on:
            await self.redis.set(f"{self.p}:d:{uid}", 1)
        else:
            await self.redis.delete(f"{self.p}:d:{uid}")

    async def status(self, uid: int, *, now: float) -> str:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(f"{self.p}:s:{uid}")
            pipe.exists(f"{self.p}:d:{uid}")
            raw, dnd = await pipe.execute()
        return rules.presence_aggregate(sessions=_sessions(raw), dnd=bool(dnd), now=now)

    async def statuses(self, uids: list[int], *, now: float) -> dict[int, str]:
        return {uid: await self.status(uid, now=now) for uid in uids}

    async def announce(self, uid: int, status: str) -> bool:
        """Record the announced status; True when it differs from the last one.
        Those of the same moment share one pipeline."""
        return await self._announcing.submit((uid, status))

    async def _announce_many(self, items: list[tuple[int, str]]) -> list[bool | BaseException]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for uid, status in items:
                pipe.eval(_ANNOUNCE, 1, f"{self.p}:last", uid, status)
            results = await pipe.execute(raise_on_error=False)
        return [r if isinstance(r, BaseException) else bool(r) for r in results]

    async def sweep(self, *, now: float) -> set[int]:
        """Users whose expired sessions or grace periods this process takes over."""
        uids: set[int] = set()
        for member in await self.redis.zrangebyscore(f"{self.p}:due", 0, now, start=0, num=500):
            if await self.redis.zrem(f"{self.p}:due", member):
                uid, _, actor = member.decode().partition("|")
                await self.redis.hdel(f"{self.p}:s:{uid}", actor)
                uids.add(int(uid))
        for member in await self.redis.zrangebyscore(f"{self.p}:gone", 0, now, start=0, num=500):
            if await self.redis.zrem(f"{self.p}:gone", member):
                uids.add(int(member))
        return uids

    async def typing(self, uid: int, channel: str, state: str, *, now: float) -> rules.TypingDecision:
        key = f"{uid}|{channel}"
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(f"{self.p}:ty", key)
            pipe.zscore(f"{self.p}:tydue", key)
            last, pending = await pipe.execute()
        decision = rules.typing_decide(
            state=state, now=now, last_forwarded=float(last) if last else None, pending=pending is not None
        )
        async with self.redis.pipeline(transaction=True) as pipe:
            if decision.stop_due is not None:
                pipe.zadd(f"{self.p}:tydue", {key: decision.stop_due})
                if decision.forward:
                    pipe.hset(f"{self.p}:ty", key, now)
            else:
                pipe.zrem(f"{self.p}:tydue", key)
                pipe.hdel(f"{self.p}:ty", key)
            await pipe.execute()
        return decision

    async def typing_due(self, *, now: float) -> list[tuple[int, str]]:
        """Typing starts that expired; each is returned to exactly one process."""
        expired = []
        for member in await self.redis.zrangebyscore(f"{self.p}:tydue", 0, now, start=0, num=500):
            if await self.redis.zrem(f"{self.p}:tydue", member):
                await self.redis.hdel(f"{self.p}:ty", member)
                uid, _, channel = member.decode().partition("|")
                expired.append((int(uid), channel))
        return expired

    async def last_seen_due(self, uid: int) -> bool:
        """At most once a minute per user (across processes)."""
        return bool(await self.redis.set(f"{self.p}:ls:{uid}", 1, nx=True, ex=60))


class MemoryPresenceStore:
    """The same contract in one process (the embedded default)."""

    def __init__(self) -> None:
        self.sessions: dict[int, dict[str, tuple[str, float]]] = {}
        self.dnd: set[int] = set()
        self.gone: dict[int, float] = {}
        self.last: dict[int, str] = {}
        self.ty: dict[str, float] = {}
        self.tydue: dict[str, float] = {}
        self.ls: dict[int, float] = {}

    async def session_set(self, uid: int, actor: str, status: str, *, ttl: float) -> None:
        self.sessions.setdefault(uid, {})[actor] = (status, time.time() + ttl)

    async def enter(self, uid: int, actor: str, status: str, *, ttl: float, now: float) -> tuple[bool, str]:
        self.sessions.setdefault(uid, {})[actor] = (status, now + ttl)
        return await self.last_seen_due(uid), await self.status(uid, now=now)

    async def session_drop(self, uid: int, actor: str, *, grace: float) -> None:
        self.sessions.get(uid, {}).pop(actor, None)
        self.gone[uid] = time.time() + grace

    async def dnd_set(self, uid: int, on: bool) -> None:
        (self.dnd.add if on else self.dnd.discard)(uid)

    async def status(self, uid: int, *, now: float) -> str:
        return rules.presence_aggregate(sessions=self.sessions.get(uid, {}), dnd=uid in self.dnd, now=now)

    async def statuses(self, uids: list[int], *, now: float) -> dict[int, str]:
        return {uid: await self.status(uid, now=now) for uid in uids}

    async def announce(self, uid: int, status: str) -> bool:
        if self.last.get(uid, rules.OFFLINE) == status:
            return False
        self.last[uid] = status
        return True

    async def sweep(self, *, now: float) -> set[int]:
        uids = set()
        for uid, sessions in self.sessions.items():
            for actor, (_, expires) in list(sessions.items()):
                if expires <= now:
                    del sessions[actor]
                    uids.add(uid)
        for uid, due in list(self.gone.items()):
            if due <= now:
                del self.gone[uid]
                uids.add(uid)
        return uids

    async def typing(self, uid: int, channel: str, state: str, *, now: float) -> rules.TypingDecision:
        key = f"{uid}|{channel}"
        decision = rules.typing_decide(state=state, now=now, last_forwarded=self.ty.get(key), pending=key in self.tydue)
        if decision.stop_due is not None:
            self.tydue[key] = decision.stop_due
            if decision.forward:
                self.ty[key] = now
        else:
            self.tydue.pop(key, None)
            self.ty.pop(key, None)
        return decision

    async def typing_due(self, *, now: float) -> list[tuple[int, str]]:
        expired = []
        for key, due in list(self.tydue.items()):
            if due <= now:
                del self.tydue[key]
                self.ty.pop(key, None)
                uid, _, channel = key.partition("|")
                expired.append((int(uid), channel))
        return expired

    async def last_seen_due(self, uid: int) -> bool:
        now = time.time()
        if rules.last_seen_due(last_written=self.ls.get(uid), now=now):
            self.ls[uid] = now
            return True
        return False


_store: list[Any] = []


def presence_store() -> Any:
    if not _store:
        url = settings.REDIS_URL
        _store.append(RedisPresenceStore(url, settings.CHAT["STORE_PREFIX"]) if url else MemoryPresenceStore())
    return _store[0]
