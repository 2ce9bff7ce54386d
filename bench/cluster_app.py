"""An engine of bench/cluster.py, in a process of its own, on a PostgreSQL database.

``cluster_app.py DSN`` starts an engine with two functions, prints ``ready <engine id>`` once
their replicas are up, then reads commands from stdin, one a line:

* ``map N``: starts N no-op executions of ``work`` (2 replicas of 256 slots) through this
  engine and waits for all their results, wherever they ran; prints ``done <seconds>``.
* ``hold N``: starts N executions of ``hold`` (2 replicas of 250 slots, two attempts each);
  prints ``submitted``. On an engine started with ``TRIGGERFISH_BENCH_ROLE=held`` they never
  finish (each sleeps a minute there): the bench kills that engine with them held, 500
  running and the rest queued; elsewhere each takes 1 ms.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import anyio

from triggerfish import Engine

sys.path.insert(0, os.path.dirname(__file__))
from common import wait_ready


def work(x: Any = None) -> None:
    return None


def hold(i: int) -> int:
    time.sleep(60 if os.environ.get("TRIGGERFISH_BENCH_ROLE") == "held" else 0.001)
    return i


async def main(dsn: str) -> None:
    engine = Engine(dsn, drain_timeout=1)
    engine.function(work, replicas=2, concurrency=256)
    # A lost attempt reruns at once (no backoff): the figure is the failover, not the policy.
    engine.function(hold, replicas=2, concurrency=250, max_attempts=2, backoff=0)
    async with engine:
        await wait_ready(engine, "work", 2)
        await wait_ready(engine, "hold", 2)
        print(f"ready {engine.engine_id}", flush=True)
        lines = anyio.wrap_file(sys.stdin)
        while line := (await lines.readline()).split():
            command, count = line[0], int(line[1])
            if command == "map":
                handle = engine.handle(work)
                start = time.perf_counter()
                for waiter in await handle.start_watched([()] * count):
                    await handle.result_of(waiter)
                print(f"done {time.perf_counter() - start}", flush=True)
            elif command == "hold":
                await engine.handle(hold).start_many(((i,), {}) for i in range(count))
                print("submitted", flush=True)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1])
