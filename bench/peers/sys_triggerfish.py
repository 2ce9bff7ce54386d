"""The workloads on triggerfish: a sqlite file store (WAL, durable as in normal use), two
process replicas (``replicas=2``), each with 256 slots (as in bench/throughput.py) so that
submission and results overlap
(the work still runs in 2 processes)."""

from __future__ import annotations

import json
import os
import pickle
import sqlite3
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

import anyio
from work import (
    cpu_seconds,
    descendants,
    emit,
    noop,
    percentile,
    sizes,
    spin,
    stamp,
    thread_cpu_seconds,
)

from triggerfish import Engine

SLOTS = 256


async def ready(engine: Engine, service: str) -> None:
    with anyio.fail_after(60):
        while engine.service_status(service).replicas < 2:  # noqa: ASYNC110
            await anyio.sleep(0.01)


async def tasks(size: dict[str, int], folder: Path) -> dict[str, object]:
    engine = Engine(folder / "tasks.db")
    engine.function(noop, replicas=2, concurrency=SLOTS)
    # CPU-bound, so one runs at a time per process; the second slot holds the next task,
    # as Celery's prefetch does, so a replica does not idle through each round trip.
    engine.function(spin, replicas=2, concurrency=2)
    out: dict[str, object] = {}
    async with engine:
        await ready(engine, "noop")
        await ready(engine, "spin")
        handle = engine.handle(noop)
        runs = []
        for run in range(size["runs"] + 1):  # the first is the warm-up
            begun = time.perf_counter()
            results = [r async for r in handle.map(range(size["noop"]))]
            took = time.perf_counter() - begun
            assert results == list(range(size["noop"]))
            if run:
                runs.append(size["noop"] / took)
        out["noop_tasks_per_s"] = statistics.median(runs)
        samples = []
        for i in range(size["roundtrips"] + 200):
            begun = time.perf_counter()
            assert await handle.call_remote(i) == i
            if i >= 200:
                samples.append((time.perf_counter() - begun) * 1000)
        out["roundtrip_p50_ms"] = percentile(samples, 50)
        out["roundtrip_p99_ms"] = percentile(samples, 99)
        spinner = engine.handle(spin)
        walls = []
        for run in range(size["runs"] + 1):
            begun = time.perf_counter()
            done = [r async for r in spinner.map([size["spin_n"]] * size["map"])]
            took = time.perf_counter() - begun
            assert len(done) == size["map"] and done[0] == spin(size["spin_n"])
            if run:
                walls.append(took)
        out["map_10k_wall_s"] = statistics.median(walls)
    return out


async def cron(size: dict[str, int], folder: Path) -> dict[str, object]:
    """``cron_jobs`` triggers due every second for ``cron_seconds``; lateness of each run is
    when its job's body began in a replica (the time it returns) against its scheduled
    second."""
    db = folder / "cron.db"
    engine = Engine(db)
    engine.function(stamp, replicas=2, concurrency=SLOTS)
    async with engine:
        await ready(engine, "stamp")
        for i in range(size["cron_jobs"]):
            await engine.triggers.create(
                {
                    "name": f"every-second-{i}",
                    "function": "stamp",
                    "cron": "* * * * * *",
                    "type": "cron",
                    "active": False,
                }
            )
        pids = [os.getpid(), *descendants(os.getpid())]
        first = int(time.time()) + 2
        for i in range(size["cron_jobs"]):
            await engine.triggers.activate(f"every-second-{i}")
        await anyio.sleep_until(anyio.current_time() + (first - time.time()))
        cpu_before, threads_before = cpu_seconds(pids), thread_cpu_seconds(os.getpid())
        await anyio.sleep(size["cron_seconds"])
        cpu_used = cpu_seconds(pids) - cpu_before
        loop_cpu, threads_cpu = (
            after - before
            for after, before in zip(thread_cpu_seconds(os.getpid()), threads_before, strict=True)
        )
        for i in range(size["cron_jobs"]):
            await engine.triggers.deactivate(f"every-second-{i}")
        await anyio.sleep(1)
    lateness, created_late, dispatched_late = [], [], []
    query = "SELECT event, created_at, started_at, result FROM executions WHERE status = ?"
    with sqlite3.connect(db) as connection:
        for event, created, started, result in connection.execute(query, ("SUCCEEDED",)):
            scheduled = datetime.fromisoformat(json.loads(event)["scheduled"]).timestamp()
            if first <= scheduled < first + size["cron_seconds"]:
                lateness.append((pickle.loads(result) - scheduled) * 1000)
                created_late.append((created - scheduled) * 1000)
                dispatched_late.append((started - scheduled) * 1000)
    expected = size["cron_jobs"] * size["cron_seconds"]
    return {
        "cron_lateness_p50_ms": percentile(lateness, 50),
        "cron_lateness_p99_ms": percentile(lateness, 99),
        # When the firing was created (stored and queued), and when the engine sent it to a
        # replica (RUNNING): the steps before the job's body began.
        "cron_created_lateness_p50_ms": percentile(created_late, 50),
        "cron_created_lateness_p99_ms": percentile(created_late, 99),
        "cron_dispatched_lateness_p50_ms": percentile(dispatched_late, 50),
        "cron_dispatched_lateness_p99_ms": percentile(dispatched_late, 99),
        "cron_cpu_s": round(cpu_used, 2),
        # Where that CPU went: the event loop, the other threads (the store's writer), and
        # the rest: the replicas, and any thread that ended in the window.
        "cron_cpu_loop_s": round(loop_cpu, 2),
        "cron_cpu_threads_s": round(threads_cpu, 2),
        "cron_cpu_replicas_s": round(cpu_used - loop_cpu - threads_cpu, 2),
        "cron_runs": len(lateness),
        "cron_runs_expected": expected,
    }


async def main() -> None:
    size = sizes()
    with tempfile.TemporaryDirectory() as folder:
        which = os.environ.get("PEERS_PART", "all")
        out: dict[str, object] = {"system": "triggerfish"}
        if which in ("all", "tasks"):
            out.update(await tasks(size, Path(folder)))
        if which in ("all", "cron"):
            out.update(await cron(size, Path(folder)))
    emit(out)


if __name__ == "__main__":
    anyio.run(main)
