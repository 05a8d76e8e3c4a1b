"""The benchmark suite: our server and the Channels tutorial baseline, side by side.

For each server layout (1 process, or 2: `--processes 1 2`) and each target
(`ours`: `manage.py serve` on PostgreSQL and Redis; `baseline`: the tutorial
chat of benchmarks/baseline/ on daphne and channels-redis), one after the
other in the same run, the scenarios:

- connect: open N sessions, C at a time; connects/s, failures, server RSS per
  session (all server processes summed, children too: (RSS with N idle
  sessions - RSS before) / N), server CPU; then hold them for --hold s with
  heartbeats and count sessions the server closed;
- broadcast: to those N sessions (ours: a staff user's `broadcast`; the
  baseline: one room everyone joined), --broadcasts times: time until the
  last session received it;
- direct: P sender/receiver pairs, each sender at r messages/s for T s (ours:
  `direct` to the receiver; the baseline: a room per pair); latency
  percentiles and losses;
- fanout: one topic with S subscribers and one publisher, at each rate of
  --rates for T s (ours: `topic:fan`; the baseline: one room); deliveries/s,
  latency percentiles over all deliveries, losses. Once a rate saturates a
  target (p99 over --sweep-stop-ms, or losses), the sweep skips to
  --main-rate (the issue's headline point) if it has not run it yet, and
  stops after it: higher rates would only queue more.

Every figure is recorded with the CPU the server and this load generator
used and the CPU everything else on the machine used meanwhile ("others").
Results go to benchmarks/results/<stamp>.json and <stamp>.md; --plot
regenerates docs/figures/latency_vs_load.png from that JSON (benchmarks/plot.py).

    .venv/bin/python -m benchmarks.run              # short: a few minutes (make bench)
    .venv/bin/python -m benchmarks.run --full       # the issue's sizes, 1 and 2 processes
    .venv/bin/python -m benchmarks.run --smoke      # tiny, for the test suite
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uvloop  # noqa: E402

from benchmarks.common import (  # noqa: E402
    CLK_TCK,
    HOST,
    RESULTS,
    ROOT,
    Others,
    bench_database,
    cpu_seconds,
    free_port,
    migrate,
    raise_nofile,
    require_loopback,
    rss_kib,
    server_env,
    users_with_tokens,
    wait_for_quiet,
)
from benchmarks.loadgen import (  # noqa: E402
    OURS,
    TUTORIAL,
    Recorder,
    Session,
    Target,
    Upkeep,
    gather_bounded_list,
)

BIN = Path(sys.executable).parent
TOPIC = "topic:fan"

SIZES: dict[str, dict[str, Any]] = {
    # What `make bench` runs: a few minutes for everything.
    "short": dict(
        connect=1000,
        hold=10.0,
        broadcasts=3,
        pairs=50,
        pair_rate=5.0,
        duration=10.0,
        subscribers=200,
        rates=[1.0, 2.0, 5.0, 10.0, 20.0, 40.0, 80.0],
        sweep_duration=5.0,
        processes=[1],
    ),
    # The sizes.
    "full": dict(
        connect=10000,
        hold=300.0,
        broadcasts=5,
        pairs=200,
        pair_rate=5.0,
        duration=30.0,
        subscribers=1000,
        rates=[0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 40.0],
        sweep_duration=10.0,
        processes=[1, 2],
    ),
    # The test suite's smoke test: seconds.
    "smoke": dict(
        connect=20,
        hold=0.5,
        broadcasts=1,
        pairs=3,
        pair_rate=5.0,
        duration=1.0,
        subscribers=5,
        rates=[5.0],
        sweep_duration=1.0,
        processes=[1],
    ),
}


# --- servers ------------------------------------------------------------------------------------------


@dataclass
class ServerGroup:
    """The server processes of one target and layout, measured together."""

    name: str
    dialect: str
    processes: int
    split: str
    ports: list[int] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    log_path: Path = RESULTS / "server.log"
    database: str = ""  # ours: the PostgreSQL database it uses (for its backends' CPU)
    pg_admin_url: str = ""

    def start(self, env: dict[str, str], nofile: int) -> None:
        if self.dialect == OURS and self.split == "workers" and self.processes > 1:
            port = free_port()
            self._spawn(self._ours_argv(port, self.processes), env, nofile)
            self.ports = [port]
            return
        for _ in range(self.processes):
            port = free_port()
            argv = self._ours_argv(port, 1) if self.dialect == OURS else self._daphne_argv(port)
            self._spawn(argv, env, nofile)
            self.ports.append(port)

    @staticmethod
    def _ours_argv(port: int, workers: int) -> list[str]:
        return [
            sys.executable,
            "manage.py",
            "serve",
            "--host",
            HOST,
            "--port",
            str(port),
            "--workers",
            str(workers),
        ]

    @staticmethod
    def _daphne_argv(port: int) -> list[str]:
        return [str(BIN / "daphne"), "-b", HOST, "-p", str(port), "-v", "0", "benchmarks.baseline.asgi:application"]

    def _spawn(self, argv: list[str], env: dict[str, str], nofile: int) -> None:
        command = shlex.join(argv)
        with self.log_path.open("ab") as log:
            self.procs.append(
                subprocess.Popen(
                    ["bash", "-c", f"ulimit -n {nofile} && exec {command}"],
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        self.commands.append(command)

    async def ready(self, within: float = 60.0) -> None:
        """Every port answers HTTP (ours: /readyz is 200, database and Redis reachable)."""
        deadline = time.monotonic() + within
        for port in self.ports:
            while True:
                for proc in self.procs:
                    if proc.poll() is not None:
                        raise RuntimeError(f"{self.name} exited ({proc.returncode}), see {self.log_path}")
                if await self._answers(port):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} not ready within {within:.0f} s, see {self.log_path}")
                await asyncio.sleep(0.2)
        if self.split == "workers" and self.processes > 1:
            await asyncio.sleep(2.0)  # let every worker come up, not just the first

    async def _answers(self, port: int) -> bool:
        with contextlib.suppress(OSError, TimeoutError):
            reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 2)
            path = "/readyz" if self.dialect == OURS else "/"
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
            status = await asyncio.wait_for(reader.readline(), 5)
            writer.close()
            return b" 200 " in status if self.dialect == OURS else status.startswith(b"HTTP/")
        return False

    def rss_kib(self) -> int:
        return sum(rss_kib(p.pid) for p in self.procs)

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(p.pid) for p in self.procs)

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def stop(self, timeout: float = 20.0) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


# --- measuring helpers ---------------------------------------------------------------------------------


class Phase:
    """CPU over one phase, in cores: the server, this generator, our database's
    PostgreSQL backends, the Redis server (all of it: it serves others too), and
    everything else on the machine ("others", which includes those two)."""

    def __init__(self, servers: ServerGroup) -> None:
        self.servers = servers
        self.others = Others(servers)
        self.t0 = time.monotonic()
        self.server0 = servers.cpu_seconds()
        self.client0 = time.process_time()
        self.pg0 = pg_backend_cpu(servers.pg_admin_url, servers.database)
        self.redis0 = redis_server_cpu()

    def figures(self) -> dict[str, float]:
        wall = max(time.monotonic() - self.t0, 1e-9)
        pg1 = pg_backend_cpu(self.servers.pg_admin_url, self.servers.database)
        pg = sum(cpu - self.pg0.get(pid, 0.0) for pid, cpu in pg1.items())
        return {
            "wall_s": round(wall, 2),
            "server_cpu_cores": round((self.servers.cpu_seconds() - self.server0) / wall, 2),
            "client_cpu_cores": round((time.process_time() - self.client0) / wall, 2),
            "pg_cpu_cores": round(max(pg, 0.0) / wall, 2),
            "redis_cpu_cores": round((redis_server_cpu() - self.redis0) / wall, 2),
            "others_cpu_cores": self.others.cores(),
        }


def pg_backend_cpu(admin_url: str, database: str) -> dict[int, float]:
    """CPU seconds of each PostgreSQL backend connected to `database` (the server's connections)."""
    if not database:
        return {}
    import psycopg

    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
            pids = [row[0] for row in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", [database])]
    except psycopg.Error:
        return {}
    out = {}
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            out[pid] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def redis_server_cpu() -> float:
    total = 0.0
    for comm in Path("/proc").glob("[0-9]*/comm"):
        with contextlib.suppress(OSError):
            if comm.read_text().strip() == "redis-server":
                total += cpu_seconds(int(comm.parent.name))
    return total


def client_rss_kib() -> int:
    return rss_kib(os.getpid())


async def open_many(
    target: Target,
    numbers: list[int],
    room: str | Callable[[int], str],
    recorder: Recorder,
    concurrency: int,
    within: float,
    into: list[Session],
) -> tuple[list[Session], list[BaseException]]:
    """Open sessions `numbers`; each is appended to `into` as soon as it is open,
    so that a running `Upkeep` on `into` pings it from then on (a slow connect
    phase must not leave the first sessions silent past the server's limit)."""

    async def one(number: int) -> Session:
        session = await target.open(number, room(number) if callable(room) else room, recorder)
        into.append(session)
        return session

    try:
        results = await asyncio.wait_for(
            gather_bounded_list([lambda n=n: one(n) for n in numbers], concurrency), within
        )
    except BaseException:
        await close_all(list(into), concurrency)
        raise
    sessions = [r for r in results if isinstance(r, Session)]
    failures = [r for r in results if isinstance(r, BaseException)]
    return sessions, failures


async def close_all(sessions: list[Session], concurrency: int) -> None:
    await gather_bounded_list([s.close for s in sessions], concurrency)


def unexpected_closes(sessions: list[Session]) -> int:
    return sum(1 for s in sessions if s.closed_by_server is not None)


def close_codes(sessions: list[Session]) -> dict[str, int]:
    """Close codes of the sessions the server closed (-1: no close frame), counted."""
    codes: dict[str, int] = {}
    for s in sessions:
        if s.closed_by_server is not None:
            codes[str(s.closed_by_server)] = codes.get(str(s.closed_by_server), 0) + 1
    return codes


# --- scenarios -------------------------------------------------------------------------------------------


async def scenario_connect_and_broadcast(
    servers: ServerGroup, target: Target, args: argparse.Namespace, staff: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    n = args.connect
    await asyncio.sleep(args.settle)
    rss_before, client_before = servers.rss_kib(), client_rss_kib()
    idle = Recorder()
    phase = Phase(servers)
    t0 = time.monotonic()
    live: list[Session] = []
    upkeep = Upkeep(live, args.ping_every, args.ack_every if target.dialect == OURS else 0)
    upkeep.start()
    try:
        sessions, failures = await open_many(
            target, list(range(n)), "all", idle, args.concurrency, args.max_phase, into=live
        )
    except BaseException:
        await upkeep.close()
        raise
    connect_s = time.monotonic() - t0
    connect_figures = phase.figures()
    senders: list[Session] = []
    try:
        await asyncio.sleep(args.settle)
        rss_idle, client_idle = servers.rss_kib(), client_rss_kib()
        # Per session over those open when RSS was read: a session the server
        # closed no longer holds its memory.
        alive_idle = max(len(sessions) - unexpected_closes(sessions), 1)
        print(
            f"    connect: {len(sessions)}/{n} in {connect_s:.1f} s, RSS {rss_before // 1024} -> "
            f"{rss_idle // 1024} MiB",
            flush=True,
        )
        hold_phase = Phase(servers)
        await asyncio.sleep(args.hold)
        hold_figures = hold_phase.figures()
        rss_held = servers.rss_kib()
        connect = {
            "sessions": n,
            "opened": len(sessions),
            "failed": len(failures),
            "first_failure": repr(failures[0])[:300] if failures else "",
            "connect_s": round(connect_s, 2),
            "connects_per_s": round(len(sessions) / max(connect_s, 1e-9), 1),
            "server_cpu_ms_per_connect": round(
                connect_figures["server_cpu_cores"] * connect_figures["wall_s"] * 1000 / max(len(sessions), 1), 2
            ),
            "rss_before_mib": round(rss_before / 1024, 1),
            "rss_idle_mib": round(rss_idle / 1024, 1),
            "open_at_rss_read": alive_idle,
            "kib_per_session": round((rss_idle - rss_before) / alive_idle, 1),
            "client_kib_per_session": round((client_idle - client_before) / max(len(sessions), 1), 1),
            "hold_s": args.hold,
            "closed_during_hold": unexpected_closes(sessions),
            "close_codes_during_hold": close_codes(sessions),
            "kib_per_session_after_hold": round(
                (rss_held - rss_before) / max(len(sessions) - unexpected_closes(sessions), 1), 1
            ),
            "pings_sent": upkeep.pings_sent,
            # Over the ping interval here means some sessions pinged late (a busy generator).
            "ping_round_longest_s": upkeep.longest_cycle.get("_ping"),
            "connect_phase": connect_figures,
            "hold_phase": hold_figures,
        }

        # Broadcast to everyone connected (the sender is one more session). A
        # round goes to the sessions still open when it starts; a sender the
        # server closed is replaced before the next round (and counted).
        rec = Recorder()
        for s in sessions:
            s.recorder = rec
        sender = await target.open(staff, "all", rec)
        senders = [sender]
        await asyncio.sleep(0.5)
        phase = Phase(servers)
        rounds: list[dict[str, Any]] = []
        for i in range(args.broadcasts):
            if sender.closed_by_server is not None:
                sender = await target.open(staff, "all", rec)
                senders.append(sender)
                await asyncio.sleep(0.5)
            receivers = [s for s in sessions if s.closed_by_server is None]
            round_rec = Recorder()
            for s in receivers:
                s.recorder = round_rec
            sender.recorder = round_rec
            round_rec.expect(len(receivers))
            round_rec.first_send = time.monotonic()
            await sender.send_message("broadcast", "", f"b{i}")
            await round_rec.drain(args.drain, args.max_phase)
            rounds.append({"receivers": len(receivers), **round_rec.summary(len(receivers))})
            rec.latencies += round_rec.latencies
            rec.duplicates += round_rec.duplicates
            await asyncio.sleep(0.5)
        await asyncio.sleep(0.2)
        expected = sum(r["expected"] for r in rounds)
        total = rec.summary(expected)
        broadcast = {
            "receivers": len(sessions),
            "broadcasts": args.broadcasts,
            "receivers_per_round": [r["receivers"] for r in rounds],
            "last_receipt_ms": [r["max_ms"] for r in rounds],
            "lost_per_round": [r["lost"] for r in rounds],
            "last_receipt_ms_worst": max((r["max_ms"] or 0.0) for r in rounds) if rounds else None,
            "send_errors": sum(r["send_errors"] for r in rounds),
            "first_error": next((r["first_error"] for r in rounds if r["first_error"]), ""),
            **{k: total[k] for k in ("expected", "delivered", "lost", "duplicates", "p50_ms", "p99_ms", "max_ms")},
            "closed_during_run": unexpected_closes([*sessions, *senders]),
            "close_codes": close_codes([*sessions, *senders]),
            "senders_closed": sum(1 for s in senders if s.closed_by_server is not None),
            "phase": phase.figures(),
        }
        print(
            f"    broadcast to {broadcast['receivers_per_round']}: last receipt {broadcast['last_receipt_ms']} ms, "
            f"lost {broadcast['lost']}",
            flush=True,
        )
        return connect, broadcast
    finally:
        await upkeep.close()
        await close_all(senders, args.concurrency)
        await close_all(sessions, args.concurrency)


async def scenario_direct(servers: ServerGroup, target: Target, args: argparse.Namespace) -> dict[str, Any]:
    p = args.pairs
    numbers = list(range(2 * p))
    warm = Recorder()
    # Pair k: session 2k sends to session 2k+1; the baseline puts each pair in room pK.
    live: list[Session] = []
    upkeep = Upkeep(live, args.ping_every, args.ack_every if target.dialect == OURS else 0)
    upkeep.start()
    try:
        sessions, failures = await open_many(
            target, numbers, lambda n: f"p{n // 2}", warm, args.concurrency, args.max_phase, into=live
        )
    except BaseException:
        await upkeep.close()
        raise
    try:
        if failures:
            raise RuntimeError(f"direct: {len(failures)} connects failed: {failures[0]!r}")
        senders = sessions[0::2]  # pair k: session 2k sends to session 2k+1
        # Warm-up: one message per pair (makes each DM channel), not counted.
        warm.expect(p)
        for k, s in enumerate(senders):
            await s.send_message("direct", f"bench{2 * k + 1:05d}", f"w{k}")
        await warm.drain(args.drain, args.max_phase)
        rec = Recorder()
        for s in sessions:
            s.recorder = rec
        count = max(1, round(args.pair_rate * args.duration))
        rec.expect(p * count)
        phase = Phase(servers)
        start = time.monotonic() + 0.1
        rec.first_send = start

        async def send_all(k: int, s: Session) -> None:
            offset = k / (p * args.pair_rate)  # spread the pairs evenly over each interval
            for i in range(count):
                await asyncio.sleep(max(0.0, start + offset + i / args.pair_rate - time.monotonic()))
                await s.send_message("direct", f"bench{2 * k + 1:05d}", f"d{k}.{i}")

        await asyncio.gather(*(send_all(k, s) for k, s in enumerate(senders)))
        await rec.drain(args.drain, args.max_phase)
        await asyncio.sleep(0.2)
        expected = rec.stored if target.dialect == OURS else rec.sent
        result = {
            "pairs": p,
            "rate_per_pair": args.pair_rate,
            "duration_s": args.duration,
            "offered_per_s": p * args.pair_rate,
            **rec.summary(expected),
            "closed_during_run": unexpected_closes(sessions),
            "acks_sent": upkeep.acks_sent,
            "phase": phase.figures(),
        }
        if target.dialect == OURS:
            result["not_stored"] = rec.sent - rec.stored  # refused or unanswered sends
        print(
            f"    direct {p}x{args.pair_rate:g}/s: p50 {result['p50_ms']} p99 {result['p99_ms']} ms, "
            f"lost {result['lost']}, errors {result['send_errors']}",
            flush=True,
        )
        return result
    finally:
        await upkeep.close()
        await close_all(sessions, args.concurrency)


async def scenario_fanout(servers: ServerGroup, target: Target, args: argparse.Namespace) -> list[dict[str, Any]]:
    s_count = args.subscribers
    warm = Recorder()
    live: list[Session] = []
    upkeep = Upkeep(live, args.ping_every, args.ack_every if target.dialect == OURS else 0)
    upkeep.start()
    try:
        subscribers, failures = await open_many(
            target, list(range(1, s_count + 1)), "fan", warm, args.concurrency, args.max_phase, into=live
        )
    except BaseException:
        await upkeep.close()
        raise
    publisher: Session | None = None
    try:
        if failures:
            raise RuntimeError(f"fanout: {len(failures)} connects failed: {failures[0]!r}")
        joined = await gather_bounded_list([lambda s=s: target.join(s, TOPIC) for s in subscribers], args.concurrency)
        refused = [j for j in joined if isinstance(j, BaseException)]
        if refused:
            raise RuntimeError(f"fanout: {len(refused)} subscribes failed: {refused[0]!r}")
        publisher = await target.open(0, "fan", warm)
        warm.expect(s_count)
        await publisher.send_message("publish", TOPIC, "warm")
        await warm.drain(args.drain, args.max_phase)
        points: list[dict[str, Any]] = []
        rates = sorted(args.rates)
        while rates:
            rate = rates.pop(0)
            rec = Recorder()
            for s in [*subscribers, publisher]:
                s.recorder = rec
            count = max(1, round(rate * args.sweep_duration))
            rec.expect(count * s_count)
            phase = Phase(servers)
            acks_before = upkeep.acks_sent
            start = time.monotonic() + 0.05
            rec.first_send = start
            for i in range(count):
                await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
                await publisher.send_message("publish", TOPIC, f"f{rate:g}.{i}")
            await rec.drain(args.drain, args.max_phase)
            await asyncio.sleep(0.2)
            expected = (rec.stored if target.dialect == OURS else rec.sent) * s_count
            point = {
                "subscribers": s_count,
                "rate": rate,
                "duration_s": args.sweep_duration,
                "offered_deliveries_per_s": rate * s_count,
                **rec.summary(expected),
                "closed_during_run": unexpected_closes(subscribers),
                # `received` frames the subscribers sent during the phase (0 with --ack-every 0).
                "acks_sent": upkeep.acks_sent - acks_before,
                "phase": phase.figures(),
            }
            points.append(point)
            print(
                f"    fanout {s_count} subs x {rate:g}/s: {point['deliveries_per_s']:.0f} deliveries/s, "
                f"p50 {point['p50_ms']} p99 {point['p99_ms']} ms, lost {point['lost']}, acks {point['acks_sent']}",
                flush=True,
            )
            if (point["p99_ms"] or 0) > args.sweep_stop_ms or point["lost"] > 0:
                rates = [args.main_rate] if rate < args.main_rate and args.main_rate in rates else []
                print(f"    (saturated: {'on to ' + str(rates[0]) + '/s' if rates else 'sweep stops'})", flush=True)
            await asyncio.sleep(args.settle)
        return points
    finally:
        await upkeep.close()
        if publisher is not None:
            await publisher.close()
        await close_all(subscribers, args.concurrency)


# --- one target ------------------------------------------------------------------------------------------


async def run_target(
    name: str, processes: int, env: dict[str, str], tokens: list[str], args: argparse.Namespace, stamp: str
) -> dict[str, Any]:
    dialect = OURS if name == "ours" else TUTORIAL
    others_before = await wait_for_quiet(args.quiet_cores, args.wait_quiet)
    servers = ServerGroup(
        name=name,
        dialect=dialect,
        processes=processes,
        split=args.split,
        log_path=RESULTS / f"{stamp}-{name}-p{processes}.log",
        database=urlsplit(env["DATABASE_URL"]).path[1:] if dialect == OURS else "",
        pg_admin_url=args.pg_admin_url,
    )
    servers.start(env, args.server_nofile)
    print(f"  {name}, {processes} process(es): {' & '.join(servers.commands)}", flush=True)
    result: dict[str, Any] = {
        "target": name,
        "processes": processes,
        "split": args.split if processes > 1 else "-",
        "commands": servers.commands,
        "others_cpu_cores_before": others_before,
    }
    try:
        await servers.ready()
        target = Target(dialect, servers.ports, tokens)
        staff = len(tokens) - 1
        if "connect" in args.scenarios or "broadcast" in args.scenarios:
            result["connect"], result["broadcast"] = await scenario_connect_and_broadcast(servers, target, args, staff)
            await asyncio.sleep(args.settle)
        if "direct" in args.scenarios:
            result["direct"] = await scenario_direct(servers, target, args)
            await asyncio.sleep(args.settle)
        if "fanout" in args.scenarios:
            result["fanout"] = await scenario_fanout(servers, target, args)
        result["server_alive_at_end"] = servers.alive()
    finally:
        servers.stop()
    return result


# --- report ------------------------------------------------------------------------------------------------


def fanout_point(result: dict[str, Any], rate: float) -> dict[str, Any] | None:
    return next((p for p in result.get("fanout", []) if p["rate"] == rate), None)


def ratios(results: list[dict[str, Any]], main_rate: float) -> list[dict[str, Any]]:
    """Ours over the baseline, per layout, for the headline figures."""
    out = []
    for processes in sorted({r["processes"] for r in results}):
        ours = next((r for r in results if r["target"] == "ours" and r["processes"] == processes), None)
        base = next((r for r in results if r["target"] == "baseline" and r["processes"] == processes), None)
        if ours is None or base is None:
            continue
        row: dict[str, Any] = {"processes": processes}

        def ratio(a: float | None, b: float | None) -> float | None:
            return round(a / b, 2) if a and b else None

        def best_rate(r: dict[str, Any]) -> float:
            return max((p["deliveries_per_s"] for p in r.get("fanout", [])), default=0.0)

        row["fanout_deliveries_per_s"] = (best_rate(ours), best_rate(base), ratio(best_rate(ours), best_rate(base)))
        o, b = fanout_point(ours, main_rate), fanout_point(base, main_rate)
        if o and b:
            row["fanout_p99_ms_at_main_rate"] = (o["p99_ms"], b["p99_ms"], ratio(b["p99_ms"], o["p99_ms"]))
        if "direct" in ours and "direct" in base:
            row["direct_p99_ms"] = (
                ours["direct"]["p99_ms"],
                base["direct"]["p99_ms"],
                ratio(base["direct"]["p99_ms"], ours["direct"]["p99_ms"]),
            )
        if "connect" in ours and "connect" in base:
            row["kib_per_session"] = (
                ours["connect"]["kib_per_session"],
                base["connect"]["kib_per_session"],
                ratio(base["connect"]["kib_per_session"], ours["connect"]["kib_per_session"]),
            )
            row["connects_per_s"] = (
                ours["connect"]["connects_per_s"],
                base["connect"]["connects_per_s"],
                ratio(ours["connect"]["connects_per_s"], base["connect"]["connects_per_s"]),
            )
        if "broadcast" in ours and "broadcast" in base:
            row["broadcast_last_ms"] = (
                ours["broadcast"]["last_receipt_ms_worst"],
                base["broadcast"]["last_receipt_ms_worst"],
                ratio(base["broadcast"]["last_receipt_ms_worst"], ours["broadcast"]["last_receipt_ms_worst"]),
            )
        out.append(row)
    return out


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Benchmark run {report['date']}",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Machine: {report['machine']}",
        "",
    ]
    for r in report["results"]:
        lines.append(f"## {r['target']}, {r['processes']} process(es) ({r['split']})")
        lines.append("")
        lines.append("Commands: " + "; ".join(f"`{c}`" for c in r["commands"]))
        lines.append("")
        if "connect" in r:
            c = r["connect"]
            lines.append(
                f"- connect: {c['opened']}/{c['sessions']} opened ({c['failed']} failed) at {c['connects_per_s']}/s, "
                f"{c['kib_per_session']} KiB/session idle ({c['kib_per_session_after_hold']} after a {c['hold_s']} s "
                f"hold), {c['closed_during_hold']} closed during the hold, server CPU "
                f"{c['server_cpu_ms_per_connect']} ms/connect; others' CPU {c['connect_phase']['others_cpu_cores']} "
                f"cores"
            )
        if "broadcast" in r:
            b = r["broadcast"]
            lines.append(
                f"- broadcast to {b['receivers_per_round']}: last receipt {b['last_receipt_ms']} ms, "
                f"p50 {b['p50_ms']} ms, lost {b['lost']}, send errors {b['send_errors']}, "
                f"{b['closed_during_run']} sessions closed by the server {b['close_codes']}"
            )
        if "direct" in r:
            d = r["direct"]
            lines.append(
                f"- direct {d['pairs']} pairs x {d['rate_per_pair']:g}/s for {d['duration_s']:g} s: p50 {d['p50_ms']}, "
                f"p90 {d['p90_ms']}, p99 {d['p99_ms']}, max {d['max_ms']} ms (send to `ok`: p50 {d['ok_p50_ms']}, "
                f"p99 {d['ok_p99_ms']}); {d['delivered']}/{d['expected']} "
                f"delivered, lost {d['lost']}, send errors {d['send_errors']}; server "
                f"{d['phase']['server_cpu_cores']} cores, generator {d['phase']['client_cpu_cores']}, "
                f"PostgreSQL (our db) {d['phase']['pg_cpu_cores']}, Redis {d['phase']['redis_cpu_cores']}, others "
                f"{d['phase']['others_cpu_cores']}"
            )
        for p in r.get("fanout", []):
            lines.append(
                f"- fanout {p['subscribers']} subs x {p['rate']:g}/s: {p['deliveries_per_s']:,.0f} deliveries/s, "
                f"p50 {p['p50_ms']}, p90 {p['p90_ms']}, p99 {p['p99_ms']}, max {p['max_ms']} ms (send to `ok`: p50 "
                f"{p['ok_p50_ms']}, p99 {p['ok_p99_ms']}); lost {p['lost']}; "
                f"server {p['phase']['server_cpu_cores']} cores, generator {p['phase']['client_cpu_cores']}, "
                f"PostgreSQL (our db) {p['phase']['pg_cpu_cores']}, Redis {p['phase']['redis_cpu_cores']}, "
                f"others {p['phase']['others_cpu_cores']}"
            )
        lines.append("")
    if report["ratios"]:
        lines += [
            "## Ours vs the baseline (same run)",
            "",
            "| processes | figure | ours | baseline | ratio |",
            "|---|---|---|---|---|",
        ]
        for row in report["ratios"]:
            for key, value in row.items():
                if key != "processes":
                    lines.append(f"| {row['processes']} | {key} | {value[0]} | {value[1]} | {value[2]} |")
        lines.append("")
        lines.append("Ratios are ours/baseline for rates, baseline/ours for latency and memory (higher: ours better).")
    return "\n".join(lines) + "\n"


# --- main ----------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="the issue's sizes (about an hour)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for the test suite")
    parser.add_argument("--targets", nargs="+", default=["ours", "baseline"], choices=["ours", "baseline"])
    parser.add_argument(
        "--scenarios",
        nargs="+",
        default=["connect", "broadcast", "direct", "fanout"],
        choices=["connect", "broadcast", "direct", "fanout"],
    )
    parser.add_argument("--processes", nargs="+", type=int, help="server layouts to run (1, 2)")
    parser.add_argument(
        "--split",
        choices=["ports", "workers"],
        default="ports",
        help="2 processes: two servers on two ports (default), or `serve --workers` on one port",
    )
    parser.add_argument("--connect", type=int, help="sessions opened and held (connect, broadcast)")
    parser.add_argument("--hold", type=float, help="seconds the sessions are held with heartbeats")
    parser.add_argument("--broadcasts", type=int, help="broadcasts sent to the held sessions")
    parser.add_argument("--pairs", type=int, help="direct: sender/receiver pairs")
    parser.add_argument("--pair-rate", type=float, help="direct: messages/s per sender")
    parser.add_argument("--duration", type=float, help="direct: seconds of sending")
    parser.add_argument("--subscribers", type=int, help="fanout: subscribers of the topic")
    parser.add_argument("--rates", type=float, nargs="+", help="fanout: publishes/s, one run each")
    parser.add_argument("--sweep-duration", type=float, help="fanout: seconds of publishing per rate")
    parser.add_argument("--main-rate", type=float, default=20.0, help="fanout rate the headline figures use")
    parser.add_argument("--sweep-stop-ms", type=float, default=5000.0, help="stop a sweep once p99 exceeds this")
    parser.add_argument("-c", "--concurrency", type=int, default=100, help="connects in flight")
    parser.add_argument("--ping-every", type=float, default=20.0, help="seconds between a session's pings")
    parser.add_argument("--ack-every", type=float, default=5.0, help="ours: seconds between a session's acks (0: none)")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds to wait before reading RSS")
    parser.add_argument("--drain", type=float, default=10.0, help="stop waiting after this long with no delivery")
    parser.add_argument("--max-phase", type=float, default=300.0, help="upper bound of any one wait, seconds")
    parser.add_argument("--quiet-cores", type=float, default=0.5, help="before each target, wait for others < this")
    parser.add_argument("--wait-quiet", type=float, default=60.0, help="longest such wait, seconds")
    parser.add_argument("--pg-admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--out", type=Path, help="write the JSON here (default benchmarks/results/<stamp>.json)")
    parser.add_argument("--plot", action="store_true", help="then regenerate docs/figures/latency_vs_load.png")
    args = parser.parse_args(argv)
    size = SIZES["full" if args.full else "smoke" if args.smoke else "short"]
    for key, value in size.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.smoke:
        args.settle, args.drain, args.wait_quiet, args.quiet_cores = 0.5, 5.0, 0.0, 99.0
    if min(args.connect, args.pairs, args.subscribers, args.broadcasts) < 1 or min(args.rates) <= 0:
        parser.error("sizes and rates must be positive")
    if any(p not in (1, 2) for p in args.processes):
        parser.error("--processes takes 1 and/or 2")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for url in (args.pg_admin_url, args.redis_url):
        require_loopback(url)
    hard = raise_nofile(65536)
    args.server_nofile = min(hard, 65536)
    need = max(args.connect + 10, 2 * args.pairs, args.subscribers + 1) + 200
    if hard < need:
        sys.exit(f"the open-file hard limit ({hard}) is too low for {need} sockets")
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    users = max(args.connect, 2 * args.pairs, args.subscribers + 1) + 1  # the last one is staff
    results: list[dict[str, Any]] = []
    started = time.monotonic()
    with bench_database(args.pg_admin_url) as database_url:
        base_env = {k: v for k, v in os.environ.items() if not k.startswith(("CHAT_", "BASELINE_"))}
        ours_env = {
            **server_env(
                database_url=database_url, redis_url=args.redis_url, stem="bench", drop=("CHAT_", "BASELINE_")
            ),
            # One publisher drives the fan-out sweep: lift its per-session send limit above the top rate.
            "CHAT_SEND_RATE": str(max(20.0, max(args.rates) * 2)),
            "CHAT_SEND_BURST": str(max(40, int(max(args.rates) * 4))),
        }
        prefix = ours_env["CHANNEL_PREFIX"]
        base_env = {
            **base_env,
            "DJANGO_SETTINGS_MODULE": "benchmarks.baseline.settings",
            "BASELINE_REDIS_URL": args.redis_url,
            "BASELINE_CHANNEL_PREFIX": prefix + "base",
            "PYTHONUNBUFFERED": "1",
        }
        print(f"database {urlsplit(database_url).path[1:]}: migrating, making {users} users", flush=True)
        migrate(ours_env, RESULTS / f"{stamp}-migrate.log")
        tokens = users_with_tokens(ours_env, users, staff=1)
        try:
            for processes in args.processes:
                for name in args.targets:
                    env = ours_env if name == "ours" else base_env
                    results.append(uvloop.run(run_target(name, processes, env, tokens, args, stamp)))
        finally:
            redis_forget(args.redis_url, prefix)
    report = {
        "date": stamp,
        "command": shlex.join(
            [".venv/bin/python", "-m", "benchmarks.run", *(argv if argv is not None else sys.argv[1:])]
        ),
        "machine": machine(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "elapsed_s": round(time.monotonic() - started, 1),
        "results": results,
        "ratios": ratios(results, args.main_rate),
    }
    out = args.out or RESULTS / f"{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    summary = markdown(report)
    out.with_suffix(".md").write_text(summary)
    print()
    print(summary)
    print(f"results: {out}")
    if args.plot:
        from benchmarks.plot import plot

        print(f"figure: {plot(out)}")
    return 0


def redis_forget(url: str, prefix: str) -> None:
    """Delete this run's keys (ours and the baseline's share the run's prefix); nothing else."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        for i in range(0, len(keys), 1000):
            client.delete(*keys[i : i + 1000])
    finally:
        client.close()


def machine() -> dict[str, Any]:
    versions = {}
    for module in ("django", "channels", "channels_redis", "uvicorn", "daphne", "websockets", "uvloop", "redis"):
        with contextlib.suppress(Exception):
            versions[module] = __import__(module).__version__
    with contextlib.suppress(Exception):
        import importlib.metadata as md

        versions["channels_redis"] = md.version("channels-redis")
        versions["uvicorn"] = md.version("uvicorn")
        versions["websockets"] = md.version("websockets")
    cpu_model = ""
    with contextlib.suppress(OSError):
        cpu_model = next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            "",
        )
    pg = redis_v = ""
    with contextlib.suppress(Exception):
        pg = subprocess.run(
            ["psql", "-h", HOST, "-U", "postgres", "-Atc", "show server_version"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    with contextlib.suppress(Exception):
        import redis

        redis_v = redis.Redis(host=HOST).info("server")["redis_version"]
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_mib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "postgresql": pg,
        "redis": redis_v,
        "versions": versions,
    }


if __name__ == "__main__":
    sys.exit(main())
