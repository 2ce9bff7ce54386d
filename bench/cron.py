"""Cron benchmark of the triggerfish engine: lateness of 10,000 due triggers, and idle CPU.

Setup: an engine on a sqlite file (WAL, durable as in normal use) in a temporary directory, one
sync no-op function (``replicas=2``, ``concurrency=256``) and ``--triggers`` cron triggers on it
(default 10,000), every one firing every minute (``* * * * *``), created concurrently.

Measures (the bench waits for a minute boundary, so it takes up to ~90 s):

1. cron lateness: at the first minute boundary after the triggers exist, every trigger is due at
   once. The engine appends to ``cron_lateness`` one float per firing, the seconds between the
   fire time and the moment that firing's execution is created; the bench reads the entries of
   that boundary (waiting up to ``--settle`` seconds for all of them) and reports p50, p99 and
   max in ms, and how many fired (all of them should). Also: how long after the boundary every
   firing was committed (the triggers' ``fired`` statistics) and every execution had finished.
2. idle CPU: once every execution of that boundary has finished, ``time.process_time()`` of the
   engine process (this process: the event loop and the store's threads) over ``--idle``
   seconds (default 10) with nothing to do, in a window that holds no minute boundary, as
   percent of one core. The replicas' CPU over the same window is read from
   /proc/<pid>/stat of the engine's child processes and reported beside it.

Human-readable figures are printed as it goes; the last line of stdout is one JSON object:
{"cron_lateness_p99_ms": ..., "idle_cpu_percent": ..., ...}.

Run it with ``python bench/cron.py`` (``--quick`` for 1,000 triggers).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from common import percentile, wait_ready

from triggerfish import Engine, ExecutionStatus

CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def say(text: str) -> None:
    print(text, flush=True)


def noop(*args: Any, **kwargs: Any) -> None:
    """The function every cron trigger runs: does nothing."""
    return None


def children_cpu_s() -> float:
    """CPU seconds (user + system) used so far by this process's live child processes."""
    me = os.getpid()
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone since listed
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == me:
            total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICK


async def bench(args: argparse.Namespace, db: Path) -> dict[str, Any]:
    engine = Engine(db)
    engine.function(noop, replicas=2, concurrency=256)
    core = engine._core
    out: dict[str, Any] = {"triggers": args.triggers}
    async with engine:
        t0 = time.perf_counter()
        await wait_ready(engine, "noop", 2)
        say(f"2 replicas ready in {time.perf_counter() - t0:.2f}s")

        t0 = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for i in range(args.triggers):
                definition = {"name": f"c{i}", "function": "noop", "cron": "* * * * *"}
                tg.start_soon(engine.triggers.create, {**definition, "input": {}})
        out["trigger_create_s"] = round(time.perf_counter() - t0, 3)
        say(f"{args.triggers:,} cron triggers created in {out['trigger_create_s']:.2f}s")

        # -- part 1: lateness at the next minute boundary -------------------------------
        boundary = (int(time.time()) // 60 + 1) * 60
        say(f"waiting {boundary - time.time():.1f}s for the minute boundary")
        await anyio.sleep(max(0.0, boundary - time.time() - 1.0))
        before = len(core.cron_lateness)  # what fired earlier (creation crossing a boundary)
        fired_before = sum(t.stats.fired for t in engine.triggers.list())
        await anyio.sleep(max(0.0, boundary - time.time()))
        settle_by = boundary + args.settle
        # The engine has no "cron fired" event to wait on; the lateness deque is polled.
        while len(core.cron_lateness) - before < args.triggers and time.time() < settle_by:  # noqa: ASYNC110
            await anyio.sleep(0.05)
        lateness = sorted(x * 1000 for x in list(core.cron_lateness)[before:])
        seen_at = time.time() - boundary
        fired = len(lateness)
        out["fired"] = fired
        if lateness:
            out["cron_lateness_p50_ms"] = round(percentile(lateness, 50), 3)
            out["cron_lateness_p99_ms"] = round(percentile(lateness, 99), 3)
            out["cron_lateness_max_ms"] = round(lateness[-1], 3)
            out["cron_lateness_min_ms"] = round(lateness[0], 3)
        else:
            out["cron_lateness_p99_ms"] = None
        status = "all fired" if fired == args.triggers else f"ONLY {fired} OF {args.triggers} FIRED"
        say(f"  {fired:,} firings at the boundary ({status}; seen {seen_at:.2f}s after it)")
        if lateness:
            say(
                f"  lateness p50 {out['cron_lateness_p50_ms']:.1f} ms, "
                f"p99 {out['cron_lateness_p99_ms']:.1f} ms, max {out['cron_lateness_max_ms']:.1f}"
                f" ms (min {out['cron_lateness_min_ms']:.1f} ms)"
            )
        await engine.handle(noop).wait_for_completion(timeout=120)
        out["all_finished_after_s"] = round(time.time() - boundary, 3)
        await core.store.flush()
        committed = sum(t.stats.fired for t in engine.triggers.list()) - fired_before
        counts = await engine.handle(noop).statistics()
        succeeded = counts[ExecutionStatus.SUCCEEDED]
        others = {s.value: c for s, c in counts.items() if c and s is not ExecutionStatus.SUCCEEDED}
        out["fired_committed"] = committed
        out["fired_before_boundary"] = fired_before
        out["executions_succeeded"] = succeeded
        earlier = (
            f" ({fired_before:,} of them fired at an earlier boundary the trigger creation crossed)"
            if fired_before
            else ""
        )
        say(
            f"  every execution finished {out['all_finished_after_s']:.2f}s after the boundary; "
            f"triggers' fired stats grew by {committed:,}; executions: {succeeded:,} SUCCEEDED"
            f"{earlier}, others: {others or 'none'}"
        )
        if committed != fired or succeeded != fired_before + committed:
            say("  INCONSISTENT: firings, fired statistics and executions do not add up")

        # -- part 2: idle CPU between boundaries ----------------------------------------
        await anyio.sleep(1.0)  # let the last commits and replica replies settle
        room = boundary + 60 - time.time() - 1.0
        if room < args.idle:
            say(f"  only {room:.1f}s before the next boundary: idle window shortened")
        window = max(1.0, min(args.idle, room))
        say(f"idle CPU: {window:.1f}s with nothing due")
        wall0, cpu0, kids0 = time.perf_counter(), time.process_time(), children_cpu_s()
        await anyio.sleep(window)
        wall = time.perf_counter() - wall0
        cpu, kids = time.process_time() - cpu0, children_cpu_s() - kids0
        out["idle_cpu_percent"] = round(100 * cpu / wall, 3)
        out["idle_replicas_cpu_percent"] = round(100 * kids / wall, 3)
        out["idle_window_s"] = round(wall, 2)
        out["idle_during_window_fired"] = len(core.cron_lateness) - before - fired
        say(
            f"  engine process {out['idle_cpu_percent']:.2f}% of a core "
            f"({cpu * 1000:.0f} ms CPU in {wall:.1f}s); its 2 replicas together "
            f"{out['idle_replicas_cpu_percent']:.2f}% (resolution {1000 / CLOCK_TICK:.0f} ms)"
        )
    return out


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--triggers", type=int, default=None, help="cron triggers (10000)")
    parser.add_argument("--idle", type=float, default=10.0, help="idle window, seconds (10)")
    parser.add_argument(
        "--settle", type=float, default=15.0, help="seconds after the boundary to wait (15)"
    )
    parser.add_argument("--quick", action="store_true", help="1,000 triggers")
    args = parser.parse_args()
    if args.triggers is None:
        args.triggers = 1000 if args.quick else 10_000
    return args


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="triggerfish-bench-cron-") as tmp:
        result = anyio.run(bench, args, Path(tmp) / "cron.db")
    summary = {
        "cron_lateness_p99_ms": result.pop("cron_lateness_p99_ms"),
        "idle_cpu_percent": result.pop("idle_cpu_percent"),
        **result,
    }
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
