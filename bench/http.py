"""HTTP benchmark: call_remote through the daemon beside the same calls embedded, in one run.

Setup: the daemon (``python -m triggerfish serve``) as a child process on 127.0.0.1 with a sqlite
file (WAL, durable as in normal use) in a temporary directory, and its app (``bench_app.py``:
one sync no-op function, ``replicas=2``, ``concurrency=64``); the remote ``Client`` (async,
pickle payloads, API key) in this process. Then the same function on an embedded ``Engine`` in
this process, on its own sqlite file.

Measures (under a minute with the defaults):

1. call round trip: p50 and p99 in ms of ``--calls`` sequential ``call_remote`` (default 2000,
   after 200 warm-up calls) on a warm replica: through HTTP, then embedded.
2. executions/s: ``--n`` calls (default 10,000) with ``--inflight`` (default 64) ``call_remote``
   in flight at once, timed from the first start to the last result: through HTTP, then
   embedded. Every result is checked.

Human-readable figures are printed as it goes; the last line of stdout is one JSON object:
{"http_call_p50_ms": ..., "http_call_p99_ms": ..., "http_executions_per_s": ...,
"embedded_call_p50_ms": ..., "embedded_executions_per_s": ..., ...}.

Run it with ``python bench/http.py`` (``--quick`` for smaller numbers).
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file shares its name with the standard library's http package: its folder is taken off
# the import path while the libraries load, then put back for the bench's own modules.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Awaitable, Callable  # noqa: E402
from typing import Any  # noqa: E402

import anyio  # noqa: E402
import httpx  # noqa: E402

from triggerfish import Client, Engine  # noqa: E402

sys.path.append(str(HERE))
from bench_app import echo, setup  # noqa: E402
from common import free_port, percentile, wait_ready  # noqa: E402


def say(text: str) -> None:
    print(text, flush=True)


async def round_trips(call: Callable[[int], Awaitable[Any]], calls: int) -> list[float]:
    for i in range(200):
        await call(i)
    times = []
    for i in range(calls):
        start = time.perf_counter()
        result = await call(i)
        times.append((time.perf_counter() - start) * 1000)
        assert result == i, (result, i)
    return sorted(times)


async def rate(call: Callable[[int], Awaitable[Any]], n: int, inflight: int) -> float:
    counter = itertools.count()
    wrong = 0

    async def worker() -> None:
        nonlocal wrong
        while (i := next(counter)) < n:
            wrong += await call(i) != i

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(inflight):
            tg.start_soon(worker)
    elapsed = time.perf_counter() - start
    assert wrong == 0, f"{wrong} wrong results"
    return n / elapsed


def report(label: str, times: list[float], per_s: float, out: dict[str, Any]) -> None:
    p50, p99 = percentile(times, 50), percentile(times, 99)
    out[f"{label}_call_p50_ms"] = round(p50, 3)
    out[f"{label}_call_p99_ms"] = round(p99, 3)
    out[f"{label}_executions_per_s"] = round(per_s, 1)
    say(f"  {label}: call p50 {p50:.3f} ms, p99 {p99:.3f} ms; {per_s:,.0f} executions/s")


async def start_daemon(tmp: Path, port: int) -> subprocess.Popen[bytes]:
    app_dir = tmp / "app"  # bench_app alone: this folder's http.py would shadow the stdlib's
    app_dir.mkdir()
    shutil.copy(HERE / "bench_app.py", app_dir)
    env = {
        **os.environ,
        "TRIGGERFISH_CREDENTIALS": str(tmp / "credentials.json"),
        "PYTHONPATH": os.pathsep.join([str(app_dir), *sys.path[:-1]]),
    }
    process = subprocess.Popen(  # noqa: ASYNC220 (started once, before anything is timed)
        [
            sys.executable,
            "-m",
            "triggerfish",
            "serve",
            "--data-dir",
            str(tmp / "daemon"),
            "--port",
            str(port),
            "--app",
            "bench_app:setup",
        ],
        env=env,
        cwd=app_dir,
        stderr=(tmp / "daemon.log").open("wb"),
    )
    # The daemon has no "ready" signal to wait on from here; /health is polled.
    with anyio.fail_after(60):
        async with httpx.AsyncClient() as http:
            while True:
                try:
                    if (await http.get(f"http://127.0.0.1:{port}/health")).status_code == 200:
                        return process
                except httpx.TransportError:
                    pass
                await anyio.sleep(0.05)


async def bench(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"calls": args.calls, "n": args.n, "inflight": args.inflight}
    port = free_port()
    process = await start_daemon(tmp, port)
    os.environ["TRIGGERFISH_CREDENTIALS"] = str(tmp / "credentials.json")
    try:
        async with Client(f"http://127.0.0.1:{port}") as client:
            remote = client.function("echo")
            say(f"daemon at http://127.0.0.1:{port}; HTTP:")
            times = await round_trips(remote.call_remote, args.calls)
            per_s = await rate(remote.call_remote, args.n, args.inflight)
            report("http", times, per_s, out)
    finally:
        process.terminate()
        process.wait(timeout=60)

    engine = Engine(tmp / "embedded.db")
    setup(engine)
    async with engine:
        await wait_ready(engine, "echo", 2)
        handle = engine.handle(echo)
        say("embedded:")
        times = await round_trips(handle.call_remote, args.calls)
        per_s = await rate(handle.call_remote, args.n, args.inflight)
        report("embedded", times, per_s, out)
    out["http_over_embedded_p50"] = round(out["http_call_p50_ms"] / out["embedded_call_p50_ms"], 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=2000, help="sequential calls (2000)")
    parser.add_argument("--n", type=int, default=10_000, help="calls for executions/s (10000)")
    parser.add_argument("--inflight", type=int, default=64, help="calls in flight (64)")
    parser.add_argument("--quick", action="store_true", help="smaller numbers")
    args = parser.parse_args()
    if args.quick:
        args.calls, args.n = 300, 2000
    with tempfile.TemporaryDirectory(prefix="triggerfish-bench-http-") as tmp:
        result = anyio.run(bench, args, Path(tmp))
    keys = [
        "http_call_p50_ms",
        "http_call_p99_ms",
        "http_executions_per_s",
        "embedded_call_p50_ms",
        "embedded_executions_per_s",
    ]
    summary = {k: result.pop(k) for k in keys}
    print(json.dumps({**summary, **result}), flush=True)


if __name__ == "__main__":
    main()
