"""Fixtures of the notification tests: the push server, recorded tasks, settings."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync

from notifications.management.commands.vapid_keys import vapid_pair
from presence.store import presence_store

from . import helpers

VAPID_PUBLIC, VAPID_PRIVATE = vapid_pair()


@pytest.fixture
def push_server() -> Iterator[helpers.PushServer]:
    server = helpers.PushServer()
    yield server
    server.close()


@pytest.fixture
def notify_settings(settings: Any) -> Callable[..., None]:
    """Override keys of settings.NOTIFICATIONS for one test."""

    def apply(**overrides: Any) -> None:
        settings.NOTIFICATIONS = {**settings.NOTIFICATIONS, **overrides}

    return apply


@pytest.fixture(autouse=True)
def _notify_defaults(notify_settings: Callable[..., None], settings: Any) -> None:
    """Real push backends to a local server, no waiting, recorded tasks."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    notify_settings(
        BACKEND="push",
        WEBHOOK_ALLOW_PRIVATE=True,
        VAPID_PUBLIC_KEY=VAPID_PUBLIC,
        VAPID_PRIVATE_KEY=VAPID_PRIVATE,
        VAPID_SUBJECT="mailto:ops@example.com",
        COALESCE_WINDOW=0.0,
        BACKOFF_BASE=0.0,
        MAX_ATTEMPTS=3,
        HTTP_TIMEOUT=5.0,
        RUNNER="tests.notifications.helpers.record",
    )


class Tasks:
    """The tasks the pipeline scheduled; `run()` runs those due now, in order."""

    def __init__(self) -> None:
        helpers.SCHEDULED.clear()

    @property
    def scheduled(self) -> list[tuple[Any, tuple[Any, ...], float]]:
        return helpers.SCHEDULED

    def run(self) -> list[tuple[str, tuple[Any, ...], float]]:
        """Run every task due now (and those they schedule); returns the ones
        scheduled for later, which stay unrun (a test runs the pipeline step
        itself with a later `now`)."""
        later = []
        for _ in range(1000):
            if not helpers.SCHEDULED:
                break
            task, args, countdown = helpers.SCHEDULED.pop(0)
            if countdown > 0:
                later.append((task.name, args, countdown))
                continue
            result = task.apply(args=args)
            assert result.successful(), result.traceback
        return later


@pytest.fixture
def tasks() -> Iterator[Tasks]:
    t = Tasks()
    yield t
    helpers.SCHEDULED.clear()


@pytest.fixture
def presence() -> Iterator[Callable[..., None]]:
    """Give a user a live session with a status in the real presence store."""
    entered: list[tuple[int, str]] = []
    store = presence_store()

    def set_status(user: Any, status: str = "online", actor: str = "test-actor") -> None:
        async_to_sync(store.session_set)(user.pk, actor, status, ttl=300)
        entered.append((user.pk, actor))

    yield set_status
    for uid, actor in entered:
        async_to_sync(store.session_drop)(uid, actor, grace=0)
