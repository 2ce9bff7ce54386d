"""The engines bench/cluster.py runs in processes of their own, on one PostgreSQL database.

``active DSN N``: starts N executions of ``work`` (2 replicas of 8 slots), prints
``submitted`` once they are stored, then idles until it is killed. Its replicas never finish
one (each sleeps a minute there: ``TRIGGERFISH_BENCH_ROLE=active``), so that at the kill 16
run and the rest wait.
``standby DSN``: waits as a standby; once active, prints ``active <time>``, waits until no
execution of ``work`` is unfinished, and prints ``done <time> <succeeded>`` (wall-clock
times, to be compared with the moment the bench killed the active engine).
"""

from __future__ import annotations

import os
import sys
import time

import anyio

from triggerfish import Engine, ExecutionStatus


def work(i: int) -> int:
    """1 ms, except on the active engine's replicas (see the module's docstring)."""
    time.sleep(60 if os.environ.get("TRIGGERFISH_BENCH_ROLE") == "active" else 0.001)
    return i


def build(dsn: str) -> Engine:
    engine = Engine(dsn, drain_timeout=1)
    engine.function(work, replicas=2, concurrency=8, max_attempts=2)  # a lost attempt reruns
    return engine


async def active(dsn: str, count: int) -> None:
    engine = build(dsn)
    async with engine:
        await engine.handle(work).start_many(((i,), {}) for i in range(count))
        print("submitted", flush=True)
        await anyio.sleep_forever()


async def standby(dsn: str) -> None:
    engine = build(dsn)
    async with engine:
        print(f"active {time.time()}", flush=True)
        handle = engine.handle(work)
        await handle.wait_for_completion(timeout=300)
        done = time.time()
        counts = await handle.statistics()
        print(f"done {done} {counts[ExecutionStatus.SUCCEEDED]}", flush=True)


if __name__ == "__main__":
    mode, dsn, *rest = sys.argv[1:]
    if mode == "active":
        anyio.run(active, dsn, int(rest[0]))
    else:
        anyio.run(standby, dsn)
