"""Fixtures of the client tests: real server processes on PostgreSQL and Redis,
users made over HTTP, and Chromium for the browser tests.

A failed test gets the output of its servers attached to its report; a failed
browser test also leaves a screenshot of every open page in `test-artifacts/`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.servers import REPO_ROOT, Server, fresh_pg_database, migrate, redis_namespace, server_env, start_server

ARTIFACTS = REPO_ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")

# Quick offline detection, so that the tests do not wait for the default 5 s grace.
FAST_PRESENCE = {"CHAT_PRESENCE_GRACE": "0.5"}


@pytest.fixture(scope="module")
def services_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A fresh database (migrated once) and Redis namespace for the module's servers."""
    log_dir = tmp_path_factory.mktemp("services")
    with fresh_pg_database() as database_url, redis_namespace() as redis_env:
        env = server_env(DATABASE_URL=database_url, **redis_env, **FAST_PRESENCE)
        migrate(env, log_dir / "migrate.log")
        yield env


class Servers:
    """Starts servers on the module's database; stops them all at the end."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env, self.log_dir = env, log_dir
        self.started: list[Server] = []

    def start(self, name: str, *, port: int | None = None, **extra: str) -> Server:
        server = start_server({**self.env, **extra}, self.log_dir, name, port=port)
        self.started.append(server)
        return server

    def stop_all(self) -> None:
        for server in self.started:
            server.stop()


@pytest.fixture(scope="module")
def servers(services_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    pool = Servers(services_env, tmp_path_factory.mktemp("servers"))
    try:
        yield pool
    finally:
        pool.stop_all()


def _artifact_name(nodeid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid)[-120:]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On failure: attach the servers' output, and save screenshots of open pages."""
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    funcargs: dict[str, Any] = getattr(item, "funcargs", {})
    for value in funcargs.values():
        if isinstance(value, Servers):
            for server in value.started:
                report.sections.append((f"server {server.name} (port {server.port})", server.log()[-20000:]))
    browser = funcargs.get("browser")
    if browser is not None:
        from playwright.sync_api import Error as PlaywrightError

        ARTIFACTS.mkdir(exist_ok=True)
        base = _artifact_name(item.nodeid)
        shots = 0
        for c, context in enumerate(browser.contexts):
            for p, page in enumerate(context.pages):
                path = ARTIFACTS / f"{base}-{c}-{p}.png"
                try:
                    page.screenshot(path=str(path), full_page=True)
                    shots += 1
                except PlaywrightError as exc:  # a closed or crashed page: say so, keep going
                    report.sections.append(("screenshot failed", f"{path}: {exc}"))
        report.sections.append(("screenshots", f"{shots} saved in {ARTIFACTS}"))
