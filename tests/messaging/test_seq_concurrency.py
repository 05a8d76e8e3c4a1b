"""Concurrent sends to one channel get a gapless, duplicate-free seq (real PostgreSQL)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection

from messaging import services
from messaging.models import Channel, Message

pytestmark = pytest.mark.django_db(transaction=True)

THREADS = 8
PER_THREAD = 25


@pytest.fixture(autouse=True)
def _cheap_passwords(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def run_threads(work: Callable[[int], None]) -> list[BaseException]:
    """Run `work(i)` in THREADS threads released together; return their errors."""
    start = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def body(i: int) -> None:
        try:
            start.wait(timeout=30)
            work(i)
        except Exception as exc:  # noqa: BLE001 -- reported by run_threads' caller
            errors.append(exc)
        finally:
            connection.close()  # each thread has its own connection

    threads = [threading.Thread(target=body, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    return errors


def test_concurrent_sends_take_seq_1_to_200(make_user: Any) -> None:
    users = [make_user() for _ in range(THREADS)]
    channel = services.topic_create(user=users[0], name="race")
    returned: list[int] = []
    lock = threading.Lock()

    def send(i: int) -> None:
        mine = Channel.objects.get(pk=channel.pk)
        for n in range(PER_THREAD):
            message, created = services.message_store(channel=mine, sender=users[i], body=f"{i}-{n}")
            assert created
            with lock:
                returned.append(message.seq)

    assert run_threads(send) == []
    total = THREADS * PER_THREAD
    stored = list(Message.objects.filter(channel=channel).order_by("seq").values_list("seq", flat=True))
    assert stored == list(range(1, total + 1))
    assert sorted(returned) == stored
    assert Channel.objects.get(pk=channel.pk).last_seq == total
    # Each sender's own messages are in the order it sent them.
    for i, user in enumerate(users):
        bodies = list(
            Message.objects.filter(channel=channel, sender=user).order_by("seq").values_list("body", flat=True)
        )
        assert bodies == [f"{i}-{n}" for n in range(PER_THREAD)]


def test_concurrent_retries_of_one_client_id_store_once(make_user: Any) -> None:
    ann = make_user()
    channel = services.topic_create(user=ann, name="retry")
    ids: list[tuple[int, bool]] = []
    lock = threading.Lock()

    def send(i: int) -> None:
        message, created = services.message_store(
            channel=Channel.objects.get(pk=channel.pk), sender=ann, body="once", client_id="same-id"
        )
        with lock:
            ids.append((message.pk, created))

    assert run_threads(send) == []
    assert len({pk for pk, _ in ids}) == 1
    assert sum(created for _, created in ids) == 1
    assert list(Message.objects.filter(channel=channel).values_list("seq", flat=True)) == [1]
    assert Channel.objects.get(pk=channel.pk).last_seq == 1  # the retries' seqs were rolled back
