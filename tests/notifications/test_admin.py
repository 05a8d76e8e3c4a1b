"""The notification models in the admin: the pages load for staff."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from messaging.services import direct_send
from notifications import pipeline
from notifications.models import Attempt, Delivery, Device, Notification

pytestmark = pytest.mark.django_db


def test_admin_pages_load(make_user: Any, push_server: Any) -> None:
    admin = make_user("root", is_staff=True, is_superuser=True)
    ann, bob = make_user("ann"), make_user("bob")
    device = Device.objects.create(user=bob, kind="webhook", endpoint=push_server.url("/h"))
    message, _ = direct_send(sender=ann, to="bob", body="hi")
    [n] = pipeline.notifications_for_message(message_id=message.pk)
    [delivery_id] = pipeline.notification_dispatch(notification_id=n.pk).deliveries
    pipeline.delivery_try(delivery_id=delivery_id)
    client = Client()
    client.force_login(admin)
    for path in (
        "/admin/notifications/notification/",
        f"/admin/notifications/notification/{n.pk}/change/",
        "/admin/notifications/delivery/",
        f"/admin/notifications/delivery/{delivery_id}/change/",
        "/admin/notifications/device/",
        f"/admin/notifications/device/{device.pk}/change/",
        "/admin/notifications/preference/",
    ):
        answer = client.get(path)
        assert answer.status_code == 200, path
    page = client.get(f"/admin/notifications/device/{device.pk}/change/").content.decode()
    assert device.secret not in page
    assert Attempt.objects.get(delivery=Delivery.objects.get(pk=delivery_id)).outcome == "sent"
    assert Notification.objects.get(pk=n.pk).state == "sent"
