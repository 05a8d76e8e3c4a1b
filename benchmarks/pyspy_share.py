"""Shares of a py-spy profile (`py-spy record --format raw`) spent in the acknowledgement path.

    .venv/bin/python -m benchmarks.pyspy_share benchmarks/results/<stamp>-acks-after.pyspy.txt

A sample counts for a part when its stack has one of the part's functions;
the parts overlap (the batcher's loop task includes the receipts it publishes).
"""

from __future__ import annotations

import collections
import sys

PARTS = {
    "cursor batch in the thread pool (cursor_requests)": ("cursor_requests",),
    "batcher task on the loop (Batcher._run, its receipts included)": ("Batcher._run",),
    "receipts published (receipts_publish)": ("receipts_publish",),
    # AckPipeline in the profiles of 21:00 UTC; RedisSessionStore._ack_many on a LoopBatcher since.
    "resume points to Redis (AckPipeline, _ack_many)": ("AckPipeline", "_ack_many"),
    "frame handlers (on_received, on_read, acks_flush)": ("on_received", "on_read", "acks_flush"),
    "the session's call (move_cursor; before the batch: the whole path)": ("move_cursor",),
}


def main(path: str) -> None:
    total = 0
    parts: collections.Counter[str] = collections.Counter()
    ack_path = 0
    for line in open(path, encoding="utf-8"):
        stack, _, count = line.rstrip("\n").rpartition(" ")
        n = int(count)
        total += n
        hit = False
        for part, names in PARTS.items():
            if any(name in stack for name in names):
                parts[part] += n
                hit = True
        ack_path += n if hit else 0
    print(f"samples: {total}")
    for part, n in parts.most_common():
        print(f"  {part}: {n} ({100 * n / total:.1f} %)")
    print(f"any of them (the acknowledgement path): {ack_path} ({100 * ack_path / total:.1f} %)")


if __name__ == "__main__":
    main(sys.argv[1])
