"""WebSocket authentication (simplejwt access tokens) and the Origin check.

The middleware never refuses a socket itself: it records in the scope who
the user is, or why not, and the session actor accepts and then closes with
4401 or 4403 so that a browser can read the close code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.security.websocket import OriginValidator
from django.conf import settings
from django.contrib.auth import get_user_model
from rest_framework_simplejwt import state
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.tokens import AccessToken

CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403


@dataclass(frozen=True, slots=True)
class TokenCheck:
    """The outcome of checking a token: a user and expiry, or a close code.

    `token_decode` fills `user_id` only (no database); `token_check` and
    `token_user_check` the `user` too."""

    user: Any = None
    expires_at: float = 0.0
    close_code: int = 0
    reason: str = ""
    user_id: Any = None


class _AccessToken(AccessToken):
    """simplejwt's AccessToken, verified the same way, without looking its
    backend up by import path for every token (a tenth of a connect's CPU)."""

    @property
    def token_backend(self) -> Any:
        return state.token_backend


def token_decode(raw: str | None) -> TokenCheck:
    """Validate an access token's signature and expiry (no database)."""
    if not raw:
        return TokenCheck(close_code=CLOSE_UNAUTHORIZED, reason="no token")
    try:
        token = _AccessToken(raw)
    except TokenError as exc:
        return TokenCheck(close_code=CLOSE_UNAUTHORIZED, reason=str(exc))
    return TokenCheck(user_id=token.get(api_settings.USER_ID_CLAIM), expires_at=float(token["exp"]))


def token_user_check(check: TokenCheck) -> TokenCheck:
    """Load the user of a decoded token (sync: touches the DB)."""
    return token_users_check([check])[0]


def token_users_check(checks: list[TokenCheck]) -> list[TokenCheck]:
    """`token_user_check` of many decoded tokens in one query (the connects
    of a burst): each answered from the database as it is now, never from a
    cache, so a user deactivated or deleted a moment ago is refused."""
    field = api_settings.USER_ID_FIELD
    wanted = {str(c.user_id): c.user_id for c in checks if not c.close_code}
    users = {}
    if wanted:
        found = get_user_model().objects.filter(**{f"{field}__in": list(wanted.values())})
        users = {str(getattr(user, field)): user for user in found}
    return [check if check.close_code else _user_checked(check, users.get(str(check.user_id))) for check in checks]


def _user_checked(check: TokenCheck, user: Any) -> TokenCheck:
    if user is None:
        return TokenCheck(close_code=CLOSE_UNAUTHORIZED, reason="unknown user", user_id=check.user_id)
    if not user.is_active:
        return TokenCheck(close_code=CLOSE_FORBIDDEN, reason="user is inactive", user_id=check.user_id)
    return TokenCheck(user=user, expires_at=check.expires_at, user_id=user.pk)


def token_check(raw: str | None) -> TokenCheck:
    """Validate an access token and load its user (sync: touches the DB)."""
    return token_user_check(token_decode(raw))


token_check_async = database_sync_to_async(token_check, thread_sensitive=False)


def token_from_scope(scope: dict[str, Any]) -> str | None:
    """`?token=` or, for non-browser clients, `Authorization: Bearer`."""
    query = parse_qs(scope.get("query_string", b"").decode("latin1"))
    if query.get("token"):
        return query["token"][0]
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin1").partition(" ")
            if scheme.lower() == "bearer":
                return credentials.strip()
    return None


class JwtAuthMiddleware:
    """Puts `auth` (a decoded TokenCheck) into the WebSocket scope.

    Only the token is checked here (no database, no thread hop): the session
    actor loads the user in the one database call of its connect, together
    with the rest of what a connect reads (`realtime.consumers.connect_reads_many`).
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        scope = {**scope, "auth": token_decode(token_from_scope(scope))}
        return await self.app(scope, receive, send)


class BrowserOriginValidator(OriginValidator):
    """Browsers must come from an allowed origin; clients without one are served."""

    def valid_origin(self, parsed_origin: Any) -> bool:
        if parsed_origin is None:
            return True
        return self.validate_origin(parsed_origin)


def origin_checked(app: Any) -> BrowserOriginValidator:
    allowed = [*settings.ALLOWED_HOSTS, *settings.CHAT["ALLOWED_ORIGINS"]]
    return BrowserOriginValidator(app, allowed)
