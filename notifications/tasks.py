"""Celery tasks of the notification pipeline: they take ids and call `pipeline`.

Each step schedules the next through `runner.task_schedule` (the broker, or
a timer thread when there is none). Retries of a push live in
`delivery_attempt`: the delay comes from the pipeline (backoff with full
jitter, or Retry-After) and the task schedules itself again; the state in the
database makes a redelivered task a no-op. A lost database connection is
retried by Celery itself.
"""

from __future__ import annotations

from celery import shared_task
from django.db import OperationalError

from . import pipeline
from .runner import task_schedule

_RETRY = {"autoretry_for": (OperationalError,), "retry_backoff": True, "max_retries": 5, "acks_late": True}


@shared_task(**_RETRY)
def message_notify(message_id: int) -> int:
    """Decide who is notified for a stored message; returns how many notifications start."""
    heads = pipeline.notifications_for_message(message_id=message_id)
    for head in heads:
        countdown = max(0.0, (head.due_at - head.created_at).total_seconds())
        task_schedule(notification_send, head.pk, countdown=countdown)
    return len(heads)


@shared_task(**_RETRY)
def notification_send(notification_id: int) -> int:
    """Start the pushes of a due notification; returns how many devices it goes to."""
    step = pipeline.notification_dispatch(notification_id=notification_id)
    if step.again_in is not None:
        task_schedule(notification_send, notification_id, countdown=step.again_in)
    for delivery_id in step.deliveries:
        # One task per device: a slow or failing device delays no other.
        task_schedule(delivery_attempt, delivery_id)
    return len(step.deliveries)


@shared_task(**_RETRY)
def delivery_attempt(delivery_id: int) -> str:
    """One push to one device; schedules the next try after a transient failure."""
    step = pipeline.delivery_try(delivery_id=delivery_id)
    if step.retry_in is not None:
        task_schedule(delivery_attempt, delivery_id, countdown=step.retry_in)
    return step.outcome


def message_notify_on_commit(message_id: int) -> None:
    """Hook of `messaging.services.message_store`: after the commit, hand the
    message id over (one broker publish, or a timer thread); nothing else
    happens on the sender's path."""
    from django.db import transaction

    # robust: a broker that is down must not turn a stored message into an
    # error for its sender (the failure is logged; that message notifies no one).
    transaction.on_commit(lambda: task_schedule(message_notify, message_id), robust=True)
