"""Latency against load, ours and the baseline, from one run's JSON (benchmarks/run.py).

    .venv/bin/python -m benchmarks.plot benchmarks/results/<stamp>.json [more.json ...] [--out FILE.png]

One line per target and server layout (of every run given, in order; a
layout of a later run replaces the same layout of an earlier one): the fan-out sweep's p50 (dashed) and
p99 (solid) latency against the deliveries per second offered (subscribers x
publishes per second); log scales. Needs matplotlib (pinned in requirements-dev.txt).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import ROOT  # noqa: E402

FIGURE = ROOT / "docs" / "figures" / "latency_vs_load.png"
COLOURS = {"ours": "tab:blue", "baseline": "tab:red"}


def plot(results_json: Path | list[Path], out: Path = FIGURE) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sources = results_json if isinstance(results_json, list) else [results_json]
    reports = [json.loads(Path(source).read_text()) for source in sources]
    layouts: dict[tuple[str, int], dict] = {}
    for report in reports:
        for result in report["results"]:
            if result.get("fanout"):
                layouts[(result["target"], result["processes"])] = result
    results = [layouts[key] for key in sorted(layouts)]
    dates = ", ".join(sorted({r["date"] for r in reports}))
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for result in results:
        points = [p for p in result.get("fanout", []) if p["p99_ms"] is not None]
        if not points:
            continue
        x = [p["offered_deliveries_per_s"] for p in points]
        label = f"{result['target']} ({result['processes']} proc)"
        style = {"color": COLOURS.get(result["target"], "grey"), "marker": "o" if result["processes"] == 1 else "s"}
        alpha = 1.0 if result["processes"] == 1 else 0.6
        ax.plot(x, [p["p99_ms"] for p in points], "-", label=f"{label} p99", alpha=alpha, **style)
        ax.plot(x, [p["p50_ms"] for p in points], "--", label=f"{label} p50", alpha=alpha, **style)
        for p in points:
            if p["lost"]:
                ax.annotate(f"lost {p['lost']}", (p["offered_deliveries_per_s"], p["p99_ms"]), fontsize=7)
    subs = sorted({p["subscribers"] for r in results for p in r.get("fanout", [])})
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.axhline(50, color="grey", linewidth=0.8, linestyle=":")
    ax.text(ax.get_xlim()[0], 52, " 50 ms target", fontsize=8, color="grey")
    ax.set_xlabel("offered deliveries/s (subscribers x publishes/s)")
    ax.set_ylabel("delivery latency, ms")
    ax.set_title(f"Fan-out latency vs load, {', '.join(map(str, subs))} subscribers ({dates})", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, nargs="+", help="benchmarks/results/<stamp>.json files")
    parser.add_argument("--out", type=Path, default=FIGURE)
    args = parser.parse_args(argv)
    print(plot(args.results, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
