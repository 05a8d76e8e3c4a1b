"""Webhook pushes: a JSON POST signed with HMAC-SHA256 (`X-Signature: sha256=HEX`)."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import requests
from django.conf import settings

from .base import Push, PushResult, host_check


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookBackend:
    def send(self, *, device: Any, push: Push) -> PushResult:
        host_check(device.endpoint)
        body = json.dumps(push.as_json(), separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "chat-notifications/1",
            "X-Signature": signature(device.secret, body),
        }
        try:
            # No redirects: a redirect could lead past the address check.
            response = requests.post(
                device.endpoint,
                data=body,
                headers=headers,
                timeout=settings.NOTIFICATIONS["HTTP_TIMEOUT"],
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            return PushResult(status=None, error=f"{type(exc).__name__}: {exc}"[:255])
        return PushResult(status=response.status_code, retry_after=response.headers.get("Retry-After"))
