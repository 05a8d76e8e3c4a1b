"""Pieces every benchmark script shares: /proc metrics, the machine's other load,
a fresh database with users and tokens, ports, open-file limits, percentiles.

Used by benchmarks/server_choice.py and benchmarks/run.py (with the load
generator in benchmarks/loadgen.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import resource
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")


class Measured(Protocol):
    def cpu_seconds(self) -> float: ...


# --- process metrics from /proc ---------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """The process and its descendants (bounded by what /proc lists)."""
    found: list[int] = []
    todo = [pid]
    while todo and len(found) < 1024:
        current = todo.pop()
        found.append(current)
        for children in Path(f"/proc/{current}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                todo.extend(int(c) for c in children.read_text().split())
    return found


def rss_kib(pid: int) -> int:
    total = 0
    for p in process_tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of the process tree."""
    ticks = 0
    for p in process_tree(pid):
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{p}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU time the whole machine has spent busy, all cores together (/proc/stat)."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


class Others:
    """CPU used by everything but the server and this process over a phase, in cores.

    It includes PostgreSQL and Redis working for the benchmark (a few percent
    of a core); much more means something else ran on the machine meanwhile
    and the phase's figures are not to be trusted.
    """

    def __init__(self, server: Measured) -> None:
        self.server = server
        self.t0 = time.monotonic()
        self.busy0 = machine_busy_seconds()
        self.server0 = server.cpu_seconds()
        self.client0 = time.process_time()

    def cores(self) -> float:
        wall = max(time.monotonic() - self.t0, 1e-9)
        busy = machine_busy_seconds() - self.busy0
        own = (self.server.cpu_seconds() - self.server0) + (time.process_time() - self.client0)
        return round(max(busy - own, 0.0) / wall, 2)


async def wait_for_quiet(limit_cores: float, max_wait: float) -> float:
    """Wait (at most `max_wait` s) until the machine uses under `limit_cores`; returns the last reading."""
    deadline = time.monotonic() + max_wait
    while True:
        busy0, t0 = machine_busy_seconds(), time.monotonic()
        await asyncio.sleep(3.0)
        used = (machine_busy_seconds() - busy0) / (time.monotonic() - t0)
        if used < limit_cores or time.monotonic() >= deadline:
            return round(used, 2)
        print(f"  machine busy ({used:.2f} cores used by others), waiting", flush=True)
        await asyncio.sleep(min(27.0, max(0.0, deadline - time.monotonic())))


# --- services: database, Redis, users ------------------------------------------------


def require_loopback(url: str) -> None:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    sys.exit(f"refusing {url!r}: this benchmark only talks to loopback addresses")


def with_dbname(url: str, name: str) -> str:
    parts = urlsplit(url)
    return parts._replace(path="/" + name).geturl()


@contextlib.contextmanager
def bench_database(admin_url: str) -> Iterator[str]:
    """A fresh, empty database for this run; dropped afterwards."""
    import psycopg
    from psycopg import sql

    name = f"chat_bench_{secrets.token_hex(4)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_dbname(admin_url, name)
    finally:
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def redis_flush(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


def server_env(*, database_url: str, redis_url: str, stem: str, drop: tuple[str, ...] = ("CHAT_",)) -> dict[str, str]:
    """The environment our server runs under in a benchmark: this process's
    minus any `drop`-prefixed setting, a fresh key prefix (`stem` + random)
    so runs on one Redis db stay apart, production mode, day-long tokens."""
    prefix = stem + secrets.token_hex(3)
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(drop)},
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "CHANNEL_PREFIX": prefix,
        "CHAT_STORE_PREFIX": prefix + "chat",
        "SECRET_KEY": "bench-" + secrets.token_urlsafe(32),
        "ENV_FILE": "/nonexistent",
        "DEBUG": "0",
        "LOG_LEVEL": "WARNING",
        "ACCESS_TOKEN_LIFETIME": "86400",
        "PYTHONUNBUFFERED": "1",
    }


def migrate(env: dict[str, str], log_path: Path) -> None:
    with log_path.open("ab") as log:
        done = subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=300,
        )
    if done.returncode != 0:
        sys.exit(f"migrate failed ({done.returncode}), see {log_path}")


def users_with_tokens(env: dict[str, str], count: int, staff: int = 0) -> list[str]:
    """`count` users made through the ORM in this process; one access token each.

    The last `staff` of them are staff (who may broadcast). Users are named
    bench00000, bench00001, ... in token order.
    """
    os.environ.update(env)
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password
    from django.db import connections
    from rest_framework_simplejwt.tokens import AccessToken

    user_model = get_user_model()
    unusable = make_password(None)
    user_model.objects.bulk_create(
        [user_model(username=f"bench{i:05d}", password=unusable, is_staff=i >= count - staff) for i in range(count)],
        batch_size=1000,
    )
    users = list(user_model.objects.filter(username__startswith="bench").order_by("username"))
    tokens = [str(AccessToken.for_user(u)) for u in users]
    connections.close_all()
    return tokens


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


async def gather_bounded(factories: Sequence[Callable[[], Any]], concurrency: int) -> list[Any]:
    """Run the coroutine factories, `concurrency` at a time; exceptions are returned."""
    gate = asyncio.Semaphore(concurrency)

    async def one(factory: Callable[[], Any]) -> Any:
        async with gate:
            return await factory()

    return await asyncio.gather(*(one(f) for f in factories), return_exceptions=True)


def raise_nofile(want: int) -> int:
    """Raise this process's open-file limit towards `want`; returns the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    cap = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < cap:
        resource.setrlimit(resource.RLIMIT_NOFILE, (cap, hard))
    return cap if hard == resource.RLIM_INFINITY else hard
