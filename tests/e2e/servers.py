"""Real `manage.py serve` processes on free loopback ports, and the services they use.

A server runs in one of two modes:

- embedded: SQLite in the test's temporary directory and the in-memory
  channel layer (no REDIS_URL), the `make run` default;
- services: a fresh PostgreSQL database made for the test module and a Redis
  database with a channel prefix of its own, so that parallel or earlier runs
  never see each other's groups.

Each server's output goes to a file (`Server.log`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import redis

from .client import Api

REPO_ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
# Not db 9: the unit suite flushes that one when it starts.
REDIS_BASE = "redis://127.0.0.1:6379/13"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0

# Settings a developer's shell may carry that would change what these tests check.
_SCRUBBED = ("DATABASE_URL", "REDIS_URL", "CHANNEL_PREFIX", "CELERY_BROKER_URL", "ALLOWED_HOSTS", "LOG_LEVEL")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED and not k.startswith("CHAT_")}
    env.update(
        SECRET_KEY="e2e-" + secrets.token_urlsafe(32),
        ENV_FILE="/nonexistent",
        DEBUG="0",
        CHAT_AUTH_RATE="100000/minute",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def migrate(env: dict[str, str], log_path: Path) -> None:
    with log_path.open("ab") as log:
        done = subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput"],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=120,
        )
    if done.returncode != 0:
        raise RuntimeError(f"migrate failed ({done.returncode}):\n{log_path.read_text(errors='replace')}")


@dataclass
class Server:
    """One `manage.py serve` process."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    api: Api = field(init=False)

    def __post_init__(self) -> None:
        self.api = Api(self.http_url)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"

    def stop(self) -> float | None:
        """SIGTERM (uvicorn drains gracefully), then SIGKILL after a bound.

        Returns how long the graceful stop took, or None if it had to be killed
        (or was not running).
        """
        if self.proc.poll() is not None:
            return None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
            return None
        return time.monotonic() - started


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start_server(env: dict[str, str], log_dir: Path, name: str, *, port: int | None = None) -> Server:
    """Start a server and wait for /healthz; retried on a port taken meanwhile.

    With `port` (say, to restart a server where its clients reconnect), that
    port is tried each time.
    """
    last_log = ""
    fixed = port
    for attempt in range(3):
        port = fixed or free_port()
        log_path = log_dir / f"{name}-{attempt}.log"
        log = log_path.open("wb")
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        server = Server(name=name, port=port, proc=proc, log_path=log_path)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            if _healthy(server.http_url):
                return server
            time.sleep(0.1)
        server.stop()
        last_log = server.log()
        if "address already in use" not in last_log.lower():
            break
    raise RuntimeError(f"server {name} did not become healthy within {START_TIMEOUT:.0f}s:\n{last_log}")


# --- services -------------------------------------------------------------------


@contextlib.contextmanager
def fresh_pg_database() -> Iterator[str]:
    """A new, empty PostgreSQL database; dropped (connections forced out) after."""
    name = "chat_e2e_" + secrets.token_hex(6)
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgres://", 1) + "/" + name
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def redis_namespace() -> Iterator[dict[str, str]]:
    """REDIS_URL, a CHANNEL_PREFIX and a session-store prefix of this run's own; its keys deleted after.

    The store's prefix matters too: user ids repeat across fresh databases, so
    runs sharing the default `chat:u:<id>` keys would count each other's
    connections (and leave keys behind).
    """
    prefix = "e2e" + secrets.token_hex(6) + ":"
    try:
        yield {"REDIS_URL": REDIS_BASE, "CHANNEL_PREFIX": prefix, "CHAT_STORE_PREFIX": prefix + "chat"}
    finally:
        client = redis.Redis.from_url(REDIS_BASE)
        try:
            keys = list(client.scan_iter(match=prefix + "*", count=1000))
            if keys:
                client.delete(*keys)
        finally:
            client.close()
