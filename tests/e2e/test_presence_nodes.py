"""Presence and typing across two server processes, and after one is killed.

The nodes share PostgreSQL and Redis and run with short presence timings:
a session not refreshed for PRESENCE_TTL seconds counts as gone, and the
last session's end shows offline after PRESENCE_GRACE. Sessions refresh
their presence every heartbeat, so the heartbeat is shortened below the TTL
too (as the setting requires) and the clients here ping to stay open.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from .client import SessionPool, User, WsSession, ok_of
from .conftest import NodeStarter
from .flows import dm_name
from .servers import Server

pytestmark = pytest.mark.e2e

PRESENCE_TTL = 6
PRESENCE_GRACE = 1
HEARTBEAT = 2  # sessions refresh presence this often; silence for 2x closes them
PRESENCE_ENV = {
    "CHAT_PRESENCE_TTL": str(PRESENCE_TTL),
    "CHAT_PRESENCE_GRACE": str(PRESENCE_GRACE),
    "CHAT_HEARTBEAT": str(HEARTBEAT),
}
KILLED_OFFLINE_WITHIN = 15.0  # PRESENCE_TTL, one sweep and a margin


@pytest.fixture(scope="module")
def watch_node(start_node: NodeStarter) -> Server:
    """The node the watchers use; it lives for the whole module."""
    return start_node("watch", **PRESENCE_ENV)


@pytest.fixture(scope="module")
def users(watch_node: Server) -> list[User]:
    """Every user the module needs, registered at once (hashing takes a while)."""
    return watch_node.api.new_users(4, "pr")


@contextlib.asynccontextmanager
async def pinging(*sessions: WsSession) -> AsyncIterator[None]:
    """Ping each open session every second, as a client keeping its heartbeat."""

    async def loop() -> None:
        while True:
            await asyncio.sleep(HEARTBEAT / 2)
            for session in sessions:
                if session.is_open:
                    with contextlib.suppress(AssertionError):  # closed meanwhile
                        await session.send({"type": "ping"})

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def presence_of(session: WsSession, user: User) -> list[dict[str, Any]]:
    return [e for e in session.events if e["type"] == "presence" and e["user"]["id"] == user.id]


def typing_of(session: WsSession, user: User) -> list[dict[str, Any]]:
    return [e for e in session.events if e["type"] == "typing" and e["user"]["id"] == user.id]


def sigkill(server: Server) -> None:
    """The process dies at once: no disconnect handler, no presence cleanup."""
    os.kill(server.proc.pid, signal.SIGKILL)
    server.proc.wait(timeout=5)


async def open_watcher(pool: SessionPool, node: Server, watcher: User, target: User) -> WsSession:
    """A session of `watcher`, with a DM to `target` so that it may watch them."""
    w = await pool.open(node.ws_url, watcher)
    await ok_of(w, {"type": "direct", "to": target.id, "body": "hello"})
    return w


async def test_a_user_on_one_node_is_seen_online_then_offline_from_the_other(
    start_node: NodeStarter, watch_node: Server, users: list[User]
) -> None:
    node1 = start_node("home", **PRESENCE_ENV)
    watcher, xavier = users[0:2]
    async with SessionPool() as pool:
        w = await open_watcher(pool, watch_node, watcher, xavier)
        answer = await ok_of(w, {"type": "presence.subscribe", "users": [xavier.username]})
        assert answer["denied"] == [], answer
        assert answer["presence"] == [
            {"user": {"id": xavier.id, "username": xavier.username}, "status": "offline", "last_seen": None}
        ]
        x = await pool.open(node1.ws_url, xavier)
        async with pinging(w, x):
            await w.wait_until(lambda: len(presence_of(w, xavier)) == 1)
            [online] = presence_of(w, xavier)
            assert online["status"] == "online" and online["last_seen"] is not None, online

            # Live sessions are refreshed: still online well past the TTL.
            await asyncio.sleep(PRESENCE_TTL + 1.5)
            assert presence_of(w, xavier) == [online], "a live session expired"
            assert x.is_open and w.is_open
            state = await ok_of(w, {"type": "presence.subscribe", "users": [xavier.id]})
            assert state["presence"][0]["status"] == "online", state

            await x.close()
            left = time.monotonic()
            await w.wait_until(lambda: len(presence_of(w, xavier)) == 2, within=PRESENCE_GRACE + 5)
            took = time.monotonic() - left
            offline = presence_of(w, xavier)[1]
            assert offline["status"] == "offline" and offline["last_seen"] is not None, offline
            assert offline["last_seen"] >= online["last_seen"], (online, offline)
            assert took >= PRESENCE_GRACE - 0.2, f"offline after {took:.2f}s, before the grace ended"
            await asyncio.sleep(1.2)
            assert len(presence_of(w, xavier)) == 2, "offline announced more than once"

        # REST on either node agrees, and keeps last_seen.
        status, body = node1.api.call("GET", f"/api/presence/?users={xavier.id}", token=watcher.token)
        state = {k: v for k, v in offline.items() if k != "type"}
        assert status == 200 and body == {"results": [state], "denied": []}, body


async def test_sigkill_of_a_node_leaves_its_users_offline_and_stops_their_typing(
    start_node: NodeStarter, watch_node: Server, users: list[User]
) -> None:
    """One kill, two duties of the surviving node: the killed node's user goes
    offline within the TTL, and the typing it started gets a server `stop`."""
    victim = start_node("victim", **PRESENCE_ENV)
    watcher, xavier = users[2:4]
    channel = dm_name(watcher, xavier)
    async with SessionPool() as pool:
        w = await open_watcher(pool, watch_node, watcher, xavier)
        x = await pool.open(victim.ws_url, xavier)
        async with pinging(w, x):
            assert (await x.request({"type": "ping"}))["type"] == "pong"  # its connect (presence included) is done
            answer = await ok_of(w, {"type": "presence.subscribe", "users": [xavier.id]})
            assert answer["presence"][0]["status"] == "online", answer
            await ok_of(x, {"type": "typing", "channel": channel, "state": "start"})
            started = time.monotonic()
            await w.wait_until(lambda: len(typing_of(w, xavier)) == 1)

            sigkill(victim)
            killed = time.monotonic()

            # The typing start is followed by the server's stop, from the surviving node.
            await w.wait_until(lambda: len(typing_of(w, xavier)) == 2, within=10)
            typed_for = time.monotonic() - started
            start, stop = typing_of(w, xavier)
            user = {"id": xavier.id, "username": xavier.username}
            assert start == {"type": "typing", "channel": channel, "user": user, "state": "start"}, start
            assert stop == {"type": "typing", "channel": channel, "user": user, "state": "stop"}, stop
            assert typed_for >= 5.0, f"server stop {typed_for:.1f}s after the start, before its 6 s"

            # The user shows offline within the TTL (plus a sweep), not at once.
            await w.wait_until(
                lambda: any(e["status"] == "offline" for e in presence_of(w, xavier)), within=KILLED_OFFLINE_WITHIN
            )
            took = time.monotonic() - killed
            [offline] = [e for e in presence_of(w, xavier) if e["status"] == "offline"]
            assert offline["last_seen"] is not None, offline
            # The last refresh was at most a heartbeat before the kill.
            assert took >= PRESENCE_TTL - HEARTBEAT - 1, f"offline {took:.1f}s after the kill"
            assert took <= KILLED_OFFLINE_WITHIN

            await asyncio.sleep(1.2)
            assert len(typing_of(w, xavier)) == 2, "the stop came more than once"
            assert [e["status"] for e in presence_of(w, xavier)] == ["offline"], presence_of(w, xavier)
            assert w.is_open
