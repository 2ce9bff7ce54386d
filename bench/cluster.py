"""The PostgreSQL store beside the sqlite file, and failover between two engines on one
database, measured in one run:

1. executions/s and call_remote latency of one engine on each store;
2. failover: an active engine holding ``--failover`` executions (default 1,000; most of them
   pending, some running) is killed with kill -9 while a standby engine waits; the seconds
   from the kill until the standby is active, and until it has finished them all.

Starts its own throwaway PostgreSQL server (``scripts/postgres-up.sh``: Debian's postgresql,
a cluster in a temporary folder, stopped afterwards), or uses ``--dsn``. Each round runs
bench/throughput.py's parts 1 and 2 (no-op executions through 2 warm process replicas, then
sequential ``call_remote`` round trips) on a new sqlite file and on a new database, in
turns, so that a machine's drift weighs on both alike; the figures are medians over rounds.

The server is a local one with ``fsync=off`` (a throwaway cluster): a production server
fsyncs each commit, which sqlite's ``synchronous=NORMAL`` does not; a group commit pays it
once for hundreds of rows.

Human-readable figures are printed as it goes; the last line of stdout is one JSON object:
{"sqlite_executions_per_s": ..., "postgres_executions_per_s": ..., "postgres_vs_sqlite": ...,
...}. Run it with ``python bench/cluster.py`` (``--quick`` for a smoke test).
"""

from __future__ import annotations

import argparse
import asyncio
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


async def _scalar(dsn: str, query: str) -> Any:
    connection = await asyncpg.connect(dsn)
    try:
        return await connection.fetchval(query)
    finally:
        await connection.close()


def failover(admin: str, count: int) -> dict[str, Any]:
    """An active engine with ``count`` executions stored (most pending, some running) is
    killed with kill -9 while a standby waits; how long until the standby is active, and
    until it has finished them all."""
    dsn = postgres.new_database(admin, "failover")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, str(APP)]
    active = subprocess.Popen(
        [*command, "active", dsn, str(count)],
        stdout=subprocess.PIPE,
        env={**env, "TRIGGERFISH_BENCH_ROLE": "active"},
        text=True,
    )
    standby: subprocess.Popen[str] | None = None
    try:
        assert active.stdout is not None and active.stdout.readline().strip() == "submitted"
        standby = subprocess.Popen(
            [*command, "standby", dsn], stdout=subprocess.PIPE, env=env, text=True
        )
        ready = (
            "SELECT (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted)"
            " + (SELECT count(*) FROM executions WHERE status = 'RUNNING') / 16"
        )
        deadline = time.monotonic() + 120
        while asyncio.run(_scalar(dsn, ready)) < 2:  # a standby waits; 16 run on the active
            assert time.monotonic() < deadline, "the standby never waited, or nothing ran"
            time.sleep(0.05)
        unfinished = asyncio.run(
            _scalar(dsn, "SELECT count(*) FROM executions WHERE status IN ('PENDING', 'RUNNING')")
        )
        killed_at = time.time()
        active.kill()
        out, _ = standby.communicate(timeout=300)
    finally:
        for process in (active, standby):
            if process is not None and process.poll() is None:
                process.kill()
            if process is not None:
                process.wait(timeout=10)
    lines = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    done_at, succeeded = lines["done"].split()
    return {
        "failover_executions": count,
        "failover_unfinished_at_kill": unfinished,
        "failover_active_after_s": round(float(lines["active"]) - killed_at, 3),
        "failover_finished_after_s": round(float(done_at) - killed_at, 3),
        "failover_all_succeeded": int(succeeded) == count,
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
    with tempfile.TemporaryDirectory() as folder:
        admin, why = (args.dsn, None) if args.dsn else postgres.server()
        if admin is None:
            sys.exit(f"cluster bench: {why}")
        # (the server the bench started stops as it exits)
        for round_number in range(1, args.rounds + 1):
            for kind in ("sqlite", "postgres"):
                say(f"-- round {round_number}: {kind}")
                target: Any = (
                    Path(folder) / f"r{round_number}.db"
                    if kind == "sqlite"
                    else postgres.new_database(admin, "bench")
                )
                figures[kind].append(anyio.run(throughput_and_latency, args, target))
        say(f"-- failover: kill -9 of the active engine with {args.failover} executions stored")
        took = failover(admin, args.failover)
        say(
            f"  {took['failover_unfinished_at_kill']} unfinished at the kill; the standby was "
            f"active after {took['failover_active_after_s']}s and had finished them all after "
            f"{took['failover_finished_after_s']}s"
        )
    out: dict[str, Any] = {"rounds": args.rounds, "n": args.n, **took}
    for kind, runs in figures.items():
        for figure in ("executions_per_s", "call_remote_p50_ms", "call_remote_p99_ms"):
            out[f"{kind}_{figure}"] = round(statistics.median(r[figure] for r in runs), 3)
        out[f"{kind}_store_consistent"] = all(r["store_consistent"] for r in runs)
    out["postgres_vs_sqlite"] = round(
        out["postgres_executions_per_s"] / out["sqlite_executions_per_s"], 2
    )
    say(
        f"executions/s: sqlite {out['sqlite_executions_per_s']:,.0f}, PostgreSQL "
        f"{out['postgres_executions_per_s']:,.0f} ({out['postgres_vs_sqlite']}x); call_remote "
        f"p50 {out['sqlite_call_remote_p50_ms']} vs {out['postgres_call_remote_p50_ms']} ms, "
        f"p99 {out['sqlite_call_remote_p99_ms']} vs {out['postgres_call_remote_p99_ms']} ms"
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
