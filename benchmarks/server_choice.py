"""Which ASGI server to run the chat under: the real app, measured side by side.

What it measures. For each candidate server in turn, serving the real
`config.asgi:application` on PostgreSQL and Redis:

1. Memory. The resident set (VmRSS from /proc, summed over the server
   process and its children) after a short warm-up, after N idle sessions
   are open, and again after the fan-out, when every connection has sent
   frames (a compressor, if negotiated, only grows then). Reported as KiB
   per session over the warm baseline.
2. Connect rate. N sessions opened, C at a time: WebSocket handshake,
   JWT check against the database, two group joins in Redis, the `welcome`
   frame. Sessions per second of wall time, and server CPU per session.
3. Fan-out. All N sessions subscribe to `topic:bench`, and one more
   session publishes to it, each body carrying its send time; latency is
   send to receipt on one clock (the sender and receivers share this
   process). First --single messages one at a time, each sent once the
   previous one reached everyone: the latency of a fan-out on an otherwise
   quiet server (max: the time to reach all N). Then the stream: M messages
   at R per second, where N x R deliveries per second may be more than the
   server can do: deliveries per second from the first publish to the last
   delivery (its capacity, when saturated), latency p50/p99/max over all
   N x M deliveries, losses, and the server's CPU time per delivery, which
   the client's own CPU use (it shares the 2 cores) does not distort.

How. One fresh PostgreSQL database (`chat_bench_<hex>`, migrated with
`manage.py migrate`, dropped at the end) serves every candidate. Users are
made in this process through the Django ORM with `bulk_create`, and access
tokens with simplejwt's `AccessToken.for_user`. Redis db 10 is flushed
before each candidate. Each server is started through
`bash -c "ulimit -n ...; exec SERVER ..."`, so it gets the open-file limit
that N sockets need, and stopped with SIGTERM once its sessions are closed.
The client is asyncio on uvloop with the `websockets` library; it offers
per-message deflate only to the candidate that has it on, so that the
server's compressor really engages there. Sessions send `{"type": "ping"}`
every --ping-every seconds (the server closes a session silent for 50 s).
Other work on the machine spoils the figures, so before each candidate the
script waits (boundedly) for the machine to be quiet, and it records the CPU
used by everything else during each phase ("others' CPU") and the size of
the topic's group in Redis before and after the stream (a flush of db 10 by
someone else empties it). Every loop is bounded in count or time; all
traffic is on loopback.

    .venv/bin/python benchmarks/server_choice.py                  # N=1000, all candidates
    .venv/bin/python benchmarks/server_choice.py -n 2000 --rounds 2
    .venv/bin/python benchmarks/server_choice.py --only daphne uvicorn-sansio

Results are printed as a Markdown table and written as JSON to
benchmarks/results/ (git-ignored); server logs go there too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import importlib.util
import json
import os
import platform
import secrets
import shlex
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
import uvloop
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (  # noqa: E402
    HOST,
    RESULTS,
    ROOT,
    Others,
    bench_database,
    cpu_seconds,
    free_port,
    gather_bounded,
    migrate,
    ms,
    percentile,
    raise_nofile,
    redis_flush,
    require_loopback,
    rss_kib,
    users_with_tokens,
    wait_for_quiet,
)

BIN = Path(sys.executable).parent
TOPIC = "topic:bench"
TOPIC_GROUP = "topic.bench"  # messaging.channels.topic_group("bench")
CHANNEL_PREFIX = "bench"
MAX_FRAME = 65536

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


# --- candidates ----------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    name: str
    summary: str
    argv: Callable[[int], list[str]]
    client_deflate: bool = False
    needs_module: str | None = None
    root: Path = ROOT  # the checkout the server runs from (--base adds another)

    def available(self) -> bool:
        return self.needs_module is None or importlib.util.find_spec(self.needs_module) is not None


def daphne_argv(port: int) -> list[str]:
    # -v 0: no access log, as uvicorn at --log-level warning.
    return [
        str(BIN / "daphne"),
        "-b",
        HOST,
        "-p",
        str(port),
        "-v",
        "0",
        "--websocket-max-message-size",
        str(MAX_FRAME),
        "config.asgi:application",
    ]


def uvicorn_argv(ws: str, deflate: bool) -> Callable[[int], list[str]]:
    """uvicorn as `manage.py serve` runs it, but for the ws implementation and deflate."""

    def argv(port: int) -> list[str]:
        return [
            str(BIN / "uvicorn"),
            "config.asgi:application",
            "--host",
            HOST,
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--ws",
            ws,
            "--ws-max-size",
            str(MAX_FRAME),
            "--ws-per-message-deflate",
            "true" if deflate else "false",
            "--ws-ping-interval",
            "0",
            "--lifespan",
            "off",
            "--no-server-header",
            "--timeout-graceful-shutdown",
            "10",
            "--log-level",
            "warning",
        ]

    return argv


CANDIDATES: dict[str, Candidate] = {
    c.name: c
    for c in (
        Candidate("daphne", "daphne (Twisted/autobahn; no per-message deflate)", daphne_argv),
        Candidate(
            "uvicorn-sansio",
            "uvicorn, ws=websockets-sansio, deflate off (manage.py serve)",
            uvicorn_argv("websockets-sansio", deflate=False),
        ),
        Candidate(
            "uvicorn-sansio-deflate",
            "uvicorn, ws=websockets-sansio, deflate on (uvicorn's default)",
            uvicorn_argv("websockets-sansio", deflate=True),
            client_deflate=True,
        ),
        Candidate(
            "uvicorn-wsproto",
            "uvicorn, ws=wsproto, deflate off",
            uvicorn_argv("wsproto", deflate=False),
            needs_module="wsproto",
        ),
    )
}


async def group_size(redis_url: str, group: str) -> int:
    """Members of a channel-layer group in Redis (key as channels-redis names it)."""
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        return int(await client.zcard(f"{CHANNEL_PREFIX}:group:{group}"))
    finally:
        await client.aclose()


# --- the server under test ---------------------------------------------------------------


@dataclass
class Server:
    candidate: Candidate
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    command: str

    @classmethod
    def start(cls, candidate: Candidate, env: dict[str, str], nofile: int, log_path: Path) -> Server:
        port = free_port()
        command = shlex.join(candidate.argv(port))
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                ["bash", "-c", f"ulimit -n {nofile} && exec {command}"],
                cwd=candidate.root,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return cls(candidate, port, proc, log_path, command)

    async def ready(self, within: float = 60.0) -> None:
        """Poll GET /readyz (database and Redis reachable) until 200."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.candidate.name} exited ({self.proc.returncode}), see {self.log_path}")
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, self.port), 2)
                writer.write(f"GET /readyz HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
                status = await asyncio.wait_for(reader.readline(), 5)
                writer.close()
                if b" 200 " in status:
                    return
            await asyncio.sleep(0.25)
        raise RuntimeError(f"{self.candidate.name} not ready within {within:.0f} s, see {self.log_path}")

    def rss_kib(self) -> int:
        return rss_kib(self.proc.pid)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.proc.pid)

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# --- client sessions -----------------------------------------------------------------------


@dataclass
class Fanout:
    """Deliveries of `topic:bench` messages seen by the receiving sessions in one phase."""

    latencies: list[float] = field(default_factory=list)
    duplicates: int = 0
    first_send: float = 0.0
    last_delivery: float = 0.0
    target: int = 0
    reached: asyncio.Event = field(default_factory=asyncio.Event)

    def record(self, now: float, sent: float) -> None:
        self.latencies.append(now - sent)
        self.last_delivery = now
        if len(self.latencies) >= self.target:
            self.reached.set()

    def expect(self, target: int) -> None:
        """Set `reached` once `target` deliveries in all have been recorded."""
        self.target = target
        self.reached.clear()
        if len(self.latencies) >= target:
            self.reached.set()


@dataclass(eq=False)
class Session:
    ws: ClientConnection
    fanout: Fanout
    seqs: set[int] = field(default_factory=set)
    waiting: dict[str, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    reader: asyncio.Task[None] | None = None
    refs: int = 0

    def start(self) -> None:
        self.reader = asyncio.create_task(self.read())

    async def read(self) -> None:
        """Every frame until the connection closes: record deliveries, answer waiters."""
        try:
            async for raw in self.ws:
                now = time.time()
                frame = _decode(raw)
                kind = frame.get("type")
                if kind == "message" and frame.get("channel") == TOPIC:
                    self.delivered(frame, now)
                elif kind in ("ok", "error"):
                    waiter = self.waiting.pop(frame.get("ref") or "", None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(frame)
        except (ConnectionClosed, WebSocketException):
            pass
        finally:
            for waiter in self.waiting.values():
                if not waiter.done():
                    waiter.set_exception(ConnectionError(f"closed: {self.ws.close_code}"))

    def delivered(self, frame: dict[str, Any], now: float) -> None:
        seq = frame["seq"]
        if seq in self.seqs:
            self.fanout.duplicates += 1
            return
        self.seqs.add(seq)
        self.fanout.record(now, _decode(frame["body"])["t"])

    async def request(self, frame: dict[str, Any]) -> asyncio.Future[dict[str, Any]]:
        """Send a frame with a fresh `ref`; the returned future gets its `ok` or `error`."""
        self.refs += 1
        ref = f"r{self.refs}"
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting[ref] = waiter
        try:
            await self.ws.send(_encode({**frame, "ref": ref}).decode())
        except BaseException:
            self.waiting.pop(ref, None)
            raise
        return waiter

    async def ask(self, frame: dict[str, Any], within: float = 60.0) -> dict[str, Any]:
        """Send a frame and wait for its answer."""
        return await asyncio.wait_for(await self.request(frame), within)

    async def ping(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self.ws.send('{"type":"ping"}')

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 10)
        if self.reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.reader, 5)


async def session_open(port: int, token: str, deflate: bool, fanout: Fanout) -> Session:
    ws = await connect(
        f"ws://{HOST}:{port}/ws/?token={token}",
        compression="deflate" if deflate else None,
        ping_interval=None,  # the protocol's own heartbeat keeps sessions alive
        open_timeout=60,
        close_timeout=5,
        max_size=2**20,
    )
    try:
        welcome = _decode(await asyncio.wait_for(ws.recv(), 30))
    except BaseException:
        await ws.close()
        raise
    if welcome.get("type") != "welcome":
        await ws.close()
        raise ConnectionError(f"first frame was {welcome.get('type')!r}, not welcome")
    session = Session(ws, fanout)
    session.start()
    return session


async def keep_alive(sessions: list[Session], every: float, stop: asyncio.Event, deadline: float) -> None:
    """Ping every session once per `every` seconds, spread evenly, until told to stop."""
    while not stop.is_set() and time.monotonic() < deadline:
        started = time.monotonic()
        batch = list(sessions)
        gap = every / max(len(batch), 1)
        for session in batch:
            if stop.is_set():
                return
            await session.ping()
            await asyncio.sleep(gap)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, every - (time.monotonic() - started)))


# --- one candidate, one round -----------------------------------------------------------------


@dataclass
class Result:
    server: str
    round: int
    command: str
    sessions: int
    failed_connects: int
    extension: str
    rss_base_mib: float
    rss_idle_mib: float
    rss_after_mib: float
    kib_per_session_idle: float
    kib_per_session_after: float
    connect_s: float
    connect_rate: float
    connect_cpu_ms_per_session: float
    subscribed: int
    # One message at a time, each sent once the previous one reached everyone.
    single_p50_ms: float
    single_p99_ms: float
    single_max_ms: float
    single_lost: int
    # The stream: M messages at R per second.
    published: int
    expected: int
    delivered: int
    lost: int
    duplicates: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    deliveries_per_s: float
    server_cpu_us_per_delivery: float
    stream_server_cpu_s: float
    stream_client_cpu_s: float
    early_closes: int
    # Soundness: the topic group's members in Redis around the stream, and
    # the CPU others used (see Others) before the run and in each phase.
    group_before: int
    group_after: int
    others_cores_before: float
    others_cores_connect: float
    others_cores_stream: float


def publish_frame(i: int) -> dict[str, Any]:
    return {"type": "publish", "channel": TOPIC, "body": _encode({"i": i, "t": time.time()}).decode()}


def on_phase(sessions: Sequence[Session], fanout: Fanout) -> None:
    for session in sessions:
        session.fanout = fanout


async def fanout_one_at_a_time(sender: Session, subscribers: Sequence[Session], count: int, within: float) -> Fanout:
    """`count` messages, each sent once the previous one reached every subscriber."""
    fanout = Fanout()
    on_phase(subscribers, fanout)
    fanout.first_send = time.time()
    for i in range(count):
        fanout.expect((i + 1) * len(subscribers))
        await sender.ask(publish_frame(i))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(fanout.reached.wait(), within)
        await asyncio.sleep(0.2)
    return fanout


async def fanout_stream(
    sender: Session, subscribers: Sequence[Session], args: argparse.Namespace
) -> tuple[Fanout, int]:
    """`args.messages` at `args.rate` per second, then wait for them to drain."""
    fanout = Fanout()
    on_phase(subscribers, fanout)
    fanout.expect(len(subscribers) * args.messages)
    start = time.monotonic()
    fanout.first_send = time.time()
    oks: list[asyncio.Future[dict[str, Any]]] = []
    for i in range(args.messages):
        await asyncio.sleep(max(0.0, start + i / args.rate - time.monotonic()))
        oks.append(await sender.request(publish_frame(i)))
    answers = await asyncio.wait_for(asyncio.gather(*oks, return_exceptions=True), args.max_phase)
    published = sum(1 for a in answers if isinstance(a, dict) and a["type"] == "ok")
    # Until everything arrived, or nothing new came for --drain seconds.
    deadline = time.monotonic() + args.max_phase
    while not fanout.reached.is_set() and time.monotonic() < deadline:
        seen = len(fanout.latencies)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(fanout.reached.wait(), args.drain)
        if len(fanout.latencies) == seen:
            break
    return fanout, published


async def measure(
    server: Server, tokens: list[str], args: argparse.Namespace, round_no: int, others_before: float
) -> Result:
    n, deflate = args.sessions, server.candidate.client_deflate
    idle = Fanout()
    sessions: list[Session] = []
    pinged: list[Session] = []  # the sessions and the sender
    stop = asyncio.Event()
    pinger = asyncio.create_task(keep_alive(pinged, args.ping_every, stop, time.monotonic() + args.max_phase * 6))
    sender: Session | None = None
    try:
        # Warm-up: load the lazy parts (thread pool, DB and Redis pools, the
        # subscribe and publish paths) before the baseline is read.
        warm = await session_open(server.port, tokens[n + 1], deflate, Fanout())
        await warm.ask({"type": "subscribe", "channel": "topic:warmup"})
        await warm.ask({"type": "publish", "channel": "topic:warmup", "body": "warm-up"})
        await warm.close()
        await asyncio.sleep(args.settle)
        rss_base = server.rss_kib()

        # N idle sessions.
        others = Others(server)
        cpu0, t0 = server.cpu_seconds(), time.monotonic()

        async def open_one(i: int) -> Session:
            session = await session_open(server.port, tokens[i], deflate, idle)
            sessions.append(session)
            pinged.append(session)
            return session

        opened = await asyncio.wait_for(
            gather_bounded([lambda i=i: open_one(i) for i in range(n)], args.concurrency), args.max_phase
        )
        connect_s = time.monotonic() - t0
        connect_cpu = server.cpu_seconds() - cpu0
        others_connect = others.cores()
        failures = [o for o in opened if isinstance(o, BaseException)]
        if failures:
            print(f"  {len(failures)} connects failed, first: {failures[0]!r}", flush=True)
        extension = (sessions[0].ws.response.headers.get("Sec-WebSocket-Extensions") if sessions else None) or "-"
        await asyncio.sleep(args.settle)
        rss_idle = server.rss_kib()
        print(
            f"  {len(sessions)} sessions in {connect_s:.1f} s; RSS {rss_base / 1024:.0f} -> {rss_idle / 1024:.0f} MiB",
            flush=True,
        )

        # Everyone subscribes to the topic (the sender first, creating it).
        sender = await session_open(server.port, tokens[n], deflate, Fanout())
        pinged.append(sender)
        await sender.ask({"type": "subscribe", "channel": TOPIC})
        answers = await asyncio.wait_for(
            gather_bounded(
                [lambda s=s: s.ask({"type": "subscribe", "channel": TOPIC}) for s in sessions], args.concurrency
            ),
            args.max_phase,
        )
        subscribers = [s for s, a in zip(sessions, answers, strict=True) if isinstance(a, dict) and a["type"] == "ok"]
        await asyncio.sleep(1.0)

        # Fan-out latency with nothing else going on.
        single = await fanout_one_at_a_time(sender, subscribers, args.single, args.drain)
        single_lat = sorted(single.latencies)

        # The stream: M messages at R/s.
        group_before = await group_size(args.redis_url, TOPIC_GROUP)
        others = Others(server)
        cpu0, client_cpu0 = server.cpu_seconds(), time.process_time()
        stream, published = await fanout_stream(sender, subscribers, args)
        stream_cpu = server.cpu_seconds() - cpu0
        client_cpu = time.process_time() - client_cpu0
        others_stream = others.cores()
        group_after = await group_size(args.redis_url, TOPIC_GROUP)
        print(
            f"  fan-out done; {len(stream.latencies)} of {stream.target} delivered; "
            f"others used {others_connect} / {others_stream} cores (connect / stream)",
            flush=True,
        )
        if group_after < group_before:
            print(f"  WARNING: the topic group lost members ({group_before} -> {group_after})", flush=True)
        await asyncio.sleep(args.settle)
        rss_after = server.rss_kib()
        early_closes = sum(1 for s in sessions if s.reader is not None and s.reader.done())

        lat = sorted(stream.latencies)
        connected = len(sessions)
        expected = len(subscribers) * args.messages
        return Result(
            server=server.candidate.name,
            round=round_no,
            command=server.command,
            sessions=connected,
            failed_connects=n - connected,
            extension=extension,
            rss_base_mib=round(rss_base / 1024, 1),
            rss_idle_mib=round(rss_idle / 1024, 1),
            rss_after_mib=round(rss_after / 1024, 1),
            kib_per_session_idle=round((rss_idle - rss_base) / max(connected, 1), 1),
            kib_per_session_after=round((rss_after - rss_base) / max(connected, 1), 1),
            connect_s=round(connect_s, 2),
            connect_rate=round(connected / connect_s, 1),
            connect_cpu_ms_per_session=round(connect_cpu * 1000 / max(connected, 1), 2),
            subscribed=len(subscribers),
            single_p50_ms=ms(percentile(single_lat, 0.50)),
            single_p99_ms=ms(percentile(single_lat, 0.99)),
            single_max_ms=ms(single_lat[-1] if single_lat else float("nan")),
            single_lost=len(subscribers) * args.single - len(single_lat),
            published=published,
            expected=expected,
            delivered=len(lat),
            lost=expected - len(lat),
            duplicates=single.duplicates + stream.duplicates,
            p50_ms=ms(percentile(lat, 0.50)),
            p99_ms=ms(percentile(lat, 0.99)),
            max_ms=ms(lat[-1] if lat else float("nan")),
            deliveries_per_s=round(len(lat) / max(stream.last_delivery - stream.first_send, 1e-9)),
            server_cpu_us_per_delivery=round(stream_cpu * 1e6 / max(len(lat), 1), 1),
            stream_server_cpu_s=round(stream_cpu, 2),
            stream_client_cpu_s=round(client_cpu, 2),
            early_closes=early_closes,
            group_before=group_before,
            group_after=group_after,
            others_cores_before=others_before,
            others_cores_connect=others_connect,
            others_cores_stream=others_stream,
        )
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pinger, 10)
        await gather_bounded([s.close for s in pinged], args.concurrency)


async def run_candidate(
    candidate: Candidate, tokens: list[str], env: dict[str, str], args: argparse.Namespace, round_no: int, stamp: str
) -> Result:
    others_before = await wait_for_quiet(args.quiet_cores, args.wait_quiet)
    redis_flush(args.redis_url)
    log_path = RESULTS / f"server_choice-{stamp}-{candidate.name}-r{round_no}.log"
    server = Server.start(candidate, env, args.server_nofile, log_path)
    print(f"[round {round_no}] {candidate.name}: {server.command}", flush=True)
    try:
        await server.ready()
        return await measure(server, tokens, args, round_no, others_before)
    finally:
        server.stop()


# --- reporting --------------------------------------------------------------------------------------

COLUMNS: list[tuple[str, str]] = [
    ("server", "server"),
    ("sessions", "sessions"),
    ("kib_per_session_idle", "KiB/session idle"),
    ("kib_per_session_after", "KiB/session after fan-out"),
    ("connect_rate", "connects/s"),
    ("connect_cpu_ms_per_session", "server CPU ms/connect"),
    ("single_p50_ms", "one msg p50 ms"),
    ("single_max_ms", "one msg max ms"),
    ("deliveries_per_s", "stream deliveries/s"),
    ("p50_ms", "stream p50 ms"),
    ("p99_ms", "stream p99 ms"),
    ("max_ms", "stream max ms"),
    ("server_cpu_us_per_delivery", "server CPU µs/delivery"),
    ("lost", "lost"),
    ("others_cores_stream", "others' CPU (cores)"),
]


def median_rows(results: list[Result]) -> list[dict[str, Any]]:
    """One row per server: the median of each figure over the rounds."""
    rows: list[dict[str, Any]] = []
    for name in dict.fromkeys(r.server for r in results):
        mine = [asdict(r) for r in results if r.server == name]
        row: dict[str, Any] = {"server": name, "rounds": len(mine), "extension": mine[0]["extension"]}
        for key, value in mine[0].items():
            if isinstance(value, int | float) and not isinstance(value, bool) and key != "round":
                row[key] = statistics.median(m[key] for m in mine)
        rows.append(row)
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:,.1f}" if abs(value) < 100 else f"{value:,.0f}"
        return f"{value:,}" if isinstance(value, int) else str(value)

    lines = [
        "| " + " | ".join(title for _, title in COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    lines += ["| " + " | ".join(cell(row[key]) for key, _ in COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


# --- main -----------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--sessions", type=int, default=1000, help="idle sessions per server (default 1000)")
    parser.add_argument("-m", "--messages", type=int, default=50, help="messages in the fan-out stream")
    parser.add_argument("-r", "--rate", type=float, default=10.0, help="stream messages published per second")
    parser.add_argument("--single", type=int, default=10, help="messages sent one at a time, before the stream")
    parser.add_argument("-c", "--concurrency", type=int, default=50, help="connects or subscribes in flight")
    parser.add_argument("--rounds", type=int, default=1, help="rounds over all candidates; medians are reported")
    parser.add_argument(
        "--only", nargs="+", choices=sorted(CANDIDATES), help="candidates to run (default: every one available)"
    )
    parser.add_argument("--ping-every", type=float, default=15.0, help="seconds between a session's pings")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds to wait before reading RSS")
    parser.add_argument("--drain", type=float, default=10.0, help="give up after this long with no delivery")
    parser.add_argument("--max-phase", type=float, default=300.0, help="upper bound of any one phase, seconds")
    parser.add_argument(
        "--quiet-cores", type=float, default=0.3, help="before each candidate, wait until others use less CPU"
    )
    parser.add_argument("--wait-quiet", type=float, default=300.0, help="longest such wait, seconds")
    parser.add_argument("--server-nofile", type=int, default=0, help="server open-file limit (default: hard limit)")
    parser.add_argument("--pg-admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/10")
    parser.add_argument(
        "--base",
        action="append",
        default=[],
        help="also run uvicorn-sansio from this checkout (a `git archive` of another commit), "
        "as uvicorn-sansio@<its directory name>; may be repeated",
    )
    args = parser.parse_args(argv)
    if (
        args.sessions < 1
        or args.messages < 1
        or args.single < 1
        or args.rate <= 0
        or args.rounds < 1
        or args.concurrency < 1
    ):
        parser.error("--sessions, --messages, --rate, --rounds and --concurrency must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for url in (args.pg_admin_url, args.redis_url):
        require_loopback(url)
    needed = args.sessions * 2 + 1000
    hard = raise_nofile(max(needed, 65536))
    args.server_nofile = args.server_nofile or min(hard, 65536)
    if hard < args.sessions + 200:
        sys.exit(f"the open-file hard limit ({hard}) is too low for {args.sessions} sessions")
    candidates = [CANDIDATES[name] for name in (args.only or CANDIDATES)]
    plain = CANDIDATES["uvicorn-sansio"]
    for base in map(Path, args.base):
        candidates.append(
            Candidate(f"{plain.name}@{base.name}", f"{plain.summary}, from {base}", plain.argv, root=base.resolve())
        )
    skipped = [c.name for c in candidates if not c.available()]
    candidates = [c for c in candidates if c.available()]
    if skipped:
        print(f"skipped (module missing): {', '.join(skipped)}", flush=True)

    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    results: list[Result] = []
    with bench_database(args.pg_admin_url) as database_url:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
        env.update(
            DATABASE_URL=database_url,
            REDIS_URL=args.redis_url,
            CHANNEL_PREFIX=CHANNEL_PREFIX,
            SECRET_KEY="bench-" + secrets.token_urlsafe(32),
            ENV_FILE="/nonexistent",
            DEBUG="0",
            LOG_LEVEL="WARNING",
            ACCESS_TOKEN_LIFETIME="86400",
            # The sender is one session; lift its send limit so --rate may exceed 20/s.
            CHAT_SEND_RATE=str(max(20.0, args.rate * 2)),
            CHAT_SEND_BURST=str(max(40, args.messages + args.single)),
            PYTHONUNBUFFERED="1",
        )
        print(f"database {urlsplit(database_url).path[1:]}: migrating, making {args.sessions + 4} users", flush=True)
        migrate(env, RESULTS / f"server_choice-{stamp}-migrate.log")
        tokens = users_with_tokens(env, args.sessions + 4)
        for round_no in range(1, args.rounds + 1):
            order = candidates if round_no % 2 else candidates[::-1]
            for candidate in order:
                result = uvloop.run(run_candidate(candidate, tokens, env, args, round_no, stamp))
                results.append(result)
                print(
                    f"  {result.server}: {result.connect_rate:.0f} connects/s, "
                    f"{result.kib_per_session_idle:.1f}/{result.kib_per_session_after:.1f} KiB/session, "
                    f"one message p50 {result.single_p50_ms} max {result.single_max_ms} ms, "
                    f"stream {result.deliveries_per_s}/s p50 {result.p50_ms} p99 {result.p99_ms} ms, "
                    f"lost {result.lost + result.single_lost}",
                    flush=True,
                )

    rows = median_rows(results)
    report = {
        "date": stamp,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "command": shlex.join([".venv/bin/python", "benchmarks/server_choice.py", *(argv or sys.argv[1:])]),
        "args": {k: v for k, v in vars(args).items()},
        "results": [asdict(r) for r in results],
        "medians": rows,
    }
    out = RESULTS / f"server_choice-{stamp}.json"
    out.write_text(json.dumps(report, indent=2))
    print()
    print(markdown_table(rows))
    print()
    for row in rows:
        print(f"- {row['server']}: negotiated extensions: {row['extension']}")
    print(f"\nfull results: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
