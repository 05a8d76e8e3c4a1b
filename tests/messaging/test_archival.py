"""Retention: archiving old messages, purging the archive, and what history says about it.

Against the real PostgreSQL: the concurrency tests run archival beside live
sends (and beside a second archival run) on separate connections.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import OperationalError, connection
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from messaging import services, tasks
from messaging.archival import archive_purge, messages_archive
from messaging.models import ArchivedMessage, Channel, Message, MessageRevision
from tests.conftest import token_for, ws_session

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fast_passwords(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def history(settings: Any) -> Callable[..., None]:
    """Override keys of `settings.HISTORY` (a dict read at run time) for one test."""

    def apply(**overrides: Any) -> None:
        settings.HISTORY = {**settings.HISTORY, **overrides}

    return apply


def topic(user: Any, name: str, *, retention_days: int | None = None) -> Channel:
    channel = services.topic_create(user=user, name=name)
    if retention_days is not None:
        Channel.objects.filter(pk=channel.pk).update(retention_days=retention_days)
    return Channel.objects.get(pk=channel.pk)


def send(user: Any, channel: Channel, count: int, *, prefix: str = "m") -> list[Message]:
    return [services.message_store(channel=channel, sender=user, body=f"{prefix}{i}")[0] for i in range(count)]


def age(channel: Channel, *, days: float, upto_seq: int | None = None, from_seq: int = 1) -> None:
    """Pretend messages of `channel` (seq from_seq..upto_seq) were sent `days` ago."""
    rows = Message.objects.filter(channel=channel, seq__gte=from_seq)
    if upto_seq is not None:
        rows = rows.filter(seq__lte=upto_seq)
    rows.update(created_at=timezone.now() - timedelta(days=days))


def hot_seqs(channel: Channel) -> list[int]:
    return list(Message.objects.filter(channel=channel).order_by("seq").values_list("seq", flat=True))


def archived_seqs(channel: Channel) -> list[int]:
    return list(ArchivedMessage.objects.filter(channel=channel).order_by("seq").values_list("seq", flat=True))


def archived_mark(channel: Channel) -> int:
    return Channel.objects.values_list("archived_seq", flat=True).get(pk=channel.pk)


# --- which messages move --------------------------------------------------------


def test_topic_retention_overrides_the_global_one(ann: Any, history: Any) -> None:
    history(RETENTION_DAYS=30)
    by_global = topic(ann, "global")
    keeps_longer = topic(ann, "long", retention_days=365)
    shorter = topic(ann, "short", retention_days=1)
    for channel in (by_global, keeps_longer, shorter):
        send(ann, channel, 3)
        age(channel, days=100, upto_seq=2)
    age(shorter, days=2, from_seq=3)

    report = messages_archive()

    assert archived_seqs(by_global) == [1, 2] and hot_seqs(by_global) == [3]
    assert archived_seqs(keeps_longer) == [] and hot_seqs(keeps_longer) == [1, 2, 3]
    assert archived_seqs(shorter) == [1, 2, 3] and hot_seqs(shorter) == []
    assert {(c.name, c.messages, c.archived_seq) for c in report.channels} == {
        ("topic:global", 2, 2),
        ("topic:short", 3, 3),
    }
    assert report.messages == 5
    assert [archived_mark(c) for c in (by_global, keeps_longer, shorter)] == [2, 0, 3]


def test_topic_retention_applies_without_a_global_one(ann: Any, history: Any) -> None:
    history(RETENTION_DAYS=None)
    plain, limited = topic(ann, "plain"), topic(ann, "limited", retention_days=10)
    for channel in (plain, limited):
        send(ann, channel, 2)
        age(channel, days=20)
    messages_archive()
    assert hot_seqs(plain) == [1, 2] and archived_seqs(plain) == []
    assert hot_seqs(limited) == [] and archived_seqs(limited) == [1, 2]


def test_no_retention_keeps_everything(ann: Any, history: Any, make_user: Any) -> None:
    history(RETENTION_DAYS=None)
    channel = topic(ann, "forever")
    send(ann, channel, 4)
    services.direct_send(sender=ann, to=make_user("bob").pk, body="old dm")
    Message.objects.update(created_at=timezone.now() - timedelta(days=3650))

    report = messages_archive()

    assert report.channels == [] and report.messages == 0
    assert Message.objects.count() == 5 and not ArchivedMessage.objects.exists()
    assert not Channel.objects.filter(archived_seq__gt=0).exists()


def test_archived_copy_keeps_every_field(ann: Any, history: Any) -> None:
    history(RETENTION_DAYS=7)
    channel = topic(ann, "copy")
    first, second = (
        services.message_store(channel=channel, sender=ann, body=b, client_id=c)[0]
        for b, c in (("hello", "c-1"), ("bye", None))
    )
    stamp = timezone.now() - timedelta(days=8)
    Message.objects.filter(pk=first.pk).update(edited_at=stamp)
    Message.objects.filter(pk=second.pk).update(deleted_at=stamp, body="")
    age(channel, days=9)
    before = {m.pk: m for m in Message.objects.filter(channel=channel)}

    messages_archive()

    fields = ["id", "channel_id", "seq", "sender_id", "body", "client_id", "created_at", "edited_at", "deleted_at"]
    for row in ArchivedMessage.objects.filter(channel=channel):
        assert {f: getattr(row, f) for f in fields} == {f: getattr(before[row.pk], f) for f in fields}
        assert row.archived_at is not None
    assert sorted(before) == sorted(ArchivedMessage.objects.values_list("pk", flat=True))


def test_only_a_prefix_moves_stopping_at_the_first_young_message(ann: Any, history: Any) -> None:
    history(RETENTION_DAYS=30)
    channel = topic(ann, "prefix")
    send(ann, channel, 6)
    age(channel, days=40)
    age(channel, days=1, from_seq=4, upto_seq=4)  # seq 4 is young, 5 and 6 old again

    report = messages_archive()

    assert archived_seqs(channel) == [1, 2, 3] and hot_seqs(channel) == [4, 5, 6]
    assert archived_mark(channel) == 3 and report.messages == 3


def test_revisions_are_dropped_with_the_archived_message(ann: Any, history: Any) -> None:
    """The documented choice: edit history is not archived."""
    history(RETENTION_DAYS=30)
    channel = topic(ann, "edits")
    [old, young] = send(ann, channel, 2)
    for message in (old, young):
        MessageRevision.objects.create(message=message, action="edit", body="before", editor=ann)
    age(channel, days=31, upto_seq=1)

    messages_archive()

    assert archived_seqs(channel) == [1]
    assert list(MessageRevision.objects.values_list("message_id", flat=True)) == [young.pk]


# --- batches, repeat runs, crashes, live sends ---------------------------------


def _bulk_old_messages(channel: Channel, sender: Any, count: int, *, days: int) -> list[int]:
    """`count` stored messages with seq 1..count, as the send path would leave them."""
    Message.objects.bulk_create(
        Message(channel=channel, seq=seq, sender=sender, body=f"old {seq}") for seq in range(1, count + 1)
    )
    Channel.objects.filter(pk=channel.pk).update(last_seq=count)
    age(channel, days=days)
    return list(Message.objects.filter(channel=channel).values_list("pk", flat=True))


@pytest.mark.django_db(transaction=True)
def test_batches_beside_live_sends_lose_and_duplicate_nothing(ann: Any, history: Any) -> None:
    history(RETENTION_DAYS=30, ARCHIVE_BATCH=500)
    channel = topic(ann, "busy")
    old_ids = _bulk_old_messages(channel, ann, 3000, days=60)
    sent: list[int] = []
    first_sent, stop = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def sender() -> None:
        try:
            mine = Channel.objects.get(pk=channel.pk)
            while not stop.is_set() or len(sent) < 5:
                message, _ = services.message_store(channel=mine, sender=ann, body="live")
                sent.append(message.pk)
                first_sent.set()
        except Exception as exc:  # noqa: BLE001 -- asserted below
            errors.append(exc)
            first_sent.set()
        finally:
            connection.close()

    thread = threading.Thread(target=sender)
    thread.start()
    try:
        assert first_sent.wait(timeout=30)
        sent_before = len(sent)
        report = messages_archive()
        sent_during = len(sent) - sent_before
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not thread.is_alive() and errors == []
    assert sent_during > 0  # the sends really overlapped the archival

    hot = set(Message.objects.filter(channel=channel).values_list("pk", flat=True))
    archived = set(ArchivedMessage.objects.filter(channel=channel).values_list("pk", flat=True))
    assert archived == set(old_ids) and report.messages == 3000
    assert not hot & archived
    assert hot | archived == set(old_ids) | set(sent)
    all_seqs = sorted(hot_seqs(channel) + archived_seqs(channel))
    last_seq = Channel.objects.get(pk=channel.pk).last_seq
    assert all_seqs == list(range(1, last_seq + 1)) and last_seq == 3000 + len(sent)
    assert archived_mark(channel) == max(archived_seqs(channel)) == 3000

    again = messages_archive()
    assert again.messages == 0 and again.channels == []
    assert ArchivedMessage.objects.count() == 3000 and archived_mark(channel) == 3000


@pytest.mark.django_db(transaction=True)
def test_two_runs_at_once_move_each_message_once(ann: Any, history: Any) -> None:
    history(RETENTION_DAYS=30)
    channel = topic(ann, "twice")
    old_ids = _bulk_old_messages(channel, ann, 2000, days=60)
    reports: list[Any] = []
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def run() -> None:
        try:
            start.wait(timeout=30)
            reports.append(messages_archive(batch=100))
        except Exception as exc:  # noqa: BLE001 -- asserted below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == [] and len(reports) == 2
    assert sum(r.messages for r in reports) == 2000
    assert set(ArchivedMessage.objects.values_list("pk", flat=True)) == set(old_ids)
    assert not Message.objects.filter(channel=channel).exists()
    assert archived_mark(channel) == 2000


def test_small_batches_reach_the_same_result(ann: Any, history: Any) -> None:
    history(RETENTION_DAYS=30, ARCHIVE_BATCH=2)
    channel = topic(ann, "small")
    send(ann, channel, 7)
    age(channel, days=31, upto_seq=5)
    report = messages_archive()
    assert archived_seqs(channel) == [1, 2, 3, 4, 5] and hot_seqs(channel) == [6, 7]
    assert report.messages == 5 and archived_mark(channel) == 5


def test_rerun_after_a_crash_between_copy_and_delete(ann: Any, history: Any) -> None:
    history(RETENTION_DAYS=30)
    channel = topic(ann, "crash")
    messages = send(ann, channel, 4)
    age(channel, days=40, upto_seq=3)
    # A run copied seq 1 and 2, then died before deleting them; seq 1 was
    # edited since, so its copy is stale.
    for message in messages[:2]:
        ArchivedMessage.objects.create(
            id=message.pk,
            channel=channel,
            seq=message.seq,
            sender=ann,
            body=message.body,
            created_at=timezone.now() - timedelta(days=40),
        )
    Message.objects.filter(pk=messages[0].pk).update(body="edited after the crash")

    report = messages_archive()

    assert report.messages == 3
    assert archived_seqs(channel) == [1, 2, 3] and hot_seqs(channel) == [4]
    assert ArchivedMessage.objects.get(pk=messages[0].pk).body == "edited after the crash"
    assert archived_mark(channel) == 3


def test_archived_seq_never_goes_back(ann: Any, history: Any) -> None:
    history(RETENTION_DAYS=30)
    channel = topic(ann, "mark")
    send(ann, channel, 5)
    age(channel, days=31, upto_seq=2)
    Channel.objects.filter(pk=channel.pk).update(archived_seq=4)  # as if a concurrent run got further
    report = messages_archive()
    assert archived_seqs(channel) == [1, 2] and report.messages == 2
    assert archived_mark(channel) == 4


# --- purge -----------------------------------------------------------------------


def _archive_aged(ann: Any, name: str, ages: list[int]) -> Channel:
    """A topic whose messages (one per age, in days) are all archived."""
    channel = topic(ann, name, retention_days=1)
    for seq, days in enumerate(ages, start=1):
        send(ann, channel, 1)
        age(channel, days=days, from_seq=seq, upto_seq=seq)
    messages_archive()
    assert hot_seqs(channel) == []
    return channel


def test_purge_removes_only_expired_archived_messages(ann: Any, history: Any) -> None:
    history(ARCHIVE_PURGE_DAYS=90)
    channel = _archive_aged(ann, "purge", [400, 300, 200, 50, 10])
    purged = archive_purge(batch=2)
    assert purged == 3
    assert archived_seqs(channel) == [4, 5]
    assert archived_mark(channel) == 5  # still: nothing up to 5 is in history


def test_purge_needs_a_period(ann: Any, history: Any) -> None:
    history(ARCHIVE_PURGE_DAYS=None)
    channel = _archive_aged(ann, "keep", [4000, 2])
    assert archive_purge() == 0
    assert archived_seqs(channel) == [1, 2]


def test_purge_does_not_touch_hot_messages(ann: Any, history: Any) -> None:
    history(ARCHIVE_PURGE_DAYS=1, RETENTION_DAYS=None)
    channel = topic(ann, "hot")
    send(ann, channel, 2)
    age(channel, days=500)
    assert archive_purge() == 0
    assert hot_seqs(channel) == [1, 2]


# --- dry run, command, task --------------------------------------------------------


def test_dry_run_changes_nothing(ann: Any, history: Any) -> None:
    history(RETENTION_DAYS=30, ARCHIVE_PURGE_DAYS=90, ARCHIVE_BATCH=2)
    archived = _archive_aged(ann, "done", [200, 100, 50])
    channel = topic(ann, "pending")
    send(ann, channel, 5)
    age(channel, days=31, upto_seq=4)

    report = messages_archive(dry_run=True)
    would_purge = archive_purge(dry_run=True)

    assert report.dry_run and report.messages == 4
    assert [(c.name, c.messages, c.archived_seq) for c in report.channels] == [("topic:pending", 4, 4)]
    assert would_purge == 2
    assert hot_seqs(channel) == [1, 2, 3, 4, 5] and archived_mark(channel) == 0
    assert archived_seqs(archived) == [1, 2, 3]


def _command(*args: str) -> str:
    out = StringIO()
    call_command("archive_messages", *args, stdout=out)
    return out.getvalue()


def test_command_dry_run_then_real_run(ann: Any, history: Any) -> None:
    history(RETENTION_DAYS=30, ARCHIVE_PURGE_DAYS=None)
    channel = topic(ann, "cmd")
    send(ann, channel, 3)
    age(channel, days=31, upto_seq=2)

    dry = _command("--dry-run")
    assert dry.splitlines() == [
        "topic:cmd: would archive 2 (up to seq 2)",
        "would archive 2 messages in 1 channels; would purge 0 archived messages (dry run: nothing changed)",
    ]
    assert hot_seqs(channel) == [1, 2, 3]

    real = _command("--batch", "1")
    assert real.splitlines() == [
        "topic:cmd: archived 2 (up to seq 2)",
        "archived 2 messages in 1 channels; purged 0 archived messages",
    ]
    assert archived_seqs(channel) == [1, 2] and hot_seqs(channel) == [3]
    assert _command().splitlines() == ["archived 0 messages in 0 channels; purged 0 archived messages"]


def test_command_refuses_a_batch_below_one(ann: Any) -> None:
    with pytest.raises(CommandError, match="--batch"):
        _command("--batch", "0")


def test_task_runs_in_process_and_archives(ann: Any, history: Any) -> None:
    history(RETENTION_DAYS=30, ARCHIVE_PURGE_DAYS=90)
    _archive_aged(ann, "expired", [100])  # purged by the task
    channel = topic(ann, "task")
    send(ann, channel, 3)
    age(channel, days=31, upto_seq=2)

    result = tasks.archive_messages.apply()

    assert result.successful(), result.traceback
    assert result.get() == {"channels": 1, "messages": 2, "purged": 1}
    assert archived_seqs(channel) == [1, 2] and hot_seqs(channel) == [3]


def test_task_retries_transient_database_errors(ann: Any, history: Any, monkeypatch: Any) -> None:
    history(RETENTION_DAYS=30)
    channel = topic(ann, "retry")
    send(ann, channel, 1)
    age(channel, days=31)
    calls = []
    real = tasks.messages_archive

    def flaky(**kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) < 3:
            raise OperationalError("server closed the connection unexpectedly")
        return real(**kwargs)

    monkeypatch.setattr(tasks, "messages_archive", flaky)
    result = tasks.archive_messages.apply()

    assert result.successful(), result.traceback
    assert len(calls) == 3 and result.get()["messages"] == 1
    assert tasks.archive_messages.max_retries == 5 and tasks.archive_messages.retry_backoff is True


def test_task_is_the_beat_schedules_one(settings: Any) -> None:
    from config.celery import app

    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert tasks.archive_messages.name in scheduled
    assert tasks.archive_messages.name in app.tasks


# --- history says where the hot part ends -------------------------------------------


def test_rest_history_carries_archived_before_seq(ann: Any, history: Any) -> None:
    history(RETENTION_DAYS=30)
    channel = topic(ann, "rest")
    untouched = topic(ann, "untouched")
    send(ann, channel, 5)
    send(ann, untouched, 1)
    age(channel, days=31, upto_seq=3)
    messages_archive()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(ann)}")

    body = client.get("/api/channels/topic:rest/messages/").json()
    assert [m["seq"] for m in body["messages"]] == [4, 5]
    assert body["has_more"] is False and body["archived_before_seq"] == 4

    page = client.get("/api/channels/topic:rest/messages/?limit=1").json()
    assert [m["seq"] for m in page["messages"]] == [5] and page["has_more"] is True
    page = client.get("/api/channels/topic:rest/messages/?before=5&limit=1").json()
    assert [m["seq"] for m in page["messages"]] == [4] and page["has_more"] is False
    below = client.get("/api/channels/topic:rest/messages/?before=4").json()
    assert below == {"messages": [], "has_more": False, "archived_before_seq": 4}

    plain = client.get("/api/channels/topic:untouched/messages/").json()
    assert set(plain) == {"messages", "has_more"}


@pytest.mark.django_db(transaction=True)
async def test_websocket_history_carries_archived_before_seq(ann: Any, history: Any) -> None:
    from channels.db import database_sync_to_async

    history(RETENTION_DAYS=30)

    @database_sync_to_async  # closes its connection after, unlike sync_to_async
    def prepare() -> None:
        channel = topic(ann, "ws")
        send(ann, channel, 4)
        age(channel, days=31, upto_seq=2)
        messages_archive()

    await prepare()
    async with ws_session(ann) as session:
        ok = await session.request({"type": "history", "channel": "topic:ws"})
    assert ok["type"] == "ok", ok
    assert [m["seq"] for m in ok["messages"]] == [3, 4]
    assert ok["has_more"] is False and ok["archived_before_seq"] == 3


# --- admin ------------------------------------------------------------------------


@pytest.fixture
def admin_client(make_user: Any) -> Client:
    client = Client()
    client.force_login(make_user("root", is_staff=True, is_superuser=True))
    return client


def test_admin_lists_and_searches_archived_messages_read_only(
    ann: Any, history: Any, admin_client: Client, make_user: Any
) -> None:
    history(RETENTION_DAYS=30)
    channel = topic(ann, "adm")
    services.message_store(channel=channel, sender=ann, body="pineapple pizza")
    services.message_store(channel=channel, sender=ann, body="plain")
    services.direct_send(sender=ann, to=make_user("bob").pk, body="direct pineapple")
    Message.objects.update(created_at=timezone.now() - timedelta(days=31))
    messages_archive()
    base = "/admin/messaging/archivedmessage/"

    listing = admin_client.get(base)
    assert listing.status_code == 200
    assert len(listing.context["cl"].result_list) == 3
    found = admin_client.get(base, {"q": "pineapple"}).context["cl"].result_list
    assert sorted(m.body for m in found) == ["direct pineapple", "pineapple pizza"]
    topics_only = admin_client.get(base, {"channel__kind__exact": "topic"}).context["cl"].result_list
    assert {m.channel_id for m in topics_only} == {channel.pk}

    row = ArchivedMessage.objects.get(body="plain")
    assert admin_client.get(f"{base}add/").status_code == 403
    assert admin_client.get(f"{base}{row.pk}/delete/").status_code == 403
    detail = admin_client.get(f"{base}{row.pk}/change/")
    assert detail.status_code == 200 and not detail.context["has_change_permission"]
    admin_client.post(f"{base}{row.pk}/change/", {"body": "rewritten"})
    assert ArchivedMessage.objects.get(pk=row.pk).body == "plain"
