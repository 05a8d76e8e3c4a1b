"""One server on PostgreSQL and Redis (a fresh database, a Redis namespace of its own)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from .client import SessionPool, ok_of
from .flows import dm_and_topic, topic_name
from .servers import Server, start_server

pytestmark = pytest.mark.e2e

FRAME_LIMIT = 64 * 1024


async def test_dm_topic_and_history(services_server: Server) -> None:
    await dm_and_topic(services_server)


def test_ready_with_services(services_server: Server) -> None:
    status, body = services_server.api.call("GET", "/readyz")
    assert status == 200 and body["checks"] == {"database": "ok", "redis": "ok"}, body


def _frame_of_size(size: int) -> str:
    """A publish frame of exactly `size` bytes (ASCII, so bytes == characters)."""
    empty = json.dumps({"type": "publish", "channel": "topic:e2e-size", "body": ""})
    frame = json.dumps({"type": "publish", "channel": "topic:e2e-size", "body": "x" * (size - len(empty))})
    assert len(frame.encode()) == size
    return frame


async def test_frame_over_64k_closes_1009(services_server: Server) -> None:
    user = services_server.api.new_user("big")
    async with SessionPool() as pool:
        session = await pool.open(services_server.ws_url, user)
        # 64 KiB exactly is a frame the server reads: its body is too large, the socket stays.
        await session.send(_frame_of_size(FRAME_LIMIT))
        await session.wait_until(lambda: any(e["type"] == "error" for e in session.events))
        assert session.events[-1]["code"] == "too_large", session.events
        assert (await session.request({"type": "ping"}))["type"] == "pong"

        await session.send(_frame_of_size(FRAME_LIMIT + 1))
        assert await session.wait_closed() == 1009


async def test_sessions_closing_together_let_the_server_stop(services_env: dict[str, str], tmp_path: Path) -> None:
    """Closed sessions leave no actor behind: SIGTERM stops the server at once.

    Sessions closing in the same instant are where a lost cancellation in the
    Redis client (Python 3.11's wait_for) used to leave actors running, and
    uvicorn then waited out its 10 s graceful timeout.
    """
    server = start_server(services_env, tmp_path, "stopping")
    try:
        user = server.api.new_user("burst")
        topic = topic_name()
        for _ in range(15):
            async with SessionPool() as pool:
                for _ in range(6):
                    session = await pool.open(server.ws_url, user)
                    await ok_of(session, {"type": "subscribe", "channel": topic})
            # Leaving the block closed all six at once.
        await asyncio.sleep(0.5)
        took = server.stop()
        log = server.log()
        assert took is not None and took < 5, f"graceful stop took {took}s:\n{log}"
        assert "graceful shutdown exceeded" not in log, log
    finally:
        server.stop()
