"""How notification tasks are started: on the Celery broker, or in process.

With a broker the task goes to it (`apply_async`, with a countdown for
delays and retries). Without one (`CELERY_TASK_ALWAYS_EAGER`, the embedded
default) Celery's eager mode would run the task inside the caller, before
the sender's answer, and would run retries at once, ignoring the countdown;
so here eager tasks run on a timer thread after their countdown instead.
Those timers live in the server process: a restart forgets them (the rows
stay `queued`; docs/notifications.md says how to resend them).

NOTIFICATIONS["RUNNER"] may name another callable `(task, args, countdown)`
(the tests record tasks and run them themselves).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connections
from django.utils.module_loading import import_string

log = logging.getLogger(__name__)


def _run_in_thread(task: Any, args: tuple[Any, ...]) -> None:
    close_old_connections()
    try:
        task.apply(args=args, throw=False)
    finally:
        connections.close_all()


def thread_run(task: Any, args: tuple[Any, ...], countdown: float) -> None:
    timer = threading.Timer(max(0.0, countdown), _run_in_thread, args=(task, args))
    timer.daemon = True
    timer.start()


def celery_run(task: Any, args: tuple[Any, ...], countdown: float) -> None:
    task.apply_async(
        args=args, countdown=countdown if countdown > 0 else None, queue=settings.NOTIFICATIONS.get("QUEUE")
    )


def task_schedule(task: Any, *args: Any, countdown: float = 0.0) -> None:
    """Start `task(*args)` in `countdown` seconds, never inside the caller."""
    runner = settings.NOTIFICATIONS.get("RUNNER") or "auto"
    if runner == "auto":
        runner = "thread" if settings.CELERY_TASK_ALWAYS_EAGER else "celery"
    if runner == "thread":
        thread_run(task, args, countdown)
    elif runner == "celery":
        celery_run(task, args, countdown)
    else:
        import_string(runner)(task, args, countdown)
