"""End-to-end fixtures: servers in embedded mode, in service mode, and two nodes.

Service-mode fixtures share one fresh PostgreSQL database and one Redis
namespace per test module. When a test fails, the output of the servers it
used is attached to its report.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .servers import Server, fresh_pg_database, migrate, redis_namespace, server_env, start_server


@pytest.fixture(scope="module")
def services_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The environment of service-mode servers; the database is migrated once."""
    log_dir = tmp_path_factory.mktemp("services")
    with fresh_pg_database() as database_url, redis_namespace() as redis_env:
        env = server_env(DATABASE_URL=database_url, **redis_env)
        migrate(env, log_dir / "migrate.log")
        yield env


@pytest.fixture(scope="module")
def embedded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log_dir = tmp_path_factory.mktemp("embedded")
    env = server_env(DATABASE_URL=f"sqlite:///{log_dir / 'db.sqlite3'}")
    migrate(env, log_dir / "migrate.log")
    server = start_server(env, log_dir, "embedded")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def services_server(services_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(services_env, tmp_path_factory.mktemp("node"), "services")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def two_nodes(services_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Server]]:
    """Two processes sharing one database and one Redis namespace."""
    log_dir = tmp_path_factory.mktemp("nodes")
    servers: list[Server] = []
    try:
        for n in (1, 2):
            servers.append(start_server(services_env, log_dir, f"node{n}"))
        yield servers
    finally:
        for server in servers:
            server.stop()


class NodeStarter:
    """Starts service-mode servers with settings of their own and remembers them."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env, self.log_dir = env, log_dir
        self.servers: list[Server] = []

    def __call__(self, name: str, **extra_env: str) -> Server:
        server = start_server({**self.env, **extra_env}, self.log_dir, name)
        self.servers.append(server)
        return server


@pytest.fixture(scope="module")
def start_node(services_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeStarter]:
    """`start_node("slow", CHAT_OUTBOUND_BUFFER="20")`: a server on the module's
    database and Redis namespace with extra settings; all stopped with the module."""
    starter = NodeStarter(services_env, tmp_path_factory.mktemp("custom"))
    try:
        yield starter
    finally:
        for server in starter.servers:
            server.stop()


# --- reporting ------------------------------------------------------------------


def _servers_of(value: Any) -> list[Server]:
    if isinstance(value, Server):
        return [value]
    if isinstance(value, NodeStarter):
        return list(value.servers)
    if isinstance(value, list | tuple):
        return [s for s in value if isinstance(s, Server)]
    return []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Attach the output of the servers a failed test used to its report."""
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    for value in getattr(item, "funcargs", {}).values():
        for server in _servers_of(value):
            report.sections.append((f"server {server.name} (port {server.port}) output", server.log()[-20000:]))
