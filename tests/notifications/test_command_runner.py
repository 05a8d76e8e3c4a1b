"""`manage.py vapid_keys`, and the in-process runner of the embedded default."""

from __future__ import annotations

import base64
import io
import threading
import time
from typing import Any

import pytest
from django.core.management import call_command
from py_vapid import Vapid

from messaging.services import direct_send
from notifications.models import Notification


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_vapid_keys_command_prints_a_usable_pair() -> None:
    out = io.StringIO()
    call_command("vapid_keys", stdout=out)
    lines = dict(line.split("=", 1) for line in out.getvalue().split())
    public, private = lines["VAPID_PUBLIC_KEY"], lines["VAPID_PRIVATE_KEY"]
    assert len(unb64url(public)) == 65 and unb64url(public)[0] == 4
    assert len(unb64url(private)) == 32
    headers = Vapid.from_string(private_key=private).sign(
        {"sub": "mailto:ops@example.com", "aud": "https://push.example"}
    )
    assert headers["Authorization"].endswith(f"k={public}")
    call_command("vapid_keys", stdout=(again := io.StringIO()))
    assert again.getvalue() != out.getvalue()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("runner", ["thread", "auto"])
def test_thread_runner_runs_tasks_after_the_commit(
    runner: str, make_user: Any, notify_settings: Any, settings: Any
) -> None:
    """Without a broker the sender's path only starts a timer; the task runs on
    its own thread and connection, after the commit."""
    settings.CELERY_TASK_ALWAYS_EAGER = True
    notify_settings(RUNNER=runner)
    ann, bob = make_user("ann"), make_user("bob")
    message, _ = direct_send(sender=ann, to="bob", body="in process")
    # Every step runs on its own timer thread; wait for the chain to end
    # (the last step leaves no thread behind), so nothing outlives the test.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        timers = [t for t in threading.enumerate() if isinstance(t, threading.Timer)]
        if not timers and Notification.objects.filter(message=message, state="suppressed").exists():
            break
        for timer in timers:
            timer.join(timeout=1)
    n = Notification.objects.get(message=message)
    assert (n.user_id, n.state, n.detail) == (bob.pk, "suppressed", "no_device")
