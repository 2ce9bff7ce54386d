"""Memory benchmark: whether the daemon's RSS stays flat over many calls with large inputs.

Setup: the daemon (``python -m triggerfish serve``) as a child process on 127.0.0.1 with a sqlite
file (WAL, durable as in normal use) in a temporary directory, as in bench/http.py; its app is
this file's ``setup``: one function, ``head`` (``replicas=2``, ``concurrency=64``), which takes
one bytes argument and returns a short value (its length and its first 16 bytes). The remote
``Client`` (async, pickle payloads, API key) in this process.

Load: ``--calls`` calls (default 20,000), each with its own ``--size`` bytes argument (default
65,536: a 16-byte header naming the call, then random bytes, so no two inputs are the same),
pickled as the Python client sends them:

- ``--in-flight`` lanes (default 16), each making one ``call_remote`` at a time
  (``POST /functions/head/call``);
- ``--batch-lanes`` lanes (default 2), each starting a batch (``POST
  /functions/head/executions/batch``) of 1 to 64 inputs, every size in turn in a shuffled order,
  then waiting for its results. With the single calls beside them, the store's group commits
  take many different row counts, each a multi-row statement of its own.

Every result is checked, and at the end the store's count of SUCCEEDED executions.

Measures (about half a minute on a 2-core machine with the defaults): the daemon process's RSS
(VmRSS in /proc/<pid>/status; the daemon alone, not its replicas) before the first call and
every 1,000 calls done (a call is done when its result has come back). Figures: RSS at start
(after a warm-up, the first 1,000 calls), peak of the samples, at end, growth from start to end
in MB (aim: under 50 MB); the daemon's VmHWM at the end; calls/s from the end of the warm-up to
the last result.

The samples are printed as a table as they come; the last line of stdout is one JSON object:
{"rss_mb_start": ..., "rss_mb_peak": ..., "rss_mb_end": ..., "rss_growth_mb": ...,
"calls_per_s": ..., ...}.

Run it with ``python bench/memory.py`` (``--calls 2000`` for a smoke test).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if __name__ == "__main__":
    # bench/ holds an http.py that would shadow the standard library's http package. The daemon
    # and its replicas import this file as the app (a copy in a folder of its own): there its
    # folder stays on the path, for the replicas to import ``head`` from.
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]

import argparse  # noqa: E402
import contextlib  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import anyio  # noqa: E402
import httpx  # noqa: E402

from triggerfish import Client, Engine, ExecutionStatus  # noqa: E402

HEADER = 16  # bytes at the start of each input that name its call
SAMPLE_EVERY = 1000  # calls done between two RSS samples; also the warm-up
MAX_BATCH = 64


# -- the app the daemon runs (imported there as ``memory:setup``) ---------------------------


def head(x: bytes) -> tuple[int, bytes]:
    """The length of its argument and its first bytes: a short result that names the input."""
    return len(x), x[:HEADER]


def setup(engine: Engine) -> None:
    engine.function(head, replicas=2, concurrency=64)


# -- the daemon ---------------------------------------------------------------------------


def say(text: str) -> None:
    print(text, flush=True)


def status_mb(pid: int, field: str) -> float:
    """A memory field of /proc/<pid>/status (VmRSS, VmHWM) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} is not in /proc/{pid}/status")


def start_daemon(tmp: Path, port: int) -> subprocess.Popen[bytes]:
    app_dir = tmp / "app"  # this file alone: bench/http.py would shadow the stdlib's http
    app_dir.mkdir()
    shutil.copy(Path(__file__), app_dir / "memory.py")
    env = {
        **os.environ,
        "TRIGGERFISH_CREDENTIALS": str(tmp / "credentials.json"),
        "PYTHONPATH": os.pathsep.join([str(app_dir), *sys.path]),
    }
    command = [sys.executable, "-m", "triggerfish", "serve", "--data-dir", str(tmp / "daemon")]
    command += ["--port", str(port), "--app", "memory:setup", "--drain-timeout", "5"]
    # A session of its own: Ctrl-C reaches this process only, which then stops the daemon (and,
    # should it not stop, its process group: the daemon and its replicas).
    return subprocess.Popen(
        command,
        env=env,
        cwd=app_dir,
        stderr=(tmp / "daemon.log").open("wb"),
        start_new_session=True,
    )


def wait_healthy(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    # The daemon has no "ready" signal to wait on from here; /health is polled.
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the daemon exited with {process.returncode}:\n{tail}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("the daemon did not answer /health within 60 s")
        time.sleep(0.05)


def stop_daemon(process: subprocess.Popen[bytes]) -> None:
    try:
        if process.poll() is None:
            process.terminate()
        process.wait(timeout=30)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


# -- the load -----------------------------------------------------------------------------


class Run:
    """The calls handed out and done, and the RSS samples taken as they are done."""

    def __init__(self, args: argparse.Namespace, pid: int) -> None:
        self.calls, self.size, self.pid = args.calls, args.size, pid
        self.warmup = min(SAMPLE_EVERY, args.calls)
        rng = random.Random(20261124)
        # Bodies cycle through a pool (made once); the header makes every input its own.
        self.pool = [rng.randbytes(args.size - HEADER) for _ in range(61)]
        sizes = list(range(1, MAX_BATCH + 1))
        rng.shuffle(sizes)
        self.batch_sizes = itertools.cycle(sizes)
        self.issued = self.done = self.wrong = 0
        self.batches = self.batched = 0
        self.sizes_used: set[int] = set()
        self.started = time.perf_counter()
        self.warm = self.ended = self.started
        self.samples = [(0, status_mb(pid, "VmRSS"))]
        say(f"{'calls done':>10}  {'RSS MB':>8}  {'s':>6}")
        self.show(*self.samples[0])

    def show(self, done: int, mb: float) -> None:
        say(f"{done:>10,}  {mb:>8.1f}  {time.perf_counter() - self.started:>6.1f}")

    def claim(self, wanted: int) -> range:
        first = self.issued
        self.issued = min(self.calls, first + wanted)
        return range(first, self.issued)

    def input(self, i: int) -> bytes:
        return f"{i:0{HEADER}d}".encode() + self.pool[i % len(self.pool)]

    def finished(self, i: int, result: Any) -> None:
        self.wrong += result != (self.size, f"{i:0{HEADER}d}".encode())
        self.done += 1
        if self.done % SAMPLE_EVERY == 0 or self.done == self.calls:
            sample = (self.done, status_mb(self.pid, "VmRSS"))
            self.samples.append(sample)
            self.show(*sample)
        if self.done == self.warmup:
            self.warm = time.perf_counter()
        if self.done == self.calls:
            self.ended = time.perf_counter()


async def load(args: argparse.Namespace, port: int, pid: int) -> Run:
    async with Client(f"http://127.0.0.1:{port}") as client:
        remote = client.function("head")
        run = Run(args, pid)

        async def single_lane() -> None:
            while calls := run.claim(1):
                (i,) = calls
                run.finished(i, await remote.call_remote(run.input(i)))

        async def batch_lane() -> None:
            while calls := run.claim(next(run.batch_sizes)):
                ids = await remote.start_many(((run.input(i),), {}) for i in calls)
                run.batches += 1
                run.batched += len(calls)
                run.sizes_used.add(len(calls))
                for i, execution_id in zip(calls, ids, strict=True):
                    run.finished(i, await remote.result_of(execution_id))

        async with anyio.create_task_group() as tg:
            for _ in range(args.batch_lanes):
                tg.start_soon(batch_lane)
            for _ in range(args.in_flight):
                tg.start_soon(single_lane)
        assert run.wrong == 0, f"{run.wrong} wrong results"
        succeeded = (await remote.statistics())[ExecutionStatus.SUCCEEDED]
        assert succeeded == args.calls, f"{succeeded} SUCCEEDED in the store, not {args.calls}"
    return run


def figures(args: argparse.Namespace, run: Run, pid: int) -> dict[str, Any]:
    at = dict(run.samples)
    start, end = at[run.warmup], at[args.calls]
    timed = args.calls - run.warmup
    per_s = (timed / (run.ended - run.warm)) if timed else args.calls / (run.ended - run.started)
    return {
        "rss_mb_start": round(start, 1),
        "rss_mb_peak": round(max(mb for _, mb in run.samples), 1),
        "rss_mb_end": round(end, 1),
        "rss_growth_mb": round(end - start, 1),
        "calls_per_s": round(per_s, 1),
        "rss_mb_before_calls": round(at[0], 1),
        "rss_mb_hwm": round(status_mb(pid, "VmHWM"), 1),
        "calls": args.calls,
        "size": args.size,
        "in_flight": args.in_flight,
        "batch_lanes": args.batch_lanes,
        "batches": run.batches,
        "batched_calls": run.batched,
        "batch_sizes_distinct": len(run.sizes_used),
        "seconds": round(run.ended - run.started, 1),
        "rss_mb_samples": [[done, round(mb, 1)] for done, mb in run.samples],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=20_000, help="calls in all (20000)")
    parser.add_argument("--size", type=int, default=65_536, help="bytes per input (65536)")
    parser.add_argument("--in-flight", type=int, default=16, help="single-call lanes (16)")
    parser.add_argument("--batch-lanes", type=int, default=2, help="batch lanes (2)")
    args = parser.parse_args()
    if args.calls < 1 or args.size < HEADER or args.in_flight + args.batch_lanes < 1:
        parser.error(f"--calls >= 1, --size >= {HEADER}, and at least one lane")

    with tempfile.TemporaryDirectory(prefix="triggerfish-bench-memory-") as name:
        tmp = Path(name)
        sys.path.append(str(HERE))  # the daemon's copy of this file has no common.py: not above
        from common import free_port

        port = free_port()
        process = start_daemon(tmp, port)
        try:
            wait_healthy(process, port, tmp / "daemon.log")
            os.environ["TRIGGERFISH_CREDENTIALS"] = str(tmp / "credentials.json")
            say(
                f"daemon (pid {process.pid}) at http://127.0.0.1:{port}: {args.calls:,} calls of "
                f"{args.size:,} bytes, {args.in_flight} single-call lanes, {args.batch_lanes} "
                f"batch lanes (1 to {MAX_BATCH} inputs); daemon RSS every {SAMPLE_EVERY:,} calls"
            )
            run = anyio.run(load, args, port, process.pid)
            out = figures(args, run, process.pid)
        except Exception:
            stop_daemon(process)
            tail = (tmp / "daemon.log").read_text(errors="replace")[-3000:]
            print(f"the daemon's log, its end:\n{tail}", file=sys.stderr, flush=True)
            raise
        finally:
            stop_daemon(process)

    say(
        f"RSS: {out['rss_mb_before_calls']:.1f} MB before the first call, "
        f"{out['rss_mb_start']:.1f} MB after {run.warmup:,} (start), peak "
        f"{out['rss_mb_peak']:.1f} MB, end {out['rss_mb_end']:.1f} MB (VmHWM "
        f"{out['rss_mb_hwm']:.1f} MB); growth from start to end {out['rss_growth_mb']:.1f} MB "
        "(aim: under 50 MB)"
    )
    say(
        f"{out['calls_per_s']:,.0f} calls/s after the warm-up; {out['batched_calls']:,} of the "
        f"calls in {out['batches']:,} batches of {out['batch_sizes_distinct']} different sizes; "
        f"{out['seconds']:.1f} s in all"
    )
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
