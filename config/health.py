"""Liveness and readiness probes."""

from __future__ import annotations

import redis
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _database_ok() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return "ok"


def _redis_ok() -> str:
    if not settings.REDIS_URL:
        return "not used (in-memory channel layer)"
    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    finally:
        client.close()
    return "ok"


def readyz(request: HttpRequest) -> JsonResponse:
    """200 when the database and Redis answer for real, else 503 with why."""
    checks: dict[str, str] = {}
    ready = True
    for name, probe in (("database", _database_ok), ("redis", _redis_ok)):
        try:
            checks[name] = probe()
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            checks[name] = f"error: {exc.__class__.__name__}: {exc}"
            ready = False
    return JsonResponse({"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503)
