"""The whole flow through a real Celery worker on the Redis broker.

The worker is a `celery -A config worker` process on the test database that
pytest-django made, with a queue of its own on the test Redis; a DM stored
here reaches the local webhook server through it, and the row says `sent`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from messaging.services import direct_send
from notifications.models import Device, Notification

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def worker(settings: Any, notify_settings: Any, tmp_path: Path) -> Iterator[dict[str, Any]]:
    if not settings.REDIS_URL:
        pytest.skip("needs the Redis broker (make test sets REDIS_URL)")
    queue = "notify-test-" + secrets.token_hex(4)
    db = connection.settings_dict
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHAT_", "NOTIFY_", "VAPID_", "CELERY_"))}
    env.update(
        DATABASE_URL=f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        REDIS_URL=settings.REDIS_URL,
        CONN_MAX_AGE="0",
        ENV_FILE="/nonexistent",
        SECRET_KEY="worker-" + secrets.token_urlsafe(16),
        DEBUG="0",
        WEBHOOK_ALLOW_PRIVATE="1",
        NOTIFY_BACKEND="push",
        NOTIFY_COALESCE_WINDOW="0",
        NOTIFY_QUEUE=queue,
        PYTHONUNBUFFERED="1",
    )
    log_path = tmp_path / "worker.log"
    celery = str(Path(sys.executable).with_name("celery"))
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                celery,
                "-A",
                "config",
                "worker",
                "-Q",
                queue,
                "-P",
                "solo",
                "-l",
                "info",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    # This process sends to the worker's queue through the real broker.
    notify_settings(RUNNER="celery", QUEUE=queue)
    info = {"log": log_path}
    try:
        yield info
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _wait(predicate: Any, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def test_dm_reaches_the_webhook_through_a_real_worker(make_user: Any, push_server: Any, worker: dict[str, Any]) -> None:
    ann, bob = make_user("ann"), make_user("bob")
    device = Device.objects.create(user=bob, kind="webhook", endpoint=push_server.url("/relay"))
    push_server.answer("/relay", 503, 200)  # one retry on the way, through the broker too
    message, created = direct_send(sender=ann, to="bob", body="through the broker")
    assert created

    got = push_server.wait_for("/relay", 2)
    assert len(got) == 2, worker["log"].read_text(errors="replace")
    body = got[1].body
    assert (
        got[1].headers["x-signature"] == "sha256=" + hmac.new(device.secret.encode(), body, hashlib.sha256).hexdigest()
    )
    assert got[1].json()["message"]["id"] == message.pk and got[0].json()["id"] == got[1].json()["id"]

    def sent() -> bool:
        return Notification.objects.filter(user=bob, state="sent").exists()

    assert _wait(sent), worker["log"].read_text(errors="replace")
    n = Notification.objects.get(user=bob)
    delivery = n.deliveries.get()
    assert (delivery.state, delivery.attempts) == ("sent", 2)
    assert [a.status for a in delivery.log.order_by("id")] == [503, 200]
