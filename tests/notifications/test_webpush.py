"""Web Push end to end against a local endpoint: the test holds the browser's
keys, decrypts the aes128gcm payload and checks the VAPID signature."""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import http_ece
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from messaging.services import direct_send
from notifications.models import Device, Notification
from tests.api.helpers import client_for

from .conftest import VAPID_PUBLIC

pytestmark = pytest.mark.django_db


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Browser:
    """What a browser keeps for a push subscription: an ECDH key pair and the auth secret."""

    def __init__(self, endpoint: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.auth = os.urandom(16)
        public = self.key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        self.subscription = {
            "endpoint": endpoint,
            "expirationTime": None,
            "keys": {"p256dh": b64url(public), "auth": b64url(self.auth)},
        }

    def decrypt(self, body: bytes) -> bytes:
        return http_ece.decrypt(body, private_key=self.key, auth_secret=self.auth, version="aes128gcm")


def vapid_claims(header: str, audience: str) -> dict[str, Any]:
    scheme, _, params = header.partition(" ")
    assert scheme == "vapid"
    fields = dict(part.split("=", 1) for part in params.split(","))
    assert fields["k"] == VAPID_PUBLIC
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(fields["k"]))
    return jwt.decode(fields["t"], key=public, algorithms=["ES256"], audience=audience)


def test_webpush_payload_decrypts_and_vapid_verifies(
    make_user: Any, push_server: Any, tasks: Any, django_capture_on_commit_callbacks: Any
) -> None:
    ann, bob = make_user("ann"), make_user("bob")
    browser = Browser(push_server.url("/push/sub-1"))
    answer = client_for(bob).post(
        "/api/notifications/devices/", {"kind": "webpush", "subscription": browser.subscription}, format="json"
    )
    assert answer.status_code == 201, answer.content
    assert answer.json()["kind"] == "webpush" and "secret" not in answer.json()

    with django_capture_on_commit_callbacks(execute=True):
        message, _ = direct_send(sender=ann, to="bob", body="encrypted hello " + "x" * 2000)
    tasks.run()

    [got] = push_server.at("/push/sub-1")
    assert got.headers["content-encoding"] == "aes128gcm"
    assert int(got.headers["ttl"]) > 0
    payload = json.loads(browser.decrypt(got.body))
    n = Notification.objects.get(user=bob)
    assert payload["id"] == n.pk and payload["count"] == 1 and payload["channel"] == message.channel.name
    assert payload["message"]["id"] == message.pk
    assert payload["message"]["body"].startswith("encrypted hello") and payload["message"]["truncated"] is True
    claims = vapid_claims(got.headers["authorization"], audience=push_server.base)
    assert claims["sub"] == "mailto:ops@example.com"
    assert n.state == "sent"


@pytest.mark.parametrize("status", [404, 410])
def test_gone_subscription_removes_the_device(
    status: int, make_user: Any, push_server: Any, tasks: Any, django_capture_on_commit_callbacks: Any
) -> None:
    ann, bob = make_user("ann"), make_user("bob")
    browser = Browser(push_server.url("/push/old"))
    keep = Browser(push_server.url("/push/new"))
    for b in (browser, keep):
        Device.objects.create(
            user=bob, kind="webpush", endpoint=b.subscription["endpoint"], keys=b.subscription["keys"]
        )
    push_server.answer("/push/old", status)
    with django_capture_on_commit_callbacks(execute=True):
        direct_send(sender=ann, to="bob", body="hello")
    tasks.run()
    assert list(Device.objects.filter(user=bob).values_list("endpoint", flat=True)) == [keep.subscription["endpoint"]]
    assert len(push_server.at("/push/old")) == 1  # not retried
    assert Notification.objects.get(user=bob).state == "sent"


def test_webpush_without_vapid_keys_is_refused(
    make_user: Any, push_server: Any, tasks: Any, notify_settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    ann, bob = make_user("ann"), make_user("bob")
    browser = Browser(push_server.url("/push/x"))
    Device.objects.create(
        user=bob, kind="webpush", endpoint=browser.subscription["endpoint"], keys=browser.subscription["keys"]
    )
    notify_settings(VAPID_PRIVATE_KEY="")
    with django_capture_on_commit_callbacks(execute=True):
        direct_send(sender=ann, to="bob", body="hello")
    tasks.run()
    n = Notification.objects.get(user=bob)
    assert n.state == "failed" and push_server.received == []
    attempt = n.deliveries.get().log.get()
    assert attempt.outcome == "failed" and "VAPID" in attempt.error
    # Registering one is refused with a clear error too.
    answer = client_for(bob).post(
        "/api/notifications/devices/", {"kind": "webpush", "subscription": browser.subscription}, format="json"
    )
    assert answer.status_code == 409 and "VAPID" in answer.json()["message"]
    assert client_for(bob).get("/api/notifications/webpush-key/").json() == {"public_key": None}


def test_webpush_key_endpoint(make_user: Any) -> None:
    assert client_for(make_user()).get("/api/notifications/webpush-key/").json() == {"public_key": VAPID_PUBLIC}


def test_a_redirect_is_not_followed(
    make_user: Any, push_server: Any, tasks: Any, django_capture_on_commit_callbacks: Any
) -> None:
    ann, bob = make_user("ann"), make_user("bob")
    browser = Browser(push_server.url("/push/moved"))
    Device.objects.create(
        user=bob, kind="webpush", endpoint=browser.subscription["endpoint"], keys=browser.subscription["keys"]
    )
    push_server.answer("/push/moved", (307, {"Location": push_server.url("/elsewhere")}))
    with django_capture_on_commit_callbacks(execute=True):
        direct_send(sender=ann, to="bob", body="hello")
    tasks.run()
    assert push_server.at("/elsewhere") == []
    attempt = Notification.objects.get(user=bob).deliveries.get().log.get()
    assert (attempt.status, attempt.outcome) == (307, "failed")
