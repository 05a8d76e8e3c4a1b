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
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.tokens import AccessToken

CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403


@dataclass(frozen=True, slots=True)
class TokenCheck:
    """The outcome of checking a token: a user and expiry, or a close code."""

    user: Any = None
    expires_at: float = 0.0
    close_code: int = 0
    reason: str = ""


def token_check(raw: str | None) -> TokenCheck:
    """Validate an access token and load its user (sync: touches the DB)."""
    if not raw:
        return TokenCheck(close_code=CLOSE_UNAUTHORIZED, reason="no token")
    try:
        token = AccessToken(raw)
    except TokenError as exc:
        return TokenCheck(close_code=CLOSE_UNAUTHORIZED, reason=str(exc))
    user_id = token.get(api_settings.USER_ID_CLAIM)
    user = get_user_model().objects.filter(**{api_settings.USER_ID_FIELD: user_id}).first()
    if user is None:
        return TokenCheck(close_code=CLOSE_UNAUTHORIZED, reason="unknown user")
    if not user.is_active:
        return TokenCheck(close_code=CLOSE_FORBIDDEN, reason="user is inactive")
    return TokenCheck(user=user, expires_at=float(token["exp"]))


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
    """Puts `auth` (a TokenCheck) and `user` into the WebSocket scope."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        check = await token_check_async(token_from_scope(scope))
        scope = {**scope, "auth": check, "user": check.user}
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
