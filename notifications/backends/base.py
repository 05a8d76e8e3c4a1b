"""The backend interface, and the URL policy every HTTP push obeys.

A backend turns one `Push` for one device into one request and reports what
came back as a `PushResult`; it never retries and never raises for an HTTP
failure (the task decides, from the status, whether to retry). `PushRefused`
means the push must not be tried at all (a URL that resolves to a private
address, Web Push without VAPID keys).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from django.conf import settings

from messaging.errors import BadRequest

from .. import rules


@dataclass(frozen=True, slots=True)
class Push:
    """What a device receives: the webhook body of PROTOCOL.md section 8."""

    id: int
    user: dict[str, Any]
    channel: str
    count: int
    message: dict[str, Any] | None

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "user": self.user, "channel": self.channel, "count": self.count, "message": self.message}


@dataclass(frozen=True, slots=True)
class PushResult:
    status: int | None  # None: no HTTP answer (timeout, connection refused)
    retry_after: str | None = None  # the raw Retry-After header
    error: str = ""


class PushRefused(Exception):
    """This push must not be sent (policy or configuration); not retried."""


class Backend(Protocol):
    def send(self, *, device: Any, push: Push) -> PushResult: ...


def _allow_private() -> bool:
    return bool(settings.NOTIFICATIONS["WEBHOOK_ALLOW_PRIVATE"])


def url_validate(url: object, *, field: str = "url") -> str:
    """A push URL as registered: https (http only with WEBHOOK_ALLOW_PRIVATE or
    DEBUG), a host, and every address it resolves to public (unless allowed)."""
    if not isinstance(url, str) or not url or len(url) > 2048:
        raise BadRequest(f"{field} must be a URL of at most 2048 characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise BadRequest(f"{field} is not a valid URL") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise BadRequest(f"{field} must be an https:// URL with a host")
    if parts.scheme == "http" and not (_allow_private() or settings.DEBUG):
        raise BadRequest(f"{field} must use https (plain http needs WEBHOOK_ALLOW_PRIVATE=1 or DEBUG)")
    if parts.username or parts.password:
        raise BadRequest(f"{field} must not carry credentials")
    try:
        host_check(url)
    except PushRefused as exc:
        raise BadRequest(f"{field}: {exc}") from None
    return url


def host_check(url: str) -> None:
    """Resolve the URL's host now; refuse loopback, private and link-local
    addresses unless WEBHOOK_ALLOW_PRIVATE. Called at registration and again
    right before each send (DNS may have changed)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise PushRefused(f"cannot resolve {host!r}") from None
    addresses = {info[4][0] for info in infos}
    if not rules.addresses_allowed(addresses, allow_private=_allow_private()):
        raise PushRefused(f"{host!r} resolves to a loopback, private or link-local address")
