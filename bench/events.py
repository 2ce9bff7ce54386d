"""Event-trigger benchmark of the triggerfish engine: matching rate and emit-to-RUNNING latency.

Setup: an engine on a sqlite file (WAL, durable as in normal use) in a temporary directory, one
async no-op function (``replicas=2``, ``concurrency=1024``) and 1,000 event triggers on it,
spread over 20 resource kinds (``Kind0``..``Kind19``) and three actions (``Created`` in Once
mode, ``Updated`` and the app-named ``Processed`` in Always mode), each with a filter of a
realistic shape on a directory of its own (``{"dir": "/in/k3/d7"}``, with ``size``, mimetype
wildcard or ``$and`` conditions for some). Every event matches exactly one trigger; events
rotate over all of them, and each carries a unique resource id (Once keys never repeat).

Measures (under two minutes with the defaults):

1. events/s: ``--events`` events (default 50,000, after a warm-up of 2,000) emitted with
   ``--inflight`` ``engine.emit`` calls in flight (default 512; emit returns once the group
   commit holding the executions it created is done), timed from the first emit to the last
   emit returning. Executions created/s counts the ids the emits returned. Whether the 2
   replicas keep up is reported beside it (queue length when emitting ends, time to drain),
   but is not what is measured.
2. emit-to-RUNNING latency: events paced at ``--rate`` events/s (default 1,000) for
   ``--seconds`` (default 10), each sent at its scheduled time (``anyio.sleep_until``, no
   drift), on an engine whose queue is empty. For each, the wall-clock time just before
   ``emit`` is compared with the time of the first RUNNING entry of its execution's
   ``status_log``. p50, p99 and max in ms; also the emit round trip and how late the sends
   were against their schedule (so an overloaded event loop shows).

Human-readable figures are printed as it goes; the last line of stdout is one JSON object:
{"events_per_s": ..., "emit_to_running_p99_ms": ..., ...}.

Run it with ``python bench/events.py`` (``--quick`` for a smoke test with smaller numbers).
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from common import percentile, wait_ready

from triggerfish import Engine, ExecutionStatus

KINDS = 20
ACTIONS = ("Created", "Updated", "Processed")


def say(text: str) -> None:
    print(text, flush=True)


async def noop(*args: Any, **kwargs: Any) -> None:
    """The function every trigger runs: does nothing (async, so no thread per slot)."""
    return None


def trigger_definition(i: int) -> dict[str, Any]:
    """Trigger ``i``: kind i % 20; action, mode and filter shape vary with i // 20."""
    kind, slot = i % KINDS, i // KINDS
    action = ACTIONS[slot % len(ACTIONS)]
    where = {"dir": f"/in/k{kind}/d{slot}"}
    shape = slot % 4
    if shape == 0:
        flt: dict[str, Any] = where
    elif shape == 1:
        flt = {**where, "size": {"$gt": 10}}
    elif shape == 2:
        flt = {**where, "metadata.system.mimetype": "image/*"}
    else:
        flt = {"$and": [where, {"hidden": False}, {"labels": {"$in": ["cat", "dog"]}}]}
    return {
        "name": f"t{i}",
        "function": "noop",
        "resource": f"Kind{kind}",
        "actions": [action],
        "filter": flt,
        "executionMode": "Once" if action == "Created" else "Always",
    }


def event_for(i: int, triggers: int, tag: str) -> tuple[str, str, dict[str, Any]]:
    """Event number ``i`` of a run: it matches trigger i % triggers, and only that one."""
    t = i % triggers
    kind, slot = t % KINDS, t // KINDS
    body = {
        "id": f"{tag}-{i}",
        "dir": f"/in/k{kind}/d{slot}",
        "size": 100 + i % 1000,
        "hidden": False,
        "labels": ["cat"],
        "metadata": {"system": {"mimetype": "image/png"}},
    }
    return f"Kind{kind}", ACTIONS[slot % len(ACTIONS)], body


async def emit_many(
    engine: Engine, n: int, inflight: int, triggers: int, tag: str
) -> tuple[float, int, int]:
    """``n`` events, ``inflight`` at a time; (seconds, executions created, emits != 1 id)."""
    counter = itertools.count()
    created = 0
    odd = 0

    async def worker() -> None:
        nonlocal created, odd
        while (i := next(counter)) < n:
            ids = await engine.emit(*event_for(i, triggers, tag))
            created += len(ids)
            odd += len(ids) != 1

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(min(inflight, n)):
            tg.start_soon(worker)
    return time.perf_counter() - start, created, odd


async def drain(engine: Engine, timeout: float) -> float:
    start = time.perf_counter()
    await engine.handle(noop).wait_for_completion(timeout=timeout)
    return time.perf_counter() - start


async def bench(args: argparse.Namespace, db: Path) -> dict[str, Any]:
    engine = Engine(db)
    engine.function(noop, replicas=2, concurrency=1024)
    out: dict[str, Any] = {"triggers": args.triggers, "kinds": KINDS}
    async with engine:
        t0 = time.perf_counter()
        await wait_ready(engine, "noop", 2)
        say(f"2 replicas ready in {time.perf_counter() - t0:.2f}s")

        t0 = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for i in range(args.triggers):
                tg.start_soon(engine.triggers.create, trigger_definition(i))
        out["trigger_create_s"] = round(time.perf_counter() - t0, 3)
        say(
            f"{len(engine.triggers.list())} triggers over {KINDS} kinds and {len(ACTIONS)} "
            f"actions created in {out['trigger_create_s']:.2f}s (concurrently)"
        )

        # -- part 1: matching rate ------------------------------------------------------
        say(f"warm-up: {args.warmup} events")
        await emit_many(engine, args.warmup, args.inflight, args.triggers, "w")
        await drain(engine, 120)
        say(f"events/s: {args.events:,} events, {args.inflight} emits in flight")
        elapsed, created, odd = await emit_many(
            engine, args.events, args.inflight, args.triggers, "m"
        )
        queued = engine.service_status("noop").queued
        out["events_per_s"] = round(args.events / elapsed, 1)
        out["executions_per_s"] = round(created / elapsed, 1)
        out["events"] = args.events
        out["executions_created"] = created
        say(
            f"  {args.events:,} events in {elapsed:.3f}s: {out['events_per_s']:,.0f} events/s, "
            f"{created:,} executions created ({out['executions_per_s']:,.0f}/s)"
            + (f"; {odd} emits did not return exactly 1 id" if odd else "; 1 per event")
        )
        drain_s = await drain(engine, 300)
        out["queued_when_emits_done"] = queued
        out["drain_after_emits_s"] = round(drain_s, 3)
        keep_up = "yes" if queued < args.events * 0.05 else "no"
        say(
            f"  replicas keep up? {keep_up}: {queued:,} still queued when the emits ended, "
            f"all finished {drain_s:.2f}s later"
        )
        counts = await engine.handle(noop).statistics()
        expected = args.warmup + args.events
        succeeded = counts[ExecutionStatus.SUCCEEDED]
        others = {s.value: c for s, c in counts.items() if c and s is not ExecutionStatus.SUCCEEDED}
        say(f"  store check: {succeeded:,} SUCCEEDED (expected {expected:,}), others: {others}")
        out["store_consistent"] = succeeded == expected and not others

        # -- part 2: emit-to-RUNNING latency at a paced rate ----------------------------
        n = int(args.rate * args.seconds)
        say(f"latency: {n:,} events paced at {args.rate:,.0f}/s for {args.seconds:g}s")
        sent: list[tuple[float, float, float, list[str]]] = []  # (wall, lag, round trip, ids)

        async def paced(i: int, scheduled: float) -> None:
            event = event_for(i, args.triggers, "p")
            lag = anyio.current_time() - scheduled
            wall = time.time()
            start = time.perf_counter()
            ids = await engine.emit(*event)
            sent.append((wall, lag, time.perf_counter() - start, ids))

        first = anyio.current_time() + 0.05
        async with anyio.create_task_group() as tg:
            for i in range(n):
                scheduled = first + i / args.rate
                await anyio.sleep_until(scheduled)
                tg.start_soon(paced, i, scheduled)
        achieved = n / (anyio.current_time() - first)
        await drain(engine, 120)
        latencies = []
        missing = 0
        for wall, _, _, ids in sent:
            for execution_id in ids:
                execution = await engine.get(execution_id)
                running = [
                    c.time for c in execution.status_log if c.status is ExecutionStatus.RUNNING
                ]
                if running:
                    latencies.append((running[0].timestamp() - wall) * 1000)
                else:
                    missing += 1
        latencies.sort()
        lags = sorted(s[1] * 1000 for s in sent)
        trips = sorted(s[2] * 1000 for s in sent)
        out["emit_to_running_p50_ms"] = round(percentile(latencies, 50), 3)
        out["emit_to_running_p99_ms"] = round(percentile(latencies, 99), 3)
        out["emit_to_running_max_ms"] = round(latencies[-1], 3)
        out["emit_return_p50_ms"] = round(percentile(trips, 50), 3)
        out["emit_return_p99_ms"] = round(percentile(trips, 99), 3)
        out["send_lag_p99_ms"] = round(percentile(lags, 99), 3)
        out["send_lag_max_ms"] = round(lags[-1], 3)
        out["paced_rate"] = round(achieved, 1)
        say(
            f"  {len(latencies):,} executions (rate achieved {achieved:,.0f}/s"
            + (f", {missing} never RUNNING" if missing else "")
            + f"): emit to RUNNING p50 {out['emit_to_running_p50_ms']:.2f} ms, "
            f"p99 {out['emit_to_running_p99_ms']:.2f} ms, "
            f"max {out['emit_to_running_max_ms']:.2f} ms"
        )
        say(
            f"  emit round trip p50 {out['emit_return_p50_ms']:.2f} ms, "
            f"p99 {out['emit_return_p99_ms']:.2f} ms; sends late against schedule: "
            f"p99 {out['send_lag_p99_ms']:.2f} ms, max {out['send_lag_max_ms']:.2f} ms"
        )
    return out


FULL = {"triggers": 1000, "warmup": 2000, "events": 50_000, "rate": 1000.0, "seconds": 10.0}
QUICK = {"triggers": 1000, "warmup": 500, "events": 5000, "rate": 1000.0, "seconds": 2.0}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=None, help="events in part 1 (50000)")
    parser.add_argument("--inflight", type=int, default=512, help="emits in flight (512)")
    parser.add_argument("--rate", type=float, default=None, help="paced events/s (1000)")
    parser.add_argument("--seconds", type=float, default=None, help="paced duration (10)")
    parser.add_argument("--quick", action="store_true", help="smaller numbers, for a smoke test")
    args = parser.parse_args()
    preset = QUICK if args.quick else FULL
    for key, value in preset.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    return args


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="triggerfish-bench-events-") as tmp:
        result = anyio.run(bench, args, Path(tmp) / "events.db")
    summary = {
        "events_per_s": result.pop("events_per_s"),
        "emit_to_running_p99_ms": result.pop("emit_to_running_p99_ms"),
        **result,
    }
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
