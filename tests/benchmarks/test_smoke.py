"""The benchmark suite at a tiny size: every scenario against ours and the baseline.

Real processes (manage.py serve on a fresh PostgreSQL database and this
suite's Redis; daphne with the tutorial chat), run as `python -m
benchmarks.run --smoke`. Checked: every figure is there and sane, and nothing
was lost or duplicated. No timing thresholds: the machine may be busy.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import run

REPO_ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/9"


def number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def latencies_sane(figures: dict[str, Any]) -> None:
    values = [figures[k] for k in ("p50_ms", "p99_ms", "max_ms")]
    assert all(number(v) and v >= 0 for v in values), figures
    assert values == sorted(values), figures
    if "p90_ms" in figures:
        assert figures["p50_ms"] <= figures["p90_ms"] <= figures["p99_ms"], figures


def phase_sane(phase: dict[str, Any]) -> None:
    for key in (
        "wall_s",
        "server_cpu_cores",
        "client_cpu_cores",
        "pg_cpu_cores",
        "redis_cpu_cores",
        "others_cpu_cores",
    ):
        assert number(phase[key]) and phase[key] >= 0, phase
    assert phase["wall_s"] > 0


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench") / "smoke.json"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--smoke", "--redis-url", REDIS_URL, "--out", str(out)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert out.with_suffix(".md").exists()
    return json.loads(out.read_text())


@pytest.mark.timeout(300)
def test_every_target_ran_every_scenario(report: dict[str, Any]) -> None:
    assert [(r["target"], r["processes"]) for r in report["results"]] == [("ours", 1), ("baseline", 1)]
    for result in report["results"]:
        assert {"connect", "broadcast", "direct", "fanout"} <= result.keys()
        assert result["server_alive_at_end"] is True
        assert result["commands"]
    assert report["machine"]["cpus"] >= 1
    assert report["command"].startswith(".venv/bin/python -m benchmarks.run")


@pytest.mark.timeout(300)
def test_connect_figures(report: dict[str, Any]) -> None:
    for result in report["results"]:
        c = result["connect"]
        assert c["opened"] == c["sessions"] == run.SIZES["smoke"]["connect"], c
        assert c["failed"] == 0 and c["first_failure"] == ""
        assert c["closed_during_hold"] == 0
        assert number(c["connects_per_s"]) and c["connects_per_s"] > 0
        assert c["rss_before_mib"] > 10 and c["rss_idle_mib"] > 10  # a Python server is at least that
        assert number(c["kib_per_session"]) and number(c["client_kib_per_session"])
        assert c["open_at_rss_read"] == c["opened"]
        phase_sane(c["connect_phase"])
        phase_sane(c["hold_phase"])


@pytest.mark.timeout(300)
def test_broadcast_reached_everyone(report: dict[str, Any]) -> None:
    for result in report["results"]:
        b = result["broadcast"]
        assert b["receivers"] == run.SIZES["smoke"]["connect"]
        assert b["expected"] == b["receivers"] * b["broadcasts"] == b["delivered"]
        assert b["lost"] == 0 and b["duplicates"] == 0 and b["send_errors"] == 0, b
        assert b["closed_during_run"] == 0 and b["senders_closed"] == 0 and b["close_codes"] == {}
        assert b["receivers_per_round"] == [b["receivers"]] * b["broadcasts"]
        assert b["lost_per_round"] == [0] * b["broadcasts"]
        assert len(b["last_receipt_ms"]) == b["broadcasts"]
        assert all(number(v) and v > 0 for v in b["last_receipt_ms"])
        latencies_sane(b)


@pytest.mark.timeout(300)
def test_direct_lost_nothing(report: dict[str, Any]) -> None:
    size = run.SIZES["smoke"]
    sends = size["pairs"] * round(size["pair_rate"] * size["duration"])
    for result in report["results"]:
        d = result["direct"]
        assert d["sent"] == sends
        assert d["expected"] == d["delivered"] == sends, d
        assert d["lost"] == 0 and d["duplicates"] == 0 and d["send_errors"] == 0, d
        assert d["closed_during_run"] == 0
        latencies_sane(d)
        phase_sane(d["phase"])
    ours = report["results"][0]["direct"]
    assert ours["stored"] == sends and ours["not_stored"] == 0  # every send answered `ok`


@pytest.mark.timeout(300)
def test_fanout_lost_nothing(report: dict[str, Any]) -> None:
    size = run.SIZES["smoke"]
    for result in report["results"]:
        points = result["fanout"]
        assert [p["rate"] for p in points] == size["rates"]
        for p in points:
            published = round(p["rate"] * size["sweep_duration"])
            assert p["sent"] == published
            assert p["expected"] == p["delivered"] == published * size["subscribers"], p
            assert p["lost"] == 0 and p["duplicates"] == 0 and p["send_errors"] == 0, p
            assert number(p["deliveries_per_s"]) and p["deliveries_per_s"] > 0
            latencies_sane(p)
            phase_sane(p["phase"])


@pytest.mark.timeout(300)
def test_ratios_are_computed(report: dict[str, Any]) -> None:
    [row] = report["ratios"]
    assert row["processes"] == 1
    for key in ("fanout_deliveries_per_s", "direct_p99_ms", "kib_per_session", "connects_per_s", "broadcast_last_ms"):
        ours, baseline, _ratio = row[key]
        assert number(ours) and number(baseline), (key, row[key])


def test_plot_draws_the_figure(report: dict[str, Any], tmp_path: Path) -> None:
    from benchmarks.plot import plot

    source = tmp_path / "r.json"
    source.write_text(json.dumps(report))
    out = plot(source, tmp_path / "figure.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_refuses_services_off_this_machine() -> None:
    with pytest.raises(SystemExit, match="loopback"):
        run.main(["--smoke", "--redis-url", "redis://10.1.2.3:6379/0"])


@pytest.mark.parametrize(
    "argv",
    [["--processes", "3"], ["--pairs", "0"], ["--rates", "0"], ["--scenarios", "nope"]],
)
def test_bad_arguments_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        run.parse_args(argv)
