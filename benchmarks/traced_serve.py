"""`manage.py serve` under tracemalloc, for benchmarks/idle_memory.py --trace.

    python benchmarks/traced_serve.py OUT_DIR [serve arguments]

Run from the checkout to serve (its directory is the working directory).
Each SIGUSR1 writes OUT_DIR/snap<k>.tm (a tracemalloc snapshot, one frame)
and then OUT_DIR/snap<k>.done.
"""

import os
import signal
import sys
import tracemalloc
from pathlib import Path

out = Path(sys.argv[1])
taken = 0


def dump(*_: object) -> None:
    global taken
    taken += 1
    tracemalloc.take_snapshot().dump(str(out / f"snap{taken}.tm"))
    (out / f"snap{taken}.done").touch()


tracemalloc.start(1)
signal.signal(signal.SIGUSR1, dump)
sys.path.insert(0, os.getcwd())
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
from django.core.management import execute_from_command_line  # noqa: E402

execute_from_command_line(["manage.py", "serve", *sys.argv[2:]])
