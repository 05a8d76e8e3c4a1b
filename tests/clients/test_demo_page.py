"""The demo page's shell and the client's static file, through Django's test client."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.test import Client, RequestFactory

from web.views import content_security_policy

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def http() -> Client:
    return Client()


def test_index_serves_the_page_with_a_strict_policy(http: Client) -> None:
    response = http.get("/", HTTP_HOST="127.0.0.1:8000")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assert '<script type="module" src="/static/web/app.js"></script>' in html
    assert 'href="/static/web/app.css"' in html
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "'unsafe-inline'" not in policy
    assert "connect-src 'self' ws://127.0.0.1:8000" in policy
    assert "frame-ancestors 'none'" in policy
    assert response["X-Frame-Options"] == "DENY"
    assert response["Cache-Control"] == "no-store"


def test_policy_names_wss_behind_https(rf: RequestFactory) -> None:
    request = rf.get("/", secure=True, HTTP_HOST="localhost")
    assert "connect-src 'self' wss://localhost" in content_security_policy(request)


def test_index_is_get_only(http: Client) -> None:
    assert http.post("/").status_code == 405


def test_client_module_is_served_from_the_package(http: Client) -> None:
    response = http.get("/static/rtc/client.js")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/javascript")
    served = b"".join(response.streaming_content)
    assert served == (REPO / "clients/js/src/client.js").read_bytes()
    assert http.get("/static/web/app.js").status_code == 200


def test_unknown_paths_stay_json_404(http: Client) -> None:
    for path in ("/api/nothing-here/", "/nothing-here"):
        response = http.get(path)
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"
