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


def _message_notify(message_id: int) -> int:
    heads = pipeline.notifications_for_message(message_id=message_id)
    for head in heads:
        countdown = max(0.0, (head.due_at - head.created_at).total_seconds())
        task_schedule(notification_send, head.pk, countdown=countdown)
    return len(heads)


@shared_task(**_RETRY)
def message_notify(message_id: int) -> int:
    """Decide who is notified for a stored message; returns how many notifications start."""
    return _message_notify(message_id)


@shared_task(**_RETRY)
def messages_notify(message_ids: list[int]) -> int:
    """`message_notify` for the messages of one stored batch, in order.

    A retry runs the whole list again: each step is idempotent (a message
    whose notifications exist adds none)."""
    return sum(_message_notify(message_id) for message_id in message_ids)


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


def messages_notify_on_commit(message_ids: list[int]) -> None:
    """Hook of `messaging.services` storing a batch of messages: after the
    commit, hand their ids over in one go (one broker publish, or one timer
    thread, per batch); nothing else happens on the senders' path."""
    if not message_ids:
        return
    from django.db import transaction

    ids = list(message_ids)
    # robust: a broker that is down must not turn stored messages into an
    # error for their senders (the failure is logged; they notify no one).
    transaction.on_commit(lambda: task_schedule(messages_notify, ids), robust=True)
