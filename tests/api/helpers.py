"""Helpers shared by the REST API tests."""

from __future__ import annotations

from typing import Any

from rest_framework.test import APIClient

from tests.conftest import token_for


def client_for(user: Any) -> APIClient:
    """An API client authenticated as `user` with a fresh access token."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(user)}")
    return client


def assert_error(response: Any, status: int, code: str) -> None:
    """The API's error shape: the status, `code`, and a non-empty `message`."""
    assert response.status_code == status, response.content
    body = response.json()
    assert body["code"] == code
    assert isinstance(body["message"], str) and body["message"]
