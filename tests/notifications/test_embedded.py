"""The embedded default (`make run`: no broker, SQLite): notification tasks
run inside the server process, on timer threads, and reach a webhook."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.client import WsSession
from tests.e2e.servers import Server, migrate, server_env, start_server

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log_dir = tmp_path_factory.mktemp("notify-embedded")
    env = server_env(
        DATABASE_URL=f"sqlite:///{log_dir / 'db.sqlite3'}",
        WEBHOOK_ALLOW_PRIVATE="1",
        NOTIFY_BACKEND="push",
        NOTIFY_COALESCE_WINDOW="0",
    )
    migrate(env, log_dir / "migrate.log")
    srv = start_server(env, log_dir, "embedded")
    try:
        yield srv
    finally:
        srv.stop()


async def test_offline_dm_is_pushed_from_the_server_process(server: Server, push_server: Any) -> None:
    api = server.api
    ann, bob = api.new_user("ann"), api.new_user("bob")
    status, device = api.call(
        "POST", "/api/notifications/devices/", body={"kind": "webhook", "url": push_server.url("/bob")}, token=bob.token
    )
    assert status == 201, device
    session = await WsSession.open(server.ws_url, ann.token)
    try:
        answer = await session.request({"type": "direct", "to": bob.username, "body": "while you were out"})
    finally:
        await session.close()
    assert answer["type"] == "ok", answer
    [got] = push_server.wait_for("/bob", 1)
    assert got.json()["message"]["id"] == answer["message"]["id"], server.log()

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status, listed = api.call("GET", "/api/notifications/", token=bob.token)
        if listed["results"] and listed["results"][0]["state"] == "sent":
            break
        await asyncio.sleep(0.1)
    assert status == 200 and listed["results"][0]["state"] == "sent", listed
    assert listed["results"][0]["message"]["body"] == "while you were out"
