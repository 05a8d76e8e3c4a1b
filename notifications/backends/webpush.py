"""Web Push (RFC 8030, aes128gcm payload encryption, VAPID) through pywebpush."""

from __future__ import annotations

import json
from typing import Any

import requests
from django.conf import settings
from pywebpush import WebPushException, webpush

from .base import Push, PushRefused, PushResult, host_check

# Push services accept about 4 KiB of encrypted payload; long bodies are cut.
MAX_BODY_CHARS = 1000
TTL = 24 * 3600


def vapid_configured() -> bool:
    conf = settings.NOTIFICATIONS
    return bool(conf["VAPID_PUBLIC_KEY"] and conf["VAPID_PRIVATE_KEY"])


def payload(push: Push) -> str:
    data = push.as_json()
    message = data["message"]
    if message and isinstance(message.get("body"), str) and len(message["body"]) > MAX_BODY_CHARS:
        data["message"] = {**message, "body": message["body"][:MAX_BODY_CHARS], "truncated": True}
    return json.dumps(data, separators=(",", ":"))


class WebPushBackend:
    def send(self, *, device: Any, push: Push) -> PushResult:
        if not vapid_configured():
            raise PushRefused("Web Push is not configured: VAPID_PUBLIC_KEY and VAPID_PRIVATE_KEY are missing")
        host_check(device.endpoint)
        conf = settings.NOTIFICATIONS
        session = requests.Session()
        session.max_redirects = 0
        try:
            response = webpush(
                subscription_info={"endpoint": device.endpoint, "keys": device.keys},
                data=payload(push),
                vapid_private_key=conf["VAPID_PRIVATE_KEY"],
                vapid_claims={"sub": conf["VAPID_SUBJECT"]},
                timeout=conf["HTTP_TIMEOUT"],
                ttl=TTL,
                headers={"Urgency": "high"},
                requests_session=session,
            )
        except WebPushException as exc:
            if exc.response is None:
                return PushResult(status=None, error=str(exc)[:255])
            return PushResult(
                status=exc.response.status_code,
                retry_after=exc.response.headers.get("Retry-After"),
                error=str(exc)[:255],
            )
        except requests.TooManyRedirects as exc:
            # A redirect is not followed (it could lead past the address check).
            status = exc.response.status_code if exc.response is not None else None
            return PushResult(status=status, error="redirect refused")
        except requests.RequestException as exc:
            return PushResult(status=None, error=f"{type(exc).__name__}: {exc}"[:255])
        finally:
            session.close()
        return PushResult(status=response.status_code)
