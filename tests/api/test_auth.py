"""Registration, token pair and refresh, and their throttling (protocol section 8)."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from rest_framework.test import APIClient
from rest_framework.throttling import ScopedRateThrottle
from rest_framework_simplejwt.tokens import AccessToken

pytestmark = pytest.mark.django_db

REGISTER = "/api/auth/register/"
TOKEN = "/api/auth/token/"
REFRESH = "/api/auth/token/refresh/"
STRONG = "Correct-horse-42"


@pytest.fixture
def api() -> APIClient:
    return APIClient()


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.content
    body = response.json()
    assert body["code"] == code
    assert isinstance(body["message"], str) and body["message"]
    return body


# --- register ---------------------------------------------------------------


def test_register_creates_user(api: APIClient) -> None:
    response = api.post(REGISTER, {"username": "ann", "password": STRONG}, format="json")
    assert response.status_code == 201
    body = response.json()
    user = get_user_model().objects.get(username="ann")
    assert body == {"id": user.pk, "username": "ann"}
    assert user.check_password(STRONG)
    assert user.is_active and not user.is_staff


def test_register_then_obtain_token(api: APIClient) -> None:
    api.post(REGISTER, {"username": "ann", "password": STRONG}, format="json")
    response = api.post(TOKEN, {"username": "ann", "password": STRONG}, format="json")
    assert response.status_code == 200
    assert AccessToken(response.json()["access"])["user_id"] == str(get_user_model().objects.get(username="ann").pk)


@pytest.mark.parametrize("taken", ["ann", "ANN", "Ann"])
def test_register_taken_username_is_conflict_case_insensitive(api: APIClient, make_user: Any, taken: str) -> None:
    make_user("ann")
    response = api.post(REGISTER, {"username": taken, "password": STRONG}, format="json")
    assert_error(response, 409, "conflict")
    assert get_user_model().objects.filter(username__iexact="ann").count() == 1


@pytest.mark.parametrize(
    "password",
    ["short1", "password", "12345678901", "annabelle-x"],
    ids=["too-short", "common", "numeric", "similar-to-username"],
)
def test_register_weak_password_is_bad_request(api: APIClient, password: str) -> None:
    response = api.post(REGISTER, {"username": "annabelle", "password": password}, format="json")
    body = assert_error(response, 400, "bad_request")
    assert "password" in body["message"]
    assert not get_user_model().objects.filter(username="annabelle").exists()


@pytest.mark.parametrize("username", ["bad name", "ann/x", "", "a" * 151, "ann!"])
def test_register_bad_username_is_bad_request(api: APIClient, username: str) -> None:
    response = api.post(REGISTER, {"username": username, "password": STRONG}, format="json")
    body = assert_error(response, 400, "bad_request")
    assert "username" in body["message"]
    assert get_user_model().objects.count() == 0


def test_register_missing_fields_is_bad_request(api: APIClient) -> None:
    body = assert_error(api.post(REGISTER, {}, format="json"), 400, "bad_request")
    assert "username" in body["message"] and "password" in body["message"]


def test_register_closed_is_forbidden(api: APIClient, settings: Any) -> None:
    settings.OPEN_REGISTRATION = False
    response = api.post(REGISTER, {"username": "ann", "password": STRONG}, format="json")
    assert_error(response, 403, "forbidden")
    assert not get_user_model().objects.filter(username="ann").exists()


# --- token pair and refresh -------------------------------------------------


def test_token_obtain_returns_pair(api: APIClient, make_user: Any) -> None:
    user = make_user("ann", password=STRONG)
    response = api.post(TOKEN, {"username": "ann", "password": STRONG}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access", "refresh"}
    assert AccessToken(body["access"])["user_id"] == str(user.pk)


def test_access_token_authenticates_api(api: APIClient, make_user: Any) -> None:
    make_user("ann", password=STRONG)
    access = api.post(TOKEN, {"username": "ann", "password": STRONG}, format="json").json()["access"]
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")
    assert api.get("/api/topics/").status_code == 200


def test_token_wrong_password_is_unauthorized(api: APIClient, make_user: Any) -> None:
    make_user("ann", password=STRONG)
    response = api.post(TOKEN, {"username": "ann", "password": "wrong-password"}, format="json")
    body = assert_error(response, 401, "unauthorized")
    assert set(body) == {"code", "message"}
    assert "access" not in body


def test_token_unknown_user_is_unauthorized(api: APIClient) -> None:
    response = api.post(TOKEN, {"username": "nobody", "password": STRONG}, format="json")
    assert_error(response, 401, "unauthorized")


def test_token_inactive_user_refused(api: APIClient, make_user: Any) -> None:
    make_user("ann", password=STRONG, is_active=False)
    response = api.post(TOKEN, {"username": "ann", "password": STRONG}, format="json")
    body = assert_error(response, 401, "unauthorized")
    assert "access" not in body


def test_token_missing_fields_is_bad_request(api: APIClient) -> None:
    assert_error(api.post(TOKEN, {"username": "ann"}, format="json"), 400, "bad_request")


def test_refresh_gives_new_access(api: APIClient, make_user: Any) -> None:
    user = make_user("ann", password=STRONG)
    pair = api.post(TOKEN, {"username": "ann", "password": STRONG}, format="json").json()
    response = api.post(REFRESH, {"refresh": pair["refresh"]}, format="json")
    assert response.status_code == 200
    assert AccessToken(response.json()["access"])["user_id"] == str(user.pk)


@pytest.mark.parametrize("refresh", ["garbage", "a.b.c"])
def test_refresh_bad_token_is_unauthorized(api: APIClient, refresh: str) -> None:
    response = api.post(REFRESH, {"refresh": refresh}, format="json")
    body = assert_error(response, 401, "unauthorized")
    # the human text, not simplejwt's whole error dict flattened
    assert "invalid" in body["message"] and "token_not_valid" not in body["message"]


def test_refresh_with_access_token_is_unauthorized(api: APIClient, make_user: Any) -> None:
    make_user("ann", password=STRONG)
    pair = api.post(TOKEN, {"username": "ann", "password": STRONG}, format="json").json()
    response = api.post(REFRESH, {"refresh": pair["access"]}, format="json")
    assert_error(response, 401, "unauthorized")


# --- throttling ---------------------------------------------------------------


@pytest.fixture
def auth_rate_3(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"auth": "3/minute"})
    cache.clear()
    yield
    cache.clear()


@pytest.mark.parametrize("path", [REGISTER, TOKEN, REFRESH])
def test_auth_calls_are_throttled(api: APIClient, auth_rate_3: Any, path: str) -> None:
    for _ in range(3):
        response = api.post(path, {"username": "x", "password": "y", "refresh": "z"}, format="json")
        assert response.status_code != 429
    response = api.post(path, {"username": "x", "password": "y", "refresh": "z"}, format="json")
    body = assert_error(response, 429, "rate_limited")
    assert isinstance(body["retry_after"], int) and 1 <= body["retry_after"] <= 60
    assert response["Retry-After"] == str(body["retry_after"])


def test_throttle_is_shared_between_auth_views_of_one_address(api: APIClient, auth_rate_3: Any) -> None:
    """The scope counts per client address: tries spread over endpoints add up."""
    api.post(REGISTER, {}, format="json")
    api.post(TOKEN, {}, format="json")
    api.post(REFRESH, {}, format="json")
    assert_error(api.post(TOKEN, {}, format="json"), 429, "rate_limited")


def test_throttle_counts_per_address(auth_rate_3: Any) -> None:
    first, second = APIClient(REMOTE_ADDR="10.0.0.1"), APIClient(REMOTE_ADDR="10.0.0.2")
    for _ in range(3):
        first.post(TOKEN, {}, format="json")
    assert first.post(TOKEN, {}, format="json").status_code == 429
    assert second.post(TOKEN, {}, format="json").status_code == 400


def test_throttle_does_not_apply_to_other_api_views(api: APIClient, make_user: Any, auth_rate_3: Any) -> None:
    from tests.conftest import token_for

    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(make_user())}")
    for _ in range(5):
        assert api.get("/api/topics/").status_code == 200


def test_throttle_ignores_client_supplied_forwarded_for(api: APIClient, auth_rate_3: Any) -> None:
    """X-Forwarded-For is the client's to invent; a fresh value per try must not
    buy a fresh allowance (the server behind a proxy gets the real address in
    REMOTE_ADDR from uvicorn's trusted proxy headers)."""
    for i in range(3):
        api.post(TOKEN, {}, format="json", HTTP_X_FORWARDED_FOR=f"203.0.113.{i}")
    assert_error(api.post(TOKEN, {}, format="json", HTTP_X_FORWARDED_FOR="203.0.113.99"), 429, "rate_limited")
