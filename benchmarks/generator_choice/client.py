"""The Python candidate: N connections as benchmarks/loadgen.py makes them
(asyncio on uvloop, websockets, msgspec), parsing every frame and its body.
Prints its own CPU and RSS.   Usage: python client.py PORT N M
"""

import asyncio
import json
import resource
import sys
import time

import msgspec
import uvloop
import websockets
from websockets.asyncio.client import connect

decode = msgspec.json.Decoder().decode


def rss_kib() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def main(port: int, n: int, m: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    received = 0
    done = asyncio.Event()

    async def reader(ws) -> None:
        nonlocal received
        async for raw in ws:
            frame = decode(raw)
            if decode(frame["body"])["k"]:
                received += 1
                if received == n * m:
                    done.set()

    gate = asyncio.Semaphore(100)

    async def open_one():
        async with gate:
            ws = await connect(f"ws://127.0.0.1:{port}/", compression=None, ping_interval=None, max_queue=64)
            return ws, asyncio.create_task(reader(ws))

    rss0, t0 = rss_kib(), time.monotonic()
    opened = await asyncio.gather(*(open_one() for _ in range(n)), return_exceptions=True)
    t1, cpu1 = time.monotonic(), time.process_time()
    await asyncio.sleep(1.5)
    rss1 = rss_kib()
    await asyncio.wait_for(done.wait(), 300)
    cpu2 = time.process_time()
    print(
        json.dumps(
            {
                "client": f"python {sys.version.split()[0]} uvloop {uvloop.__version__} "
                f"websockets {websockets.__version__}",
                "sessions": n,
                "failed": sum(isinstance(o, BaseException) for o in opened),
                "connect_s": round(t1 - t0, 2),
                "cpu_connect_ms_per_session": round(cpu1 * 1000 / n, 3),
                "kib_per_session": round((rss1 - rss0) / n, 2),
                "received": received,
                "cpu_us_per_frame": round((cpu2 - cpu1) * 1e6 / received, 2),
            }
        )
    )


if __name__ == "__main__":
    uvloop.run(main(*map(int, sys.argv[1:4])))
