"""Idle sessions on the Redis layer survive well past any socket timeout.

channels-redis receives with a blocking BZPOPMIN of 5 s; a Redis socket
timeout at or below that (redis-py 8's default is 5 s) makes idle receives
fail with TimeoutError and kills the sessions' actors. Here 20 sessions only
ping, as a quiet client would, for 70 s, and must then still be open and
still receive their direct messages.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from .client import SessionPool, WsSession, ok_of
from .flows import dm_name
from .servers import Server

pytestmark = pytest.mark.e2e

USERS = 10
SESSIONS_PER_USER = 2
HOLD = 70.0
PING_EVERY = 20.0


async def _ping_until(session: WsSession, deadline: float) -> int:
    """Ping every PING_EVERY seconds until the deadline; count the pongs."""
    pongs = 0
    while (left := deadline - time.monotonic()) > 0:
        await asyncio.sleep(min(PING_EVERY, left))
        if time.monotonic() < deadline:
            pong = await session.request({"type": "ping"})
            assert pong["type"] == "pong", pong
            pongs += 1
    return pongs


async def test_idle_sessions_stay_open_and_receive(services_server: Server) -> None:
    api = services_server.api
    sender, *users = api.new_users(USERS + 1, "idle")
    async with SessionPool() as pool:
        sessions = [await pool.open(services_server.ws_url, user) for user in users for _ in range(SESSIONS_PER_USER)]
        assert all(s.welcome["heartbeat"] == 25 for s in sessions), "the ping interval below assumes 25 s"
        announcer = await pool.open(services_server.ws_url, sender)

        deadline = time.monotonic() + HOLD
        pongs = await asyncio.gather(*(_ping_until(s, deadline) for s in sessions + [announcer]))
        assert all(n == int(HOLD // PING_EVERY) for n in pongs), pongs

        closed = [(s.user_id, s.close_code) for s in sessions if not s.is_open]
        assert not closed, f"sessions closed while idle: {closed}"
        assert all(not s.events for s in sessions), "idle sessions got unexpected frames"

        for user in users:
            await ok_of(announcer, {"type": "direct", "to": user.id, "body": f"still there, {user.username}?"})
        for user, session in zip([u for u in users for _ in range(SESSIONS_PER_USER)], sessions, strict=True):
            [message] = await session.expect_messages(dm_name(sender, user), 1)
            assert message["body"] == f"still there, {user.username}?", message
