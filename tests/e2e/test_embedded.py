"""The embedded default (`make run` with no services): SQLite and the in-memory layer."""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from .client import SessionPool, ok_of
from .flows import dm_and_topic
from .servers import Server

pytestmark = pytest.mark.e2e


async def test_dm_topic_and_history(embedded_server: Server) -> None:
    await dm_and_topic(embedded_server)


def test_probes(embedded_server: Server) -> None:
    status, body = embedded_server.api.call("GET", "/healthz")
    assert (status, body) == (200, {"status": "ok"})
    status, body = embedded_server.api.call("GET", "/readyz")
    assert status == 200 and body["status"] == "ok", body
    assert body["checks"]["database"] == "ok" and "not used" in body["checks"]["redis"], body


def test_api_needs_a_token(embedded_server: Server) -> None:
    status, body = embedded_server.api.call("GET", "/api/channels/topic:anything/messages/")
    assert (status, body["code"]) == (401, "unauthorized"), body


async def _close_code(url: str) -> int:
    """Connect, expect the server to close before any frame, return its close code."""
    async with connect(url, ping_interval=None, open_timeout=10) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None, "closed without a close frame"
    return closed.value.rcvd.code


async def test_bad_or_missing_token_closes_4401(embedded_server: Server) -> None:
    assert await _close_code(embedded_server.ws_url + "?token=not-a-jwt") == 4401
    assert await _close_code(embedded_server.ws_url) == 4401
    # A refresh token is not an access token.
    user = embedded_server.api.new_user("tok")
    _, pair = embedded_server.api.call(
        "POST", "/api/auth/token/", body={"username": user.username, "password": user.password}
    )
    assert await _close_code(f"{embedded_server.ws_url}?token={pair['refresh']}") == 4401


async def test_foreign_origin_refused_own_origin_served(embedded_server: Server) -> None:
    user = embedded_server.api.new_user("origin")
    url = f"{embedded_server.ws_url}?token={user.token}"
    for origin in ("http://evil.example", "http://127.0.0.1.evil.example"):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url, origin=origin, ping_interval=None, open_timeout=10):
                pass
        assert refused.value.response.status_code == 403, origin

    async with SessionPool() as pool:
        own = await pool.open(embedded_server.ws_url, user, origin=f"http://127.0.0.1:{embedded_server.port}")
        pong = await own.request({"type": "ping"})
        assert pong["type"] == "pong" and isinstance(pong["t"], int), pong


async def test_bad_frames_answered_connection_stays(embedded_server: Server) -> None:
    user = embedded_server.api.new_user("frames")
    async with SessionPool() as pool:
        session = await pool.open(embedded_server.ws_url, user)
        await session.send("not json")
        await session.wait_until(lambda: any(e["type"] == "error" for e in session.events))
        assert session.events[-1]["code"] == "bad_json", session.events
        assert (await session.request({"type": "nonsense"}))["code"] == "unknown_type"
        assert (await session.request({"type": "publish", "channel": "topic:BAD", "body": "x"}))["code"] == (
            "bad_request"
        )
        too_big = {"type": "publish", "channel": "topic:e2e-big", "body": "x" * 16385}
        assert (await session.request(too_big))["code"] == "too_large"
        # Refused sends took no seq: the topic was never written.
        assert (await ok_of(session, {"type": "publish", "channel": "topic:e2e-big", "body": "x"}))["message"][
            "seq"
        ] == 1
        assert session.is_open
