"""Shared fixtures: users and tokens, Redis cleanup, WebSocket sessions.

The suite runs against the real PostgreSQL and Redis (see the Makefile's
`test` target); nothing here mocks the database, the channel layer or Redis.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth import get_user_model
from rest_framework_simplejwt.tokens import AccessToken

_names = itertools.count(1)


@pytest.fixture(autouse=True, scope="session")
def _redis_clean() -> None:
    """Start from an empty test Redis database (the Makefile points at db 9)."""
    if settings.REDIS_URL:
        client = redis.Redis.from_url(settings.REDIS_URL)
        client.flushdb()
        client.close()


@pytest.fixture(autouse=True)
def _fresh_channel_layer() -> None:
    """A new layer object per test: its Redis pools belong to the test's loop."""
    channel_layers.backends.clear()


@pytest.fixture
def make_user(db: Any) -> Callable[..., Any]:
    def make(username: str | None = None, *, password: str = "Pass-word-123", **extra: Any) -> Any:
        name = username or f"user{next(_names)}"
        return get_user_model().objects.create_user(username=name, password=password, **extra)

    return make


def token_for(user: Any, *, lifetime: float | None = None) -> str:
    token = AccessToken.for_user(user)
    if lifetime is not None:
        from datetime import timedelta

        token.set_exp(lifetime=timedelta(seconds=lifetime))
    return str(token)


class Session:
    """A WebSocket session driven through `WebsocketCommunicator`."""

    def __init__(self, communicator: WebsocketCommunicator) -> None:
        self.comm = communicator
        self.welcome: dict[str, Any] = {}
        self._refs = itertools.count(1)

    async def send(self, frame: dict[str, Any] | str) -> None:
        await self.comm.send_to(text_data=frame if isinstance(frame, str) else json.dumps(frame))

    async def recv(self, timeout: float = 3) -> dict[str, Any]:
        return json.loads(await self.comm.receive_from(timeout=timeout))

    async def request(self, frame: dict[str, Any], timeout: float = 3) -> dict[str, Any]:
        """Send with a fresh ref and return the answer carrying it (events before it are kept)."""
        ref = f"r{next(self._refs)}"
        await self.send({**frame, "ref": ref})
        self.skipped: list[dict[str, Any]] = []
        while True:
            frame_in = await self.recv(timeout)
            if frame_in.get("ref") == ref:
                return frame_in
            self.skipped.append(frame_in)

    async def nothing(self, timeout: float = 0.3) -> bool:
        return await self.comm.receive_nothing(timeout=timeout)

    async def closed(self, timeout: float = 3) -> int:
        """Wait for the server to close; return the close code."""
        while True:
            message = await self.comm.output_queue.get() if timeout is None else await _get(self.comm, timeout)
            if message["type"] == "websocket.close":
                return message.get("code", 1000)


async def _get(comm: WebsocketCommunicator, timeout: float) -> dict[str, Any]:
    return await comm.receive_output(timeout)


@asynccontextmanager
async def ws_session(
    user: Any = None,
    *,
    token: str | None = None,
    path: str = "/ws/",
    query: str = "",
    headers: list[tuple[bytes, bytes]] | None = None,
    expect_welcome: bool = True,
) -> AsyncIterator[Session]:
    """Open a session on the real ASGI application (auth, Origin check, routing)."""
    from config.asgi import application

    if token is None and user is not None:
        token = token_for(user)
    qs = "&".join(p for p in (f"token={token}" if token else "", query) if p)
    comm = WebsocketCommunicator(application, f"{path}?{qs}" if qs else path, headers=headers or [])
    connected, _ = await comm.connect(timeout=5)
    session = Session(comm)
    try:
        assert connected
        if expect_welcome:
            session.welcome = await session.recv()
            assert session.welcome["type"] == "welcome"
        yield session
    finally:
        await comm.disconnect()


# --- Helpers for the session-actor tests (tests/realtime/test_consumer*.py) ---


@pytest.fixture
def auser(make_user: Callable[..., Any]) -> Callable[..., Any]:
    """`make_user` for async tests: `ann = await auser(is_staff=True)`."""
    from asgiref.sync import sync_to_async

    return sync_to_async(make_user)


@pytest.fixture
def chat_settings(settings: Any) -> Callable[..., None]:
    """Override keys of `settings.CHAT` for one test.

    CHAT is a dict read at run time, so the whole dict is replaced by a
    modified copy (pytest-django restores the original afterwards).
    """

    def apply(**overrides: Any) -> None:
        settings.CHAT = {**settings.CHAT, **overrides}

    return apply


async def recv_messages(session: Session, count: int) -> list[dict[str, Any]]:
    """The next `count` frames, each of which must be a `message` event."""
    got = []
    for _ in range(count):
        frame = await session.recv()
        assert frame["type"] == "message", frame
        got.append(frame)
    return got


@pytest.fixture
def fast_passwords(settings: Any) -> None:
    """A cheap password hasher: these tests make many users and never log in."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def pytest_addoption(parser: pytest.Parser) -> None:
    """`--churn-seconds N`: how long tests/e2e/test_churn.py drops and resumes
    sessions (default 20, short enough for CI; raise it for a soak run)."""
    parser.addoption(
        "--churn-seconds",
        type=float,
        default=20.0,
        help="seconds of random reconnect churn in tests/e2e/test_churn.py (default 20)",
    )


@pytest.fixture
def churn_seconds(request: pytest.FixtureRequest) -> float:
    """The `--churn-seconds` option."""
    return float(request.config.getoption("--churn-seconds"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test taking `churn_seconds` gets a timeout that grows with the option."""
    seconds = float(config.getoption("--churn-seconds"))
    for item in items:
        if "churn_seconds" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.timeout(seconds + 150))


@pytest.fixture
def ann(make_user: Callable[..., Any]) -> Any:
    return make_user("ann")


@pytest.fixture
def bob(make_user: Callable[..., Any]) -> Any:
    return make_user("bob")


@pytest.fixture
def carol(make_user: Callable[..., Any]) -> Any:
    return make_user("carol")


@pytest.fixture
def staff(make_user: Callable[..., Any]) -> Any:
    return make_user("mod", is_staff=True)
