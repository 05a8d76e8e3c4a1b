"""Who is notified, preferences, coalescing, cancelling, retries: the pipeline
against the real database, presence store and a local push server."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest
from django.utils import timezone

from messaging import editing
from messaging.channels import topic_channel
from messaging.services import direct_send, message_send, system_notice_send, topic_create, topic_member_add
from notifications import pipeline
from notifications import tasks as ntasks
from notifications.models import Attempt, Delivery, Device, Notification, Preference

pytestmark = pytest.mark.django_db


@pytest.fixture
def send(django_capture_on_commit_callbacks: Any) -> Any:
    """Send through the messaging services; the commit hook schedules the task."""

    def run(fn: Any, **kwargs: Any) -> Any:
        with django_capture_on_commit_callbacks(execute=True):
            return fn(**kwargs)

    return run


def webhook(user: Any, server: Any, path: str = "/hook", **extra: Any) -> Device:
    return Device.objects.create(user=user, kind="webhook", endpoint=server.url(path), **extra)


def notes(user: Any) -> list[Notification]:
    return list(Notification.objects.filter(user=user).order_by("id"))


def test_offline_dm_recipient_gets_a_signed_webhook(make_user: Any, push_server: Any, tasks: Any, send: Any) -> None:
    ann, bob = make_user("ann"), make_user("bob")
    device = webhook(bob, push_server)
    message, _ = send(direct_send, sender=ann, to="bob", body="hi bob")
    assert tasks.run() == []

    [got] = push_server.at("/hook")
    expected = "sha256=" + hmac.new(device.secret.encode(), got.body, hashlib.sha256).hexdigest()
    assert got.headers["x-signature"] == expected
    assert got.headers["content-type"] == "application/json"
    body = got.json()
    [n] = notes(bob)
    assert body == {
        "id": n.pk,
        "user": {"id": bob.pk, "username": "bob"},
        "channel": message.channel.name,
        "count": 1,
        "message": body["message"],
    }
    assert body["message"]["id"] == message.pk and body["message"]["body"] == "hi bob"
    assert body["message"]["from"] == {"id": ann.pk, "username": "ann"}
    assert n.state == "sent" and n.reason == "direct" and n.sent_at is not None
    assert notes(ann) == []  # never the sender
    [delivery] = n.deliveries.all()
    assert delivery.state == "sent" and delivery.attempts == 1
    assert [(a.status, a.outcome) for a in delivery.log.all()] == [(201, "sent")]


def test_redelivered_tasks_never_push_twice(make_user: Any, push_server: Any, tasks: Any, send: Any) -> None:
    ann, bob = make_user("ann"), make_user("bob")
    webhook(bob, push_server)
    message, _ = send(direct_send, sender=ann, to="bob", body="once")
    tasks.run()
    [n] = notes(bob)
    [delivery] = n.deliveries.all()
    # The broker hands every task over again (acks_late after a crash).
    assert ntasks.message_notify.apply(args=(message.pk,)).get() == 0
    assert ntasks.notification_send.apply(args=(n.pk,)).get() == 0
    assert ntasks.delivery_attempt.apply(args=(delivery.pk,)).get() == "done"
    tasks.run()
    assert len(push_server.at("/hook")) == 1
    assert len(notes(bob)) == 1 and Delivery.objects.count() == 1


def test_live_session_gets_nothing_extra(
    make_user: Any, push_server: Any, tasks: Any, send: Any, presence: Any
) -> None:
    ann, bob = make_user("ann"), make_user("bob")
    webhook(bob, push_server)
    presence(bob, "online")
    send(direct_send, sender=ann, to="bob", body="you are here")
    tasks.run()
    assert notes(bob) == [] and push_server.received == []


def test_away_user_is_notified_unless_they_turned_it_off(
    make_user: Any, push_server: Any, tasks: Any, send: Any, presence: Any
) -> None:
    ann, bob, cid = make_user("ann"), make_user("bob"), make_user("cid")
    webhook(bob, push_server, "/bob")
    webhook(cid, push_server, "/cid")
    presence(bob, "away", actor="bob-1")
    presence(cid, "away", actor="cid-1")
    Preference.objects.create(user=cid, when_away=False)
    send(direct_send, sender=ann, to="bob", body="are you there")
    send(direct_send, sender=ann, to="cid", body="are you there")
    tasks.run()
    assert len(push_server.at("/bob")) == 1
    assert push_server.at("/cid") == [] and notes(cid) == []


def test_dnd_counts_as_present(make_user: Any, push_server: Any, tasks: Any, send: Any, presence: Any) -> None:
    from asgiref.sync import async_to_sync

    from presence.store import presence_store

    ann, bob = make_user("ann"), make_user("bob")
    webhook(bob, push_server)
    presence(bob, "online")
    async_to_sync(presence_store().dnd_set)(bob.pk, True)
    try:
        send(direct_send, sender=ann, to="bob", body="dnd")
        tasks.run()
    finally:
        async_to_sync(presence_store().dnd_set)(bob.pk, False)
    assert notes(bob) == []


def test_mention_in_a_topic_notifies_readers_only(make_user: Any, push_server: Any, tasks: Any, send: Any) -> None:
    ann, bob, cid = make_user("ann"), make_user("Bob"), make_user("cid")
    webhook(bob, push_server, "/bob")
    webhook(cid, push_server, "/cid")
    topic_create(user=ann, name="secret", private=True)
    topic_member_add(by=ann, name="secret", user_ref="Bob")
    # cid is not a member: a mention reaches nobody there.
    send(message_send, sender=ann, name=topic_channel("secret"), body="hey @bob and @cid, see (@ann).")
    topic_create(user=ann, name="open")
    send(message_send, sender=ann, name=topic_channel("open"), body="no mention here, cid@example.com")
    tasks.run()
    assert len(push_server.at("/bob")) == 1 and push_server.at("/cid") == []
    [n] = notes(bob)
    assert n.reason == "mention" and n.channel == "topic:secret"
    assert notes(cid) == [] and notes(ann) == []


def test_mention_nobody_may_read_notifies_no_one(make_user: Any, push_server: Any, tasks: Any, send: Any) -> None:
    ann, cid = make_user("ann"), make_user("cid")
    webhook(cid, push_server)
    topic_create(user=ann, name="hidden", private=True)
    send(message_send, sender=ann, name=topic_channel("hidden"), body="@cid you cannot read this")
    tasks.run()
    assert Notification.objects.count() == 0 and push_server.received == []


def test_topic_level_all_and_muted(make_user: Any, push_server: Any, tasks: Any, send: Any) -> None:
    ann, bob, cid = make_user("ann"), make_user("bob"), make_user("cid")
    webhook(bob, push_server, "/bob")
    webhook(cid, push_server, "/cid")
    topic_create(user=ann, name="news")
    Preference.objects.create(user=bob, channels={"topic:news": "all"})
    Preference.objects.create(user=cid, channels={"topic:news": "muted"})
    send(message_send, sender=ann, name=topic_channel("news"), body="plain news")
    send(message_send, sender=ann, name=topic_channel("news"), body="@cid muted you are")
    tasks.run()
    assert [n.reason for n in notes(bob)] == ["all", "all"]
    assert len(push_server.at("/bob")) == 2
    [muted] = notes(cid)
    assert (muted.state, muted.detail) == ("suppressed", "muted") and push_server.at("/cid") == []


def test_muted_dm_and_mentions_only_and_disabled_suppress(
    make_user: Any, push_server: Any, tasks: Any, send: Any
) -> None:
    ann, bob, cid, dan = make_user("ann"), make_user("bob"), make_user("cid"), make_user("dan")
    for user in (bob, cid, dan):
        webhook(user, push_server, f"/{user.username}")
    send(direct_send, sender=ann, to="bob", body="first")
    send(direct_send, sender=ann, to="cid", body="first")
    Preference.objects.create(user=bob, channels={f"dm:{ann.pk}:{bob.pk}": "muted"})
    Preference.objects.create(user=cid, channels={f"dm:{ann.pk}:{cid.pk}": "mentions"})
    Preference.objects.create(user=dan, enabled=False)
    tasks.run()
    push_server.received.clear()
    send(direct_send, sender=ann, to="bob", body="muted")
    send(direct_send, sender=ann, to="cid", body="no mention")
    send(direct_send, sender=ann, to="cid", body="but @cid look")
    send(direct_send, sender=ann, to="dan", body="off")
    tasks.run()
    assert [(n.state, n.detail) for n in notes(bob)][-1] == ("suppressed", "muted")
    assert [(n.state, n.detail) for n in notes(cid)][1:] == [("suppressed", "mentions_only"), ("sent", "")]
    assert [(n.state, n.detail) for n in notes(dan)] == [("suppressed", "disabled")]
    assert [r.path for r in push_server.received] == ["/cid"]


def test_system_notice_notifies_its_owner(make_user: Any, push_server: Any, tasks: Any, send: Any) -> None:
    bob = make_user("bob")
    webhook(bob, push_server)
    send(system_notice_send, user=bob, body="your export is ready")
    tasks.run()
    [n] = notes(bob)
    assert n.reason == "system" and n.state == "sent"
    assert push_server.at("/hook")[0].json()["message"]["kind"] == "system"


def test_broadcast_and_inactive_users_are_not_notified(make_user: Any, push_server: Any, tasks: Any, send: Any) -> None:
    from messaging.services import broadcast_send

    staff, bob = make_user("staff", is_staff=True), make_user("bob", is_active=False)
    webhook(bob, push_server)
    send(broadcast_send, sender=staff, body="maintenance tonight")
    send(direct_send, sender=staff, to="bob", body="you are banned")
    assert len(tasks.scheduled) == 1  # the broadcast schedules nothing
    tasks.run()
    assert Notification.objects.count() == 0


def test_no_device_is_suppressed_but_listed(make_user: Any, tasks: Any, send: Any) -> None:
    ann, bob = make_user("ann"), make_user("bob")
    send(direct_send, sender=ann, to="bob", body="hello")
    tasks.run()
    [n] = notes(bob)
    assert (n.state, n.detail) == ("suppressed", "no_device")


def test_a_disabled_device_is_skipped(make_user: Any, push_server: Any, tasks: Any, send: Any) -> None:
    ann, bob = make_user("ann"), make_user("bob")
    webhook(bob, push_server, "/on")
    webhook(bob, push_server, "/off", enabled=False)
    send(direct_send, sender=ann, to="bob", body="hello")
    tasks.run()
    assert len(push_server.at("/on")) == 1 and push_server.at("/off") == []


# --- Quiet hours --------------------------------------------------------------


def _quiet(user: Any, mode: str) -> None:
    Preference.objects.create(
        user=user, quiet_start=time(22, 0), quiet_end=time(7, 0), quiet_tz="Europe/Berlin", quiet_mode=mode
    )


def test_quiet_hours_hold_until_they_end(make_user: Any, push_server: Any, tasks: Any, send: Any) -> None:
    ann, bob = make_user("ann"), make_user("bob")
    webhook(bob, push_server)
    _quiet(bob, "deliver")
    message, _ = direct_send(sender=ann, to="bob", body="late night")
    night = datetime(2026, 1, 10, 23, 30, tzinfo=UTC)  # 00:30 in Berlin
    [n] = pipeline.notifications_for_message(message_id=message.pk, now=night)
    step = pipeline.notification_dispatch(notification_id=n.pk, now=night)
    n.refresh_from_db()
    assert n.state == "queued" and n.due_at == datetime(2026, 1, 11, 6, 0, tzinfo=UTC)
    assert step.again_in == pytest.approx(6.5 * 3600)
    assert pipeline.notification_dispatch(notification_id=n.pk, now=night + timedelta(hours=1)).deliveries == []
    step = pipeline.notification_dispatch(notification_id=n.pk, now=n.due_at)
    [delivery_id] = step.deliveries
    assert pipeline.delivery_try(delivery_id=delivery_id, now=n.due_at).outcome == "sent"
    assert len(push_server.at("/hook")) == 1


def test_quiet_hours_drop(make_user: Any, push_server: Any, tasks: Any, send: Any) -> None:
    ann, bob = make_user("ann"), make_user("bob")
    webhook(bob, push_server)
    _quiet(bob, "drop")
    message, _ = direct_send(sender=ann, to="bob", body="late night")
    summer_night = datetime(2026, 7, 10, 21, 0, tzinfo=UTC)  # 23:00 in Berlin (CEST)
    [n] = pipeline.notifications_for_message(message_id=message.pk, now=summer_night)
    pipeline.notification_dispatch(notification_id=n.pk, now=summer_night)
    n.refresh_from_db()
    assert (n.state, n.detail) == ("suppressed", "quiet_hours") and push_server.received == []


# --- Coalescing ---------------------------------------------------------------


def test_dms_from_one_sender_within_the_window_coalesce(
    make_user: Any, push_server: Any, tasks: Any, send: Any, notify_settings: Any
) -> None:
    notify_settings(COALESCE_WINDOW=30.0)
    ann, bob, cid = make_user("ann"), make_user("bob"), make_user("cid")
    webhook(bob, push_server)
    m1, _ = send(direct_send, sender=ann, to="bob", body="one")
    m2, _ = send(direct_send, sender=ann, to="bob", body="two")
    send(direct_send, sender=cid, to="bob", body="other sender")
    m3, _ = send(direct_send, sender=ann, to="bob", body="three")
    later = tasks.run()
    assert sorted(name.rsplit(".", 1)[1] for name, _, _ in later) == ["notification_send", "notification_send"]
    head, *rest = [n for n in notes(bob) if n.sender_id == ann.pk]
    assert head.count == 3 and [n.state for n in rest] == ["coalesced", "coalesced"]
    assert all(n.merged_into_id == head.pk for n in rest)
    # Deleting one folded message takes it out of the count.
    editing.message_delete(user=ann, message_id=m2.pk)
    due = head.due_at + timedelta(seconds=1)
    for n in Notification.objects.filter(user=bob, state="queued"):
        for delivery_id in pipeline.notification_dispatch(notification_id=n.pk, now=due).deliveries:
            pipeline.delivery_try(delivery_id=delivery_id, now=due)
    bodies = sorted((r.json()["count"], r.json()["message"]["body"]) for r in push_server.at("/hook"))
    assert bodies == [(1, "other sender"), (2, "three")]
    # The listing shows heads with their count, not the folded rows.
    from notifications.selectors import notifications_page

    rows, _ = notifications_page(user=bob, before=None, limit=50)
    assert sorted((n.state, n.count) for n in rows) == [("cancelled", 1), ("sent", 1), ("sent", 2)]


def test_a_message_after_the_window_starts_a_new_notification(make_user: Any, tasks: Any, notify_settings: Any) -> None:
    notify_settings(COALESCE_WINDOW=10.0)
    ann, _bob = make_user("ann"), make_user("bob")
    m1, _ = direct_send(sender=ann, to="bob", body="one")
    m2, _ = direct_send(sender=ann, to="bob", body="two")
    start = timezone.now()
    [head] = pipeline.notifications_for_message(message_id=m1.pk, now=start)
    Notification.objects.filter(pk=head.pk).update(created_at=start - timedelta(seconds=11))
    [second] = pipeline.notifications_for_message(message_id=m2.pk, now=start)
    assert second.pk != head.pk and second.merged_into_id is None


# --- Cancelling ---------------------------------------------------------------


def test_deleting_a_message_cancels_its_pending_notification(
    make_user: Any, push_server: Any, tasks: Any, send: Any
) -> None:
    ann, bob = make_user("ann"), make_user("bob")
    webhook(bob, push_server)
    message, _ = send(direct_send, sender=ann, to="bob", body="oops")
    tasks.scheduled.clear()
    ntasks.message_notify.apply(args=(message.pk,))
    [n] = notes(bob)
    n_id = n.pk
    step = pipeline.notification_dispatch(notification_id=n_id)
    editing.message_delete(user=ann, message_id=message.pk)
    [delivery_id] = step.deliveries
    assert pipeline.delivery_try(delivery_id=delivery_id).outcome == "cancelled"
    n.refresh_from_db()
    assert (n.state, n.detail) == ("cancelled", "message deleted")
    assert push_server.received == []
    # Edits notify nobody again; an already-deleted message notifies nobody.
    assert pipeline.notifications_for_message(message_id=message.pk) == []


def test_deleting_a_coalesced_head_promotes_the_next(
    make_user: Any, push_server: Any, tasks: Any, notify_settings: Any
) -> None:
    notify_settings(COALESCE_WINDOW=30.0)
    ann, bob = make_user("ann"), make_user("bob")
    webhook(bob, push_server)
    m1, _ = direct_send(sender=ann, to="bob", body="one")
    m2, _ = direct_send(sender=ann, to="bob", body="two")
    m3, _ = direct_send(sender=ann, to="bob", body="three")
    for m in (m1, m2, m3):
        pipeline.notifications_for_message(message_id=m.pk)
    head = Notification.objects.get(message=m1)
    editing.message_delete(user=ann, message_id=m1.pk)
    new_head = Notification.objects.get(message=m2)
    assert new_head.state == "queued" and new_head.count == 2
    assert Notification.objects.get(message=m3).merged_into_id == new_head.pk
    head.refresh_from_db()
    assert head.state == "cancelled"
    due = new_head.due_at + timedelta(seconds=1)
    [delivery_id] = pipeline.notification_dispatch(notification_id=new_head.pk, now=due).deliveries
    pipeline.delivery_try(delivery_id=delivery_id, now=due)
    [got] = push_server.at("/hook")
    assert got.json()["count"] == 2 and got.json()["message"]["body"] == "three"


def test_editing_does_not_notify_again(make_user: Any, push_server: Any, tasks: Any, send: Any) -> None:
    ann, bob = make_user("ann"), make_user("bob")
    webhook(bob, push_server)
    message, _ = send(direct_send, sender=ann, to="bob", body="tpyo")
    tasks.run()
    send(editing.message_edit, user=ann, message_id=message.pk, body="typo")
    assert tasks.scheduled == []
    assert len(push_server.at("/hook")) == 1


# --- Retries ------------------------------------------------------------------


def _one_delivery(ann: Any, bob: Any, tasks: Any, send: Any) -> Delivery:
    send(direct_send, sender=ann, to="bob", body="retry me")
    return Delivery.objects.get(notification__user=bob)


def test_500_then_200_is_one_delivery_after_a_retry(make_user: Any, push_server: Any, tasks: Any, send: Any) -> None:
    ann, bob = make_user("ann"), make_user("bob")
    webhook(bob, push_server)
    push_server.answer("/hook", 500, 200)
    send(direct_send, sender=ann, to="bob", body="retry me")
    assert tasks.run() == []
    got = push_server.at("/hook")
    assert [r.json()["id"] for r in got] == [got[0].json()["id"]] * 2
    delivery = Delivery.objects.get(notification__user=bob)
    assert delivery.state == "sent" and delivery.attempts == 2
    assert [(a.status, a.outcome) for a in delivery.log.order_by("id")] == [(500, "retry"), (200, "sent")]
    assert Notification.objects.get(user=bob).state == "sent"


def test_backoff_and_retry_after_decide_the_next_try(
    make_user: Any, push_server: Any, tasks: Any, send: Any, notify_settings: Any
) -> None:
    notify_settings(BACKOFF_BASE=2.0, BACKOFF_CAP=60.0)
    ann, bob = make_user("ann"), make_user("bob")
    webhook(bob, push_server)
    push_server.answer("/hook", (429, {"Retry-After": "120"}), 503)
    send(direct_send, sender=ann, to="bob", body="slow down")
    later = tasks.run()
    [(name, args, countdown)] = later
    assert name.endswith("delivery_attempt") and countdown >= 120
    delivery = Delivery.objects.get(pk=args[0])
    first_try = delivery.next_at - timedelta(seconds=countdown)
    # Too early: nothing is sent, the task comes back when it is due.
    early = pipeline.delivery_try(delivery_id=delivery.pk, now=first_try + timedelta(seconds=60))
    assert early.outcome == "early" and early.retry_in == pytest.approx(countdown - 60)
    second = pipeline.delivery_try(delivery_id=delivery.pk, now=delivery.next_at)
    assert second.outcome == "retry" and 0 <= second.retry_in <= 4.0  # full jitter under base * 2
    assert len(push_server.at("/hook")) == 2


def test_attempts_run_out_and_the_delivery_fails(make_user: Any, push_server: Any, tasks: Any, send: Any) -> None:
    ann, bob = make_user("ann"), make_user("bob")
    webhook(bob, push_server, "/bad")
    webhook(bob, push_server, "/good")
    push_server.answer("/bad", 502, 502, 502, 502)
    send(direct_send, sender=ann, to="bob", body="one device fails")
    tasks.run()
    bad = Delivery.objects.get(device__endpoint__endswith="/bad")
    good = Delivery.objects.get(device__endpoint__endswith="/good")
    assert (bad.state, bad.attempts) == ("failed", 3) and len(push_server.at("/bad")) == 3
    assert good.state == "sent" and len(push_server.at("/good")) == 1
    assert Notification.objects.get(user=bob).state == "sent"


def test_every_device_failing_fails_the_notification(make_user: Any, push_server: Any, tasks: Any, send: Any) -> None:
    ann, bob = make_user("ann"), make_user("bob")
    webhook(bob, push_server)
    push_server.answer("/hook", 400)
    send(direct_send, sender=ann, to="bob", body="rejected")
    tasks.run()
    n = Notification.objects.get(user=bob)
    assert (n.state, n.detail) == ("failed", "every device failed")
    assert Delivery.objects.get().attempts == 1  # a 400 is not retried


def test_connection_refused_is_transient(
    make_user: Any, push_server: Any, tasks: Any, send: Any, notify_settings: Any
) -> None:
    notify_settings(MAX_ATTEMPTS=2)
    ann, bob = make_user("ann"), make_user("bob")
    Device.objects.create(user=bob, kind="webhook", endpoint="http://127.0.0.1:9/closed")
    send(direct_send, sender=ann, to="bob", body="nobody listens")
    tasks.run()
    delivery = Delivery.objects.get()
    assert delivery.state == "failed"
    assert [(a.status, a.outcome) for a in delivery.log.all()] == [(None, "retry"), (None, "retry")]
    assert "ConnectionError" in delivery.log.first().error


def test_410_from_a_webhook_removes_the_device(make_user: Any, push_server: Any, tasks: Any, send: Any) -> None:
    ann, bob = make_user("ann"), make_user("bob")
    webhook(bob, push_server)
    push_server.answer("/hook", 410)
    send(direct_send, sender=ann, to="bob", body="gone")
    tasks.run()
    assert not Device.objects.filter(user=bob).exists()
    assert Attempt.objects.get().outcome == "gone"


def test_private_address_is_refused_at_send_time(
    make_user: Any, push_server: Any, tasks: Any, send: Any, notify_settings: Any
) -> None:
    ann, bob = make_user("ann"), make_user("bob")
    webhook(bob, push_server)
    notify_settings(WEBHOOK_ALLOW_PRIVATE=False)
    send(direct_send, sender=ann, to="bob", body="to localhost")
    tasks.run()
    attempt = Attempt.objects.get()
    assert attempt.outcome == "failed" and "private" in attempt.error
    assert push_server.received == []


def test_removed_device_cancels_its_pending_delivery(make_user: Any, push_server: Any, tasks: Any, send: Any) -> None:
    ann, bob = make_user("ann"), make_user("bob")
    device = webhook(bob, push_server)
    send(direct_send, sender=ann, to="bob", body="x")
    tasks.scheduled.clear()
    Notification.objects.all().delete()
    message = direct_send(sender=ann, to="bob", body="y")[0]
    ntasks.message_notify.apply(args=(message.pk,))
    n = Notification.objects.get()
    [delivery_id] = pipeline.notification_dispatch(notification_id=n.pk).deliveries
    device.delete()
    assert pipeline.delivery_try(delivery_id=delivery_id).outcome == "cancelled"
    n.refresh_from_db()
    assert n.state == "failed"


def test_console_backend_logs_instead_of_pushing(
    make_user: Any, push_server: Any, tasks: Any, send: Any, notify_settings: Any, caplog: Any
) -> None:
    notify_settings(BACKEND="console")
    ann, bob, _cid = make_user("ann"), make_user("bob"), make_user("cid")
    webhook(bob, push_server)
    with caplog.at_level("INFO", logger="notifications.console"):
        send(direct_send, sender=ann, to="bob", body="logged")
        send(direct_send, sender=ann, to="cid", body="no device")
        tasks.run()
    assert push_server.received == []
    logged = [r.getMessage() for r in caplog.records if r.name == "notifications.console"]
    assert len(logged) == 2 and '"body":"logged"' in json.dumps(logged).replace('\\"', '"').replace(" ", "")
    assert Notification.objects.get(user=bob).state == "sent"


def test_auto_backend_follows_the_broker(settings: Any, notify_settings: Any) -> None:
    from notifications.backends import ConsoleBackend, backend_for
    from notifications.backends.webhook import WebhookBackend

    notify_settings(BACKEND="auto")
    settings.CELERY_TASK_ALWAYS_EAGER = True
    assert isinstance(backend_for("webhook"), ConsoleBackend)
    settings.CELERY_TASK_ALWAYS_EAGER = False
    assert isinstance(backend_for("webhook"), WebhookBackend)


def test_turning_notifications_off_before_dispatch_suppresses(make_user: Any, push_server: Any) -> None:
    ann, bob = make_user("ann"), make_user("bob")
    webhook(bob, push_server)
    message, _ = direct_send(sender=ann, to="bob", body="too late")
    [n] = pipeline.notifications_for_message(message_id=message.pk)
    Preference.objects.create(user=bob, enabled=False)
    assert pipeline.notification_dispatch(notification_id=n.pk).deliveries == []
    n.refresh_from_db()
    assert (n.state, n.detail) == ("suppressed", "disabled")


def test_a_task_come_too_early_schedules_itself_again(make_user: Any, tasks: Any, notify_settings: Any) -> None:
    notify_settings(COALESCE_WINDOW=30.0)
    ann, _bob = make_user("ann"), make_user("bob")
    message, _ = direct_send(sender=ann, to="bob", body="wait")
    [n] = pipeline.notifications_for_message(message_id=message.pk)
    assert ntasks.notification_send.apply(args=(n.pk,)).get() == 0
    [(task, args, countdown)] = tasks.scheduled
    assert task is ntasks.notification_send and args == (n.pk,) and 25 < countdown <= 30


def test_a_broker_that_is_down_does_not_fail_the_send(
    make_user: Any, send: Any, notify_settings: Any, caplog: Any
) -> None:
    notify_settings(RUNNER="tests.notifications.helpers.broker_down")
    ann, _bob = make_user("ann"), make_user("bob")
    with caplog.at_level("ERROR"):
        message, created = send(direct_send, sender=ann, to="bob", body="stored anyway")
    assert created and message.pk
    assert any("broker unreachable" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


def test_a_claimed_delivery_is_left_alone_until_the_claim_runs_out(make_user: Any, push_server: Any) -> None:
    """A task redelivered while another one pushes finds the claim and comes back later."""
    ann, bob = make_user("ann"), make_user("bob")
    webhook(bob, push_server)
    message, _ = direct_send(sender=ann, to="bob", body="claimed")
    [n] = pipeline.notifications_for_message(message_id=message.pk)
    [delivery_id] = pipeline.notification_dispatch(notification_id=n.pk).deliveries
    now = timezone.now()
    Delivery.objects.filter(pk=delivery_id).update(claimed_until=now + timedelta(seconds=40))
    busy = pipeline.delivery_try(delivery_id=delivery_id, now=now)
    assert busy.outcome == "busy" and busy.retry_in == pytest.approx(40)
    assert push_server.received == []
    # A crashed pusher's claim runs out: the next try goes ahead.
    assert pipeline.delivery_try(delivery_id=delivery_id, now=now + timedelta(seconds=41)).outcome == "sent"
    assert Delivery.objects.get(pk=delivery_id).claimed_until is None
    assert len(push_server.at("/hook")) == 1


# --- One hand-over per stored batch --------------------------------------------


def test_a_stored_batch_hands_its_messages_over_once(
    make_user: Any, push_server: Any, tasks: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from messaging.channels import BROADCAST
    from messaging.services import SendRequest, messages_send

    ann, bob, carol, staff = make_user("ann"), make_user("bob"), make_user("carol"), make_user("mod", is_staff=True)
    webhook(bob, push_server, "/bob")
    webhook(carol, push_server, "/carol")
    with django_capture_on_commit_callbacks(execute=True):
        outcomes = messages_send(
            [
                SendRequest(ann, "one", to="bob"),
                SendRequest(staff, "to everyone", name=BROADCAST),
                SendRequest(ann, "two", to="carol"),
                SendRequest(ann, "lost", to="nobody"),
                SendRequest(carol, "three", to="bob"),
            ]
        )
    stored = [o[0] for o in outcomes if not isinstance(o, Exception)]
    # One task for the batch, with the ids of its non-broadcast messages in order.
    [(task, args, countdown)] = tasks.scheduled
    assert (task.name, countdown) == (ntasks.messages_notify.name, 0.0)
    assert args == ([stored[0].pk, stored[2].pk, stored[3].pk],)
    tasks.run()
    assert [n.message_id for n in notes(bob)] == [stored[0].pk, stored[3].pk]
    assert [n.message_id for n in notes(carol)] == [stored[2].pk]
    assert len(push_server.at("/bob")) == 2 and len(push_server.at("/carol")) == 1
    # Redelivered by the broker: nothing new.
    assert ntasks.messages_notify.apply(args=args).get() == 0
    assert Notification.objects.count() == 3


def test_a_batch_of_broadcasts_hands_nothing_over(
    make_user: Any, tasks: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from messaging.channels import BROADCAST
    from messaging.services import SendRequest, messages_send

    staff = make_user("mod", is_staff=True)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        messages_send([SendRequest(staff, "a", name=BROADCAST), SendRequest(staff, "b", name=BROADCAST)])
    assert callbacks == [] and tasks.scheduled == []
