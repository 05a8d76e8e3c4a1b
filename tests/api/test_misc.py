"""Probes, schema and docs, and the error shape of requests no view answers (protocol section 8)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from django.conf import settings as django_settings
from rest_framework.test import APIClient

from tests.conftest import token_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def authed(make_user: Any) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(make_user())}")
    return client


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["code"] == code
    assert isinstance(body["message"], str) and body["message"]
    return body


# --- probes -------------------------------------------------------------------


def test_healthz() -> None:
    response = APIClient().get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_checks_database_and_redis() -> None:
    assert django_settings.REDIS_URL, "the suite runs with REDIS_URL (see the Makefile)"
    response = APIClient().get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}}


def test_readyz_unavailable_when_redis_is_unreachable(settings: Any) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    response = APIClient().get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"].startswith("error: ")


def test_readyz_without_redis_in_embedded_mode(settings: Any) -> None:
    settings.REDIS_URL = ""
    response = APIClient().get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"]["redis"].startswith("not used")


# --- schema and docs ----------------------------------------------------------

PATHS = {
    "/api/auth/register/": {"post"},
    "/api/auth/token/": {"post"},
    "/api/auth/token/refresh/": {"post"},
    "/api/channels/{channel}/messages/": {"get"},
    "/api/topics/": {"get", "post"},
    "/api/topics/{name}/members/": {"post", "delete"},
}


def _schema(client: APIClient) -> dict[str, Any]:
    response = client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    return response.json()


def test_schema_lists_the_paths(authed: APIClient) -> None:
    schema = _schema(authed)
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"]
    for path, methods in PATHS.items():
        assert path in schema["paths"], path
        assert methods <= set(schema["paths"][path]), path


def test_schema_default_is_openapi_yaml() -> None:
    response = APIClient().get("/api/schema/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.oai.openapi")
    document = yaml.safe_load(response.content)
    assert set(PATHS) <= set(document["paths"])


def test_schema_describes_wire_shapes(authed: APIClient) -> None:
    """The documented shapes match what the API sends (protocol sections 3 and 8)."""
    schema = _schema(authed)
    components = schema["components"]["schemas"]
    topics_list = schema["paths"]["/api/topics/"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    page = components[topics_list["$ref"].rsplit("/", 1)[-1]]
    assert set(page["properties"]) == {"results", "next"}
    assert "cursor" in {p["name"] for p in schema["paths"]["/api/topics/"]["get"].get("parameters", [])}
    message = set(components["Message"]["properties"])
    assert message == {
        "type", "id", "channel", "seq", "kind", "from", "body", "client_id", "created_at", "edited_at", "deleted",
    }  # fmt: skip
    history_params = {p["name"] for p in schema["paths"]["/api/channels/{channel}/messages/"]["get"]["parameters"]}
    assert {"before", "after", "limit", "channel"} <= history_params
    assert "jwtAuth" in schema["components"]["securitySchemes"]


def test_docs_serve_html() -> None:
    response = APIClient().get("/api/docs/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    assert "swagger-ui" in page and "/api/schema/" in page


# --- errors of requests no view answers --------------------------------------------


@pytest.mark.parametrize("path", ["/api/nope/", "/api/nope", "/api/channels/topic:x/nope/", "/nowhere"])
def test_unknown_path_is_json_not_found(authed: APIClient, path: str) -> None:
    body = assert_error(authed.get(path), 404, "not_found")
    assert set(body) == {"code", "message"}


def test_unknown_path_is_not_found_without_token() -> None:
    assert_error(APIClient().get("/api/nope/"), 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("put", "/api/topics/"),
        ("delete", "/api/topics/"),
        ("patch", "/api/topics/"),
        ("post", "/api/channels/topic:x/messages/"),
        ("get", "/api/topics/x/members/"),
    ],
)
def test_wrong_method_is_405_bad_request(authed: APIClient, method: str, path: str) -> None:
    response = getattr(authed, method)(path, {}, format="json")
    body = assert_error(response, 405, "bad_request")
    assert method.upper() in body["message"]


def test_wrong_method_on_open_endpoint() -> None:
    assert_error(APIClient().get("/api/auth/register/"), 405, "bad_request")


def test_malformed_json_is_bad_request(authed: APIClient) -> None:
    response = authed.post("/api/topics/", data="{not json", content_type="application/json")
    assert_error(response, 400, "bad_request")


def test_unsupported_media_type_is_bad_request(authed: APIClient) -> None:
    response = authed.post("/api/topics/", data="name=x", content_type="text/plain")
    assert_error(response, 415, "bad_request")
