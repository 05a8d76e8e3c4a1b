"""Server memory per idle session: variants of the server side by side in one run.

What it measures. For each variant in turn (a checkout of the project, the
arguments given to its `manage.py serve`, environment variables), a fresh
server process on one PostgreSQL database and one Redis db: RSS of the
server (VmRSS, children included) after W warm-up sessions, then after N
more idle sessions are open (each waited for its `welcome`, then quiet but
for the protocol's `ping` every --ping-every seconds). KiB per session is
(RSS with W + N open - RSS with W open) / N: the warm-up takes the one-off
growth of pools and caches out of the figure. With --rounds R the variants
run in turn R times (A B C A B C ...) and each figure is the median.

With --trace the server runs under `tracemalloc` (one frame; the RSS then
includes tracemalloc's own bookkeeping and is not comparable): a snapshot
after the warm-up and one with the N sessions, and the growth is grouped by
file, in bytes per session; the top of that table is printed and kept in
the JSON.

    .venv/bin/python benchmarks/idle_memory.py -n 1000 \\
        --variant "sansio||--ws websockets-sansio|" --variant "lean||--ws lean|"
    .venv/bin/python benchmarks/idle_memory.py -n 500 --trace --variant "now|||"

A variant is "label|tree|serve arguments|ENV=value ..."; an empty tree is
this checkout. Results: benchmarks/results/<stamp>-idle-memory.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvloop
from websockets.asyncio.client import ClientConnection, connect

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (  # noqa: E402
    HOST,
    RESULTS,
    ROOT,
    bench_database,
    cpu_seconds,
    free_port,
    gather_bounded,
    migrate,
    raise_nofile,
    require_loopback,
    rss_kib,
    server_env,
    users_with_tokens,
)

TRACED_SERVE = Path(__file__).resolve().parent / "traced_serve.py"


@dataclass
class Variant:
    label: str
    tree: Path
    serve_args: list[str]
    env: dict[str, str]
    runs: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> Variant:
        parts = (text.split("|") + ["", "", ""])[:4]
        label, tree, serve_args, env = parts
        return cls(
            label=label or "this tree",
            tree=Path(tree).resolve() if tree else ROOT,
            serve_args=shlex.split(serve_args),
            env=dict(item.split("=", 1) for item in shlex.split(env)),
        )


class Server:
    def __init__(self, variant: Variant, env: dict[str, str], log: Path, nofile: int, trace_dir: Path | None) -> None:
        self.port = free_port()
        if trace_dir is None:
            argv = [sys.executable, "manage.py", "serve"]
        else:
            argv = [sys.executable, str(TRACED_SERVE), str(trace_dir)]
        argv += ["--host", HOST, "--port", str(self.port), *variant.serve_args]
        self.command = shlex.join(argv)
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                ["bash", "-c", f"ulimit -n {nofile} && exec {self.command}"],
                cwd=variant.tree,
                env={**env, **variant.env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    async def ready(self, within: float = 60.0) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode})")
            with contextlib.suppress(OSError, TimeoutError):
                reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, self.port), 2)
                writer.write(f"GET /readyz HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
                status = await asyncio.wait_for(reader.readline(), 5)
                writer.close()
                if b" 200 " in status:
                    return
            await asyncio.sleep(0.2)
        raise RuntimeError("server not ready")

    def rss(self) -> int:
        return rss_kib(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@dataclass
class Client:
    ws: ClientConnection
    closed_by_server: int | None = None
    reader: asyncio.Task[None] | None = None
    closing: bool = False

    async def read(self) -> None:
        with contextlib.suppress(Exception):
            async for _ in self.ws:
                pass
        if not self.closing:
            self.closed_by_server = self.ws.close_code or -1


async def open_one(port: int, token: str) -> Client:
    ws = await connect(
        f"ws://{HOST}:{port}/ws/?token={token}",
        compression=None,
        ping_interval=None,
        open_timeout=60,
        close_timeout=5,
        max_size=2**20,
    )
    first = json.loads(await asyncio.wait_for(ws.recv(), 60))
    if first.get("type") != "welcome":
        await ws.close()
        raise ConnectionError(f"first frame {first!r:.200}")
    client = Client(ws)
    client.reader = asyncio.create_task(client.read())
    return client


async def pinger(clients: list[Client], every: float) -> None:
    """The protocol's heartbeat for every open session, spread over `every` seconds."""
    while True:
        batch = list(clients)
        step = every / max(len(batch), 1)
        for c in batch:
            if c.closed_by_server is None and not c.closing:
                with contextlib.suppress(Exception):
                    await c.ws.send('{"type":"ping"}')
            await asyncio.sleep(step)
        if not batch:
            await asyncio.sleep(every)


async def open_many(port: int, tokens: list[str], into: list[Client], concurrency: int) -> int:
    async def one(token: str) -> Client:
        client = await open_one(port, token)
        into.append(client)
        return client

    results = await gather_bounded([lambda t=t: one(t) for t in tokens], concurrency)
    return sum(1 for r in results if isinstance(r, BaseException))


def snapshot(server: Server, trace_dir: Path, number: int, within: float = 120.0) -> tracemalloc.Snapshot:
    path = trace_dir / f"snap{number}.tm"
    server.proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        done = trace_dir / f"snap{number}.done"
        if done.exists():
            return tracemalloc.Snapshot.load(str(path))
        time.sleep(0.2)
    raise RuntimeError("no snapshot from the server")


def growth_by_file(
    before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, n: int, top: int, group: str = "filename"
) -> list[list[Any]]:
    stats = after.compare_to(before, group)
    rows = []
    for s in stats[:top]:
        name = s.traceback[0].filename
        for cut in ("site-packages/", "/lib/python3.11/"):
            if cut in name:
                name = name.split(cut, 1)[1]
                break
        else:
            name = os.path.relpath(name, ROOT) if name.startswith("/") else name
            name = name.split("/tmp/", 1)[-1]
        if group == "lineno":
            name += f":{s.traceback[0].lineno}"
        rows.append([name, round(s.size_diff / n), round(s.count_diff / n, 2)])
    return rows


async def measure(
    variant: Variant, env: dict[str, str], tokens: list[str], args: argparse.Namespace, log: Path
) -> dict[str, Any]:
    trace_dir = Path(tempfile.mkdtemp(prefix="idle_mem_")) if args.trace else None
    server = Server(variant, env, log, args.server_nofile, trace_dir)
    clients: list[Client] = []
    ping = asyncio.create_task(pinger(clients, args.ping_every))
    result: dict[str, Any] = {"variant": variant.label, "command": server.command, "env": variant.env}
    try:
        await server.ready()
        warm, rest = tokens[: args.warmup], tokens[args.warmup : args.warmup + args.n]
        failed = await open_many(server.port, warm, clients, args.concurrency)
        await asyncio.sleep(args.settle)
        rss_warm = server.rss()
        snap0 = snapshot(server, trace_dir, 1) if trace_dir else None
        cpu0, t0 = cpu_seconds(server.proc.pid), time.monotonic()
        failed += await open_many(server.port, rest, clients, args.concurrency)
        connect_s = time.monotonic() - t0
        cpu1 = cpu_seconds(server.proc.pid)
        await asyncio.sleep(args.settle)
        rss_idle = server.rss()
        snap1 = snapshot(server, trace_dir, 2) if trace_dir else None
        await asyncio.sleep(args.hold)
        rss_held = server.rss()
        open_now = sum(1 for c in clients if c.closed_by_server is None)
        result.update(
            sessions=len(clients),
            failed=failed,
            closed_by_server=len(clients) - open_now,
            rss_warm_mib=round(rss_warm / 1024, 1),
            rss_idle_mib=round(rss_idle / 1024, 1),
            kib_per_session=round((rss_idle - rss_warm) / max(len(rest), 1), 2),
            kib_per_session_after_hold=round((rss_held - rss_warm) / max(len(rest), 1), 2),
            hold_s=args.hold,
            connects_per_s=round(len(rest) / connect_s, 1),
            server_cpu_ms_per_connect=round((cpu1 - cpu0) * 1000 / max(len(rest), 1), 2),
        )
        if snap0 is not None and snap1 is not None:
            total = sum(s.size_diff for s in snap1.compare_to(snap0, "filename"))
            result["traced_bytes_per_session"] = round(total / len(rest))
            result["traced_by_file"] = growth_by_file(snap0, snap1, len(rest), args.top, args.group)
    finally:
        ping.cancel()
        for c in clients:
            c.closing = True
        await gather_bounded([lambda c=c: asyncio.wait_for(c.ws.close(), 10) for c in clients], 200)
        server.stop()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=1000, help="idle sessions measured")
    parser.add_argument("--warmup", type=int, default=200, help="sessions opened before the baseline RSS")
    parser.add_argument("--variant", action="append", default=[], help='"label|tree|serve args|ENV=v ..."')
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--hold", type=float, default=10.0, help="seconds held before the last RSS read")
    parser.add_argument("--settle", type=float, default=3.0)
    parser.add_argument("--ping-every", type=float, default=20.0)
    parser.add_argument("-c", "--concurrency", type=int, default=50)
    parser.add_argument("--trace", action="store_true", help="tracemalloc in the server: growth by file")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--group", choices=["filename", "lineno"], default="filename", help="--trace: grouping")
    parser.add_argument("--pg-admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/11")
    args = parser.parse_args(argv)
    variants = [Variant.parse(v) for v in args.variant] or [Variant.parse("this tree|||")]
    for url in (args.pg_admin_url, args.redis_url):
        require_loopback(url)
    args.server_nofile = min(raise_nofile(65536), 65536)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    log = RESULTS / f"{stamp}-idle-memory.log"
    with bench_database(args.pg_admin_url) as database_url:
        env = server_env(database_url=database_url, redis_url=args.redis_url, stem="idlemem")
        migrate(env, log)
        tokens = users_with_tokens(env, args.warmup + args.n)
        for r in range(args.rounds):
            for v in variants:
                print(f"round {r + 1}: {v.label} ...", flush=True)
                run = uvloop.run(measure(v, env, tokens, args, log))
                v.runs.append(run)
                print(
                    f"  {run.get('kib_per_session')} KiB/session idle, {run.get('kib_per_session_after_hold')} after "
                    f"{args.hold:g} s; {run.get('failed')} failed, {run.get('closed_by_server')} closed; "
                    f"{run.get('server_cpu_ms_per_connect')} ms CPU/connect"
                    + (
                        f"; traced {run['traced_bytes_per_session']} B/session"
                        if "traced_bytes_per_session" in run
                        else ""
                    ),
                    flush=True,
                )
                for row in run.get("traced_by_file", []):
                    print(f"    {row[1]:>7} B {row[2]:>6} blocks  {row[0]}", flush=True)
        with contextlib.suppress(Exception):
            import redis

            client = redis.Redis.from_url(args.redis_url)
            keys = list(client.scan_iter(match=env["CHANNEL_PREFIX"] + "*", count=1000))
            for i in range(0, len(keys), 1000):
                client.delete(*keys[i : i + 1000])
    report = {
        "date": stamp,
        "command": shlex.join([".venv/bin/python", "benchmarks/idle_memory.py", *(argv or sys.argv[1:])]),
        "args": {k: v for k, v in vars(args).items() if k != "variant"},
        "variants": [{"label": v.label, "tree": str(v.tree), "runs": v.runs} for v in variants],
    }
    out = RESULTS / f"{stamp}-idle-memory.json"
    out.write_text(json.dumps(report, indent=2))
    print()
    print("| variant | KiB/session idle | after hold | failed | closed | ms CPU/connect |")
    print("|---|---|---|---|---|---|")
    for v in variants:

        def med(key: str, v: Variant = v) -> Any:
            values = [r[key] for r in v.runs if key in r]
            return round(statistics.median(values), 1) if values else None

        per_round = " / ".join(str(r.get("kib_per_session")) for r in v.runs)
        print(
            f"| {v.label} | {med('kib_per_session')} ({per_round}) | {med('kib_per_session_after_hold')} | "
            f"{sum(r.get('failed', 0) for r in v.runs)} | {sum(r.get('closed_by_server', 0) for r in v.runs)} | "
            f"{med('server_cpu_ms_per_connect')} |"
        )
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
