"""Throughput, latency and memory benchmark of the triggerfish engine.

Measures, in one run (under a minute with the defaults):

1. executions/s: ``--n`` no-op executions (default 20000) through 2 warm process replicas
   (``replicas=2``), timed from the start of submission until every final status is committed
   (``result_of`` returns only then). The store is a sqlite file (WAL, durable as in normal use)
   in a temporary directory. After a warm-up of 1000 executions, the median of 3 runs.
2. call_remote latency: p50 and p99, in ms, of single sequential ``call_remote`` round trips on
   a warm replica (2000 calls after a warm-up of 200).
3. engine RSS with 100,000 executions queued: a fresh engine (its own sqlite file) with a
   function whose one replica cannot keep up (it sleeps, ``concurrency=1``), so nearly all of
   them stay queued. Its RSS baseline (engine running, replica ready) and its peak RSS (VmHWM)
   and current RSS right after submission are read from /proc/self/status of the engine
   process (not its replicas). This part runs in a child Python process, so that the peak is
   not the one left behind by parts 1 and 2.

Human-readable figures are printed as it goes; the last line of stdout is one JSON object:
{"executions_per_s": ..., "call_remote_p50_ms": ..., "call_remote_p99_ms": ...,
"rss_mb_100k_queued": ..., ...}.

Run it with ``python bench/throughput.py`` (``--n 50000`` for more executions per run,
``--quick`` for a smoke test with smaller numbers).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from common import percentile, wait_ready

from triggerfish import Engine, ExecutionStatus

RSS_CHILD_FLAG = "--rss-child"


def say(text: str) -> None:
    print(text, flush=True)


def proc_status_mb(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS, VmHWM...) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} is not in /proc/self/status")


# -- parts 1 and 2: throughput and call_remote latency --------------------------------------


async def throughput_and_latency(args: argparse.Namespace, db: Path) -> dict[str, Any]:
    engine = Engine(db)

    @engine.function(replicas=2, concurrency=256)
    def noop(x: Any = None) -> None:
        return None

    out: dict[str, Any] = {}
    async with engine:
        h = engine.handle(noop)
        t0 = time.perf_counter()
        await wait_ready(engine, "noop", 2)
        say(f"2 replicas ready in {time.perf_counter() - t0:.2f}s")

        async def batch(n: int) -> float:
            start = time.perf_counter()
            waiters = await h.start_watched([()] * n)
            submitted = time.perf_counter()
            for waiter in waiters:
                await h.result_of(waiter)
            elapsed = time.perf_counter() - start
            say(
                f"  {n} executions in {elapsed:.3f}s (submit {submitted - start:.3f}s): "
                f"{n / elapsed:,.0f} executions/s"
            )
            return n / elapsed

        say(f"warm-up: {args.warmup} executions")
        await batch(args.warmup)
        say(f"throughput: {args.runs} runs of {args.n} no-op executions, 2 replicas")
        rates = [await batch(args.n) for _ in range(args.runs)]
        out["executions_per_s"] = round(statistics.median(rates), 1)
        out["executions_per_s_runs"] = [round(r, 1) for r in rates]
        say(f"executions/s (median of {args.runs}): {out['executions_per_s']:,.0f}")

        counts = await h.statistics()
        expected = args.warmup + args.runs * args.n
        succeeded = counts[ExecutionStatus.SUCCEEDED]
        others = {s.value: c for s, c in counts.items() if c and s is not ExecutionStatus.SUCCEEDED}
        say(f"store check: {succeeded} SUCCEEDED (expected {expected}), others: {others or 'none'}")
        out["store_consistent"] = succeeded == expected and not others

        say(f"call_remote: warm-up {args.lat_warmup}, then {args.lat_calls} sequential calls")
        for _ in range(args.lat_warmup):
            await h.call_remote()
        samples = []
        for _ in range(args.lat_calls):
            start = time.perf_counter()
            await h.call_remote()
            samples.append((time.perf_counter() - start) * 1000)
        samples.sort()
        out["call_remote_p50_ms"] = round(percentile(samples, 50), 3)
        out["call_remote_p99_ms"] = round(percentile(samples, 99), 3)
        out["call_remote_max_ms"] = round(samples[-1], 3)
        say(
            f"call_remote latency: p50 {out['call_remote_p50_ms']:.3f} ms, "
            f"p99 {out['call_remote_p99_ms']:.3f} ms, max {out['call_remote_max_ms']:.3f} ms"
        )
    return out


# -- part 3: engine RSS with many executions queued (in a child process) -------------------


async def rss_queued(queued: int, db: Path) -> dict[str, Any]:
    engine = Engine(db, drain_timeout=0.5, kill_grace=0.5)

    @engine.function(replicas=1, concurrency=1)
    def sleepy(x: Any = None) -> None:
        time.sleep(30)

    out: dict[str, Any] = {}
    async with engine:
        h = engine.handle(sleepy)
        await wait_ready(engine, "sleepy", 1)
        out["rss_mb_baseline"] = round(proc_status_mb("VmRSS"), 1)
        out["rss_mb_baseline_peak"] = round(proc_status_mb("VmHWM"), 1)
        start = time.perf_counter()
        await h.start_many([((), {})] * queued)
        out["submit_s"] = round(time.perf_counter() - start, 3)
        out["rss_mb_queued_peak"] = round(proc_status_mb("VmHWM"), 1)
        out["rss_mb_queued_now"] = round(proc_status_mb("VmRSS"), 1)
        out["queued_now"] = engine.service_status("sleepy").queued
    return out


def run_rss_child(queued: int) -> dict[str, Any]:
    """Part 3 in a fresh interpreter, so that its VmHWM is its own."""
    with tempfile.TemporaryDirectory(prefix="triggerfish-bench-rss-") as tmp:
        proc = subprocess.run(
            [sys.executable, __file__, RSS_CHILD_FLAG, str(queued), str(Path(tmp) / "rss.db")],
            stdout=subprocess.PIPE,
            text=True,
            check=True,
        )
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


# -- main -----------------------------------------------------------------------------------


FULL = {
    "default_n": 20_000,
    "warmup": 1000,
    "runs": 3,
    "lat_warmup": 200,
    "lat_calls": 2000,
    "queued": 100_000,
}
QUICK = {
    "default_n": 2000,
    "warmup": 200,
    "runs": 3,
    "lat_warmup": 20,
    "lat_calls": 200,
    "queued": 10_000,
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=None, help="executions per run (default 20000)")
    parser.add_argument("--quick", action="store_true", help="smaller numbers, for a smoke test")
    parser.add_argument(RSS_CHILD_FLAG, nargs=2, metavar=("QUEUED", "DB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    preset = QUICK if args.quick else FULL
    for key, value in preset.items():
        setattr(args, key, value)
    args.n = args.n or preset["default_n"]
    return args


def main() -> None:
    args = parse_args()
    if args.rss_child is not None:
        queued, db = int(args.rss_child[0]), Path(args.rss_child[1])
        print(json.dumps(anyio.run(rss_queued, queued, db)), flush=True)
        return

    with tempfile.TemporaryDirectory(prefix="triggerfish-bench-") as tmp:
        result = anyio.run(throughput_and_latency, args, Path(tmp) / "bench.db")

    say(f"engine RSS: {args.queued:,} executions of a sleeping function (1 replica, 1 slot)")
    rss = run_rss_child(args.queued)
    say(
        f"  baseline {rss['rss_mb_baseline']:.1f} MB (peak so far {rss['rss_mb_baseline_peak']:.1f}"
        f" MB); after submitting {args.queued:,} in {rss['submit_s']:.2f}s: peak "
        f"{rss['rss_mb_queued_peak']:.1f} MB, now {rss['rss_mb_queued_now']:.1f} MB, "
        f"growth {rss['rss_mb_queued_peak'] - rss['rss_mb_baseline']:.1f} MB "
        f"({rss['queued_now']:,} still queued)"
    )
    summary = {
        "executions_per_s": result.pop("executions_per_s"),
        "call_remote_p50_ms": result.pop("call_remote_p50_ms"),
        "call_remote_p99_ms": result.pop("call_remote_p99_ms"),
        "rss_mb_100k_queued": rss["rss_mb_queued_peak"],
        "rss_mb_baseline": rss["rss_mb_baseline"],
        "rss_mb_queued_now": rss["rss_mb_queued_now"],
        "rss_queued": args.queued,
        "n": args.n,
        "runs": args.runs,
        **result,
    }
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
