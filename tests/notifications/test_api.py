"""/api/notifications/: preferences, devices, the list and read marks, and every error."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from messaging.services import direct_send, topic_create
from notifications import pipeline
from notifications.models import Device, Notification
from tests.api.helpers import assert_error, client_for

pytestmark = pytest.mark.django_db

PREFS = "/api/notifications/preferences/"
DEVICES = "/api/notifications/devices/"
LIST = "/api/notifications/"

SUBSCRIPTION = {
    "endpoint": "https://8.8.4.4/send/abc",
    "keys": {
        # a valid uncompressed P-256 point and a 16-byte secret, base64url
        "p256dh": "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM",
        "auth": "tBHItJI5svbpez7KI4CCXg",
    },
}


def test_preferences_defaults(make_user: Any) -> None:
    answer = client_for(make_user()).get(PREFS)
    assert answer.status_code == 200
    assert answer.json() == {"enabled": True, "quiet_hours": None, "when_away": True, "channels": {}}


def test_put_replaces_what_it_names(make_user: Any) -> None:
    ann, bob = make_user("ann"), make_user("bob")
    topic_create(user=ann, name="general")
    dm = f"dm:{min(ann.pk, bob.pk)}:{max(ann.pk, bob.pk)}"
    client = client_for(ann)
    body = {
        "quiet_hours": {"start": "22:00", "end": "07:00", "tz": "Europe/Berlin"},
        "channels": {"topic:general": "all", dm: "muted", f"system:{ann.pk}": "mentions"},
    }
    answer = client.put(PREFS, body, format="json")
    assert answer.status_code == 200, answer.content
    assert answer.json() == {
        "enabled": True,
        "quiet_hours": {"start": "22:00", "end": "07:00", "tz": "Europe/Berlin", "then": "deliver"},
        "when_away": True,
        "channels": {dm: "muted", f"system:{ann.pk}": "mentions", "topic:general": "all"},
    }
    answer = client.put(PREFS, {"enabled": False, "when_away": False}, format="json")
    assert answer.json()["quiet_hours"]["tz"] == "Europe/Berlin" and answer.json()["enabled"] is False
    answer = client.put(
        PREFS, {"quiet_hours": {"start": "13:00", "end": "14:30", "tz": "UTC", "then": "drop"}}, format="json"
    )
    assert answer.json()["quiet_hours"] == {"start": "13:00", "end": "14:30", "tz": "UTC", "then": "drop"}
    answer = client.put(PREFS, {"quiet_hours": None, "channels": {}}, format="json")
    assert answer.json() == {"enabled": False, "quiet_hours": None, "when_away": False, "channels": {}}
    assert client.get(PREFS).json() == answer.json()


@pytest.mark.parametrize(
    "body",
    [
        [],
        "text",
        {"volume": 3},
        {"enabled": "yes"},
        {"when_away": 1},
        {"quiet_hours": "night"},
        {"quiet_hours": {"start": "22:00", "end": "07:00"}},
        {"quiet_hours": {"start": "22:00", "end": "07:00", "tz": "Mars/Olympus"}},
        {"quiet_hours": {"start": "22:00", "end": "07:00", "tz": ""}},
        {"quiet_hours": {"start": "25:00", "end": "07:00", "tz": "UTC"}},
        {"quiet_hours": {"start": "7", "end": "07:00", "tz": "UTC"}},
        {"quiet_hours": {"start": "7:05", "end": "07:00", "tz": "UTC"}},
        {"quiet_hours": {"start": "22:00", "end": "07:00", "tz": "../../etc/passwd"}},
        {"quiet_hours": {"start": 22, "end": "07:00", "tz": "UTC"}},
        {"quiet_hours": {"start": "07:00", "end": "07:00", "tz": "UTC"}},
        {"quiet_hours": {"start": "22:00", "end": "07:00", "tz": "UTC", "then": "later"}},
        {"quiet_hours": {"start": "22:00", "end": "07:00", "tz": "UTC", "snooze": 1}},
        {"channels": ["topic:general"]},
        {"channels": {"topic:general": "loud"}},
        {"channels": {"nonsense": "all"}},
        {"channels": {"topic:nosuchtopic": "all"}},
        {"channels": {"broadcast": "all"}},
        {"channels": {"dm:1000000:1000001": "muted"}},
        {"channels": {"system:1000000": "muted"}},
        {"channels": {"topic:private-one": "muted"}},
    ],
)
def test_bad_preferences_are_400(make_user: Any, body: Any) -> None:
    ann, other = make_user(), make_user()
    topic_create(user=ann, name="general")
    topic_create(user=other, name="private-one", private=True)
    assert_error(client_for(ann).put(PREFS, body, format="json"), 400, "bad_request")
    assert client_for(ann).get(PREFS).json()["channels"] == {}


def test_unauthenticated_is_401() -> None:
    client = APIClient()
    for method, path in [("get", PREFS), ("put", PREFS), ("get", DEVICES), ("post", DEVICES), ("get", LIST)]:
        assert_error(getattr(client, method)(path, {}, format="json"), 401, "unauthorized")
    assert_error(client.delete(DEVICES + "1/"), 401, "unauthorized")
    assert_error(client.post(LIST + "read/", {"all": True}, format="json"), 401, "unauthorized")


def test_webhook_device_register_list_remove(make_user: Any, notify_settings: Any) -> None:
    notify_settings(WEBHOOK_ALLOW_PRIVATE=False)
    ann = make_user()
    client = client_for(ann)
    # A public address (never contacted at registration; no DNS needed).
    url = "https://8.8.8.8/relay"
    answer = client.post(DEVICES, {"kind": "webhook", "url": url}, format="json")
    assert answer.status_code == 201, answer.content
    device = answer.json()
    assert device["kind"] == "webhook" and device["url"] == url and device["enabled"]
    assert len(device["secret"]) >= 32
    again = client.post(DEVICES, {"kind": "webhook", "url": url}, format="json")
    assert again.status_code == 200 and again.json()["id"] == device["id"]
    listed = client.get(DEVICES).json()
    assert listed["next"] is None and [d["id"] for d in listed["results"]] == [device["id"]]
    assert "secret" not in listed["results"][0]
    assert client.delete(f"{DEVICES}{device['id']}/").status_code == 204
    assert client.get(DEVICES).json()["results"] == []


def test_webpush_device_and_toggle(make_user: Any, notify_settings: Any) -> None:
    notify_settings(WEBHOOK_ALLOW_PRIVATE=False)
    ann, bob = make_user(), make_user()
    client = client_for(ann)
    answer = client.post(DEVICES, {"kind": "webpush", "subscription": SUBSCRIPTION}, format="json")
    assert answer.status_code == 201, answer.content
    device = Device.objects.get()
    assert device.keys == SUBSCRIPTION["keys"] and answer.json()["id"] == device.pk
    answer = client.patch(f"{DEVICES}{device.pk}/", {"enabled": False}, format="json")
    assert answer.status_code == 200 and answer.json()["enabled"] is False
    assert answer.json()["endpoint"] == SUBSCRIPTION["endpoint"]
    assert_error(client.patch(f"{DEVICES}{device.pk}/", {"enabled": "no"}, format="json"), 400, "bad_request")
    assert_error(client.patch(f"{DEVICES}{device.pk}/", {"kind": "x"}, format="json"), 400, "bad_request")
    # Another user's device does not exist for bob.
    assert_error(client_for(bob).patch(f"{DEVICES}{device.pk}/", {"enabled": True}, format="json"), 404, "not_found")
    assert_error(client_for(bob).delete(f"{DEVICES}{device.pk}/"), 404, "not_found")
    assert_error(client.delete(f"{DEVICES}999999/"), 404, "not_found")
    assert Device.objects.filter(pk=device.pk).exists()


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"kind": "sms", "url": "https://example.com"},
        {"url": "https://example.com"},
        {"kind": "webhook"},
        {"kind": "webhook", "url": 5},
        {"kind": "webhook", "url": "ftp://example.com/x"},
        {"kind": "webhook", "url": "https://"},
        {"kind": "webhook", "url": "https://example.com:99999/x"},
        {"kind": "webhook", "url": "https://user:pw@example.com/x"},
        {"kind": "webhook", "url": "https://" + "a" * 2050 + ".com/"},
        {"kind": "webhook", "url": "http://example.com/plain"},
        {"kind": "webhook", "url": "https://127.0.0.1/hook"},
        {"kind": "webhook", "url": "https://localhost/hook"},
        {"kind": "webhook", "url": "https://10.1.2.3/hook"},
        {"kind": "webhook", "url": "https://192.168.0.10/hook"},
        {"kind": "webhook", "url": "https://169.254.169.254/latest/meta-data"},
        {"kind": "webhook", "url": "https://[::1]/hook"},
        {"kind": "webhook", "url": "https://[::ffff:127.0.0.1]/hook"},
        {"kind": "webhook", "url": "https://no-such-host.invalid/hook"},
        {"kind": "webpush"},
        {"kind": "webpush", "subscription": {"endpoint": "https://8.8.4.4/x"}},
        {"kind": "webpush", "subscription": {**SUBSCRIPTION, "endpoint": "https://10.0.0.1/x"}},
        {
            "kind": "webpush",
            "subscription": {**SUBSCRIPTION, "keys": {"p256dh": "###", "auth": "tBHItJI5svbpez7KI4CCXg"}},
        },
        {"kind": "webpush", "subscription": {**SUBSCRIPTION, "keys": {**SUBSCRIPTION["keys"], "auth": "AAAA"}}},
        {"kind": "webpush", "subscription": {**SUBSCRIPTION, "keys": {**SUBSCRIPTION["keys"], "auth": "A"}}},
        {"kind": "webpush", "subscription": {**SUBSCRIPTION, "keys": {**SUBSCRIPTION["keys"], "p256dh": "AAAA"}}},
        {"kind": "webpush", "subscription": {**SUBSCRIPTION, "keys": {**SUBSCRIPTION["keys"], "auth": 7}}},
    ],
)
def test_bad_devices_are_400(make_user: Any, notify_settings: Any, body: Any) -> None:
    notify_settings(WEBHOOK_ALLOW_PRIVATE=False)
    assert_error(client_for(make_user()).post(DEVICES, body, format="json"), 400, "bad_request")
    assert Device.objects.count() == 0


def test_plain_http_only_when_allowed(make_user: Any, notify_settings: Any, settings: Any, push_server: Any) -> None:
    ann = make_user()
    notify_settings(WEBHOOK_ALLOW_PRIVATE=True)
    answer = client_for(ann).post(DEVICES, {"kind": "webhook", "url": push_server.url("/h")}, format="json")
    assert answer.status_code == 201
    notify_settings(WEBHOOK_ALLOW_PRIVATE=False)
    settings.DEBUG = True
    answer = client_for(ann).post(DEVICES, {"kind": "webhook", "url": push_server.url("/h2")}, format="json")
    assert_error(answer, 400, "bad_request")  # http passes with DEBUG, loopback still does not
    assert "private" in answer.json()["message"]


def test_device_limit(make_user: Any, notify_settings: Any, push_server: Any) -> None:
    notify_settings(MAX_DEVICES=2)
    client = client_for(make_user())
    for path in ("/a", "/b"):
        assert client.post(DEVICES, {"kind": "webhook", "url": push_server.url(path)}, format="json").status_code == 201
    answer = client.post(DEVICES, {"kind": "webhook", "url": push_server.url("/c")}, format="json")
    assert_error(answer, 409, "conflict")


def _notifications(bob: Any, ann: Any, count: int) -> list[int]:
    ids = []
    for i in range(count):
        message, _ = direct_send(sender=ann, to=bob.username, body=f"m{i}")
        ids += [n.pk for n in pipeline.notifications_for_message(message_id=message.pk)]
    return ids


def test_list_pages_and_marks_read(make_user: Any) -> None:
    ann, bob, cid = make_user(), make_user(), make_user()
    ids = _notifications(bob, ann, 3)
    _notifications(cid, ann, 1)
    client = client_for(bob)
    first = client.get(LIST + "?limit=2").json()
    assert [n["id"] for n in first["results"]] == ids[::-1][:2]
    entry = first["results"][0]
    assert entry["state"] == "queued" and entry["reason"] == "direct" and entry["count"] == 1
    assert entry["message"]["body"] == "m2" and entry["read"] is False and entry["sent_at"] is None
    assert first["next"].startswith("http://testserver/api/notifications/?before=")
    second = client.get(first["next"]).json()
    assert [n["id"] for n in second["results"]] == [ids[0]] and second["next"] is None

    assert client.post(LIST + "read/", {"ids": [ids[0]]}, format="json").json() == {"updated": 1}
    assert client.post(LIST + "read/", {"all": True}, format="json").json() == {"updated": 2}
    assert all(n["read"] for n in client.get(LIST).json()["results"])
    # cid's notification is untouched by bob's "all".
    assert Notification.objects.get(user=cid).read_at is None
    assert client_for(cid).post(LIST + "read/", {"ids": ids}, format="json").json() == {"updated": 0}


@pytest.mark.parametrize("query", ["?limit=0", "?limit=201", "?limit=x", "?before=abc", "?before=-1"])
def test_bad_list_queries(make_user: Any, query: str) -> None:
    assert_error(client_for(make_user()).get(LIST + query), 400, "bad_request")


@pytest.mark.parametrize("body", [[], {}, {"all": False}, {"ids": "1"}, {"ids": [True]}, {"ids": [1], "all": True}])
def test_bad_read_bodies(make_user: Any, body: Any) -> None:
    assert_error(client_for(make_user()).post(LIST + "read/", body, format="json"), 400, "bad_request")
