"""The PostgreSQL store beside the sqlite file: executions/s and call_remote latency of one
engine on each, measured in one run.

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
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio
from throughput import say, throughput_and_latency

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests import postgres


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="executions per throughput run")
    parser.add_argument("--runs", type=int, default=3, help="throughput runs per store a round")
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--lat-calls", type=int, default=2000)
    parser.add_argument("--lat-warmup", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2, help="sqlite/PostgreSQL turns")
    parser.add_argument("--dsn", help="a server of your own (its admin database's URL)")
    parser.add_argument("--quick", action="store_true", help="small numbers, a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.n, args.runs, args.warmup, args.lat_calls, args.lat_warmup = 2000, 1, 200, 200, 20
        args.rounds = 1
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
    out: dict[str, Any] = {"rounds": args.rounds, "n": args.n}
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
