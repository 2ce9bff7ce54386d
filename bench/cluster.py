"""Engines on PostgreSQL, measured in one run: one engine beside the sqlite file, two engines
beside one, and failover when one of two is killed.

1. executions/s and call_remote latency of one engine on each store (bench/throughput.py's
   parts 1 and 2: no-op executions through 2 warm process replicas, then sequential
   ``call_remote`` round trips), on a new sqlite file and a new database in turns, so that a
   machine's drift weighs on both alike;
2. executions/s of one engine and of two engines on one database, each an engine process
   of its own (bench/cluster_app.py): a map of ``--n`` no-op executions started through the
   first engine, timed there until it has every result, wherever it ran; one and two in
   turns;
3. failover: an engine holding ``--failover`` executions (default 1,000: 500 running, 500
   queued; its replicas never finish one) is killed with kill -9 beside a second engine; the
   seconds from the kill until the second has adopted them (none is left to the killed
   engine) and until it has finished them all. The lease is the default (10 s): the second
   engine looks for engines that are gone every third of it.

Starts its own throwaway PostgreSQL server (``scripts/postgres-up.sh``: Debian's postgresql,
a cluster in a temporary folder, stopped afterwards), or uses ``--dsn``. The figures are
medians over rounds. The server is a local one with ``fsync=off`` (a throwaway cluster): a
production server fsyncs each commit, which sqlite's ``synchronous=NORMAL`` does not; a group
commit pays it once for hundreds of rows. On this machine two engines share two cores with
their replicas and the server: more engines scale with more machines, not here.

Human-readable figures are printed as it goes; the last line of stdout is one JSON object:
{"sqlite_executions_per_s": ..., "postgres_executions_per_s": ..., "postgres_vs_sqlite": ...,
"one_engine_executions_per_s": ..., "two_engines_executions_per_s": ..., ...}. Run it with
``python bench/cluster.py`` (``--quick`` for a smoke test).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import asyncpg
from throughput import say, throughput_and_latency

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests import postgres  # noqa: E402  (the tests' throwaway server, shared)

APP = Path(__file__).with_name("cluster_app.py")


class EngineProcess:
    """An engine of bench/cluster_app.py in a process of its own, driven through its stdin."""

    def __init__(self, dsn: str, role: str = "") -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TRIGGERFISH_BENCH_ROLE": role}
        self.process = subprocess.Popen(
            [sys.executable, str(APP), dsn],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        self.engine_id = self._answer("ready").split()[1]

    def _answer(self, expected: str) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line.startswith(expected), f"the engine said {line!r}, not {expected!r}"
        return line

    def ask(self, command: str, expected: str) -> str:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._answer(expected)

    def stop(self) -> None:
        """Its stdin closed, it stops as it should; killed if it does not within a minute."""
        if self.process.poll() is None and self.process.stdin is not None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process.wait(timeout=10)


def cluster_throughput(admin: str, engines: int, args: argparse.Namespace) -> float:
    """Executions/s of a map through the first of ``engines`` engines on a new database."""
    dsn = postgres.new_database(admin, "cluster")
    running = [EngineProcess(dsn) for _ in range(engines)]
    try:
        first = running[0]
        first.ask(f"map {args.warmup}", "done")
        rates = []
        for _ in range(args.runs):
            seconds = float(first.ask(f"map {args.n}", "done").split()[1])
            rates.append(args.n / seconds)
            say(f"  {engines} engine(s): {args.n} executions in {seconds:.3f}s: {rates[-1]:,.0f}/s")
        return statistics.median(rates)
    finally:
        for engine in running:
            engine.stop()


async def _watch_failover(
    dsn: str, killed: str, count: int, deadline: float
) -> tuple[float, float]:
    """The wall-clock times at which no unfinished execution was left to the killed engine,
    and at which all ``count`` had succeeded."""
    connection = await asyncpg.connect(dsn)
    adopted = 0.0
    try:
        while time.time() < deadline:
            if not adopted and not await connection.fetchval(
                "SELECT count(*) FROM executions WHERE engine_id = $1 AND status IN "
                "('PENDING', 'RUNNING')",
                killed,
            ):
                adopted = time.time()
            done = await connection.fetchval(
                "SELECT count(*) FROM executions WHERE status = 'SUCCEEDED'"
            )
            if done == count:
                return adopted or time.time(), time.time()
            await anyio.sleep(0.01)
    finally:
        await connection.close()
    raise TimeoutError("the executions of the killed engine were not all finished")


async def _unfinished(dsn: str, status: str) -> int:
    connection = await asyncpg.connect(dsn)
    try:
        return int(
            await connection.fetchval("SELECT count(*) FROM executions WHERE status = $1", status)
        )
    finally:
        await connection.close()


def failover(admin: str, count: int) -> dict[str, Any]:
    """An engine holding ``count`` executions (half running, half queued) is killed with
    kill -9 beside a second one; how long until the second adopted them all, and until it
    finished them all."""
    dsn = postgres.new_database(admin, "failover")
    held = EngineProcess(dsn, role="held")
    other: EngineProcess | None = None
    try:
        other = EngineProcess(dsn)
        held.ask(f"hold {count}", "submitted")
        deadline = time.monotonic() + 120
        while anyio.run(_unfinished, dsn, "RUNNING") < min(count, 500):  # stored lazily
            assert time.monotonic() < deadline, "the held engine never ran them"
            time.sleep(0.05)
        running = anyio.run(_unfinished, dsn, "RUNNING")
        pending = anyio.run(_unfinished, dsn, "PENDING")
        killed_at = time.time()
        held.process.kill()
        adopted_at, done_at = anyio.run(
            _watch_failover, dsn, held.engine_id, count, killed_at + 300
        )
    finally:
        held.process.kill()
        held.process.wait(timeout=10)
        if other is not None:
            other.stop()
    return {
        "failover_executions": count,
        "failover_running_at_kill": running,
        "failover_pending_at_kill": pending,
        "failover_adopted_after_s": round(adopted_at - killed_at, 3),
        "failover_finished_after_s": round(done_at - killed_at, 3),
        "failover_lease_s": 10.0,
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="executions per throughput run")
    parser.add_argument("--runs", type=int, default=3, help="throughput runs per store a round")
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--lat-calls", type=int, default=2000)
    parser.add_argument("--lat-warmup", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2, help="sqlite/PostgreSQL turns")
    parser.add_argument("--failover", type=int, default=1000, help="executions at the kill")
    parser.add_argument("--dsn", help="a server of your own (its admin database's URL)")
    parser.add_argument("--quick", action="store_true", help="small numbers, a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.n, args.runs, args.warmup, args.lat_calls, args.lat_warmup = 2000, 1, 200, 200, 20
        args.rounds, args.failover = 1, 200
    return args


def main() -> None:
    args = parse_args()
    figures: dict[str, list[dict[str, Any]]] = {"sqlite": [], "postgres": []}
    engines: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as folder:
        admin, why = (args.dsn, None) if args.dsn else postgres.server()
        if admin is None:
            sys.exit(f"cluster bench: {why}")
        # (the server the bench started stops as it exits)
        for round_number in range(1, args.rounds + 1):
            for kind in ("sqlite", "postgres"):
                say(f"-- round {round_number}: one engine on {kind}")
                target: Any = (
                    Path(folder) / f"r{round_number}.db"
                    if kind == "sqlite"
                    else postgres.new_database(admin, "bench")
                )
                figures[kind].append(anyio.run(throughput_and_latency, args, target))
            for count in (1, 2):
                say(f"-- round {round_number}: {count} engine process(es) on PostgreSQL")
                engines[count].append(cluster_throughput(admin, count, args))
        say(f"-- failover: kill -9 of an engine holding {args.failover} executions")
        took = failover(admin, args.failover)
        say(
            f"  {took['failover_running_at_kill']} running and {took['failover_pending_at_kill']}"
            f" pending at the kill; adopted by the other engine after "
            f"{took['failover_adopted_after_s']}s, all finished after "
            f"{took['failover_finished_after_s']}s (lease {took['failover_lease_s']}s)"
        )
    out: dict[str, Any] = {"rounds": args.rounds, "n": args.n, **took}
    for kind, runs in figures.items():
        for figure in ("executions_per_s", "call_remote_p50_ms", "call_remote_p99_ms"):
            out[f"{kind}_{figure}"] = round(statistics.median(r[figure] for r in runs), 3)
        out[f"{kind}_store_consistent"] = all(r["store_consistent"] for r in runs)
    out["postgres_vs_sqlite"] = round(
        out["postgres_executions_per_s"] / out["sqlite_executions_per_s"], 2
    )
    out["one_engine_executions_per_s"] = round(statistics.median(engines[1]), 1)
    out["two_engines_executions_per_s"] = round(statistics.median(engines[2]), 1)
    out["two_vs_one_engine"] = round(
        out["two_engines_executions_per_s"] / out["one_engine_executions_per_s"], 2
    )
    say(
        f"executions/s: sqlite {out['sqlite_executions_per_s']:,.0f}, PostgreSQL "
        f"{out['postgres_executions_per_s']:,.0f} ({out['postgres_vs_sqlite']}x); call_remote "
        f"p50 {out['sqlite_call_remote_p50_ms']} vs {out['postgres_call_remote_p50_ms']} ms, "
        f"p99 {out['sqlite_call_remote_p99_ms']} vs {out['postgres_call_remote_p99_ms']} ms; "
        f"engine processes on PostgreSQL: one {out['one_engine_executions_per_s']:,.0f}/s, two "
        f"{out['two_engines_executions_per_s']:,.0f}/s ({out['two_vs_one_engine']}x)"
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
