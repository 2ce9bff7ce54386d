"""The work every system runs, the same function bodies and the same sizes."""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def noop(x: Any = None) -> Any:
    """Workloads 1 and 2: returns its input."""
    return x


async def stamp() -> float:
    """Workload 4 on triggerfish: when the job's body began (APScheduler's job takes the
    same reading on its own loop)."""
    return time.time()


def spin(n: int) -> int:
    """Workload 3: about 1 ms of CPU (``n`` calibrated once by ``calibrate``)."""
    total = 0
    for i in range(n):
        total += i
    return total


def calibrate(target_s: float = 0.001) -> int:
    """The ``n`` for which ``spin(n)`` takes about ``target_s`` here."""
    n = 10_000
    while True:
        begun = time.perf_counter()
        spin(n)
        took = time.perf_counter() - begun
        if took > 0.02:
            return max(1, int(n * target_s / took))
        n *= 2


def sizes() -> dict[str, Any]:
    """The workload sizes, from PEERS_SIZES (set by run.py)."""
    return dict(json.loads(os.environ["PEERS_SIZES"]))


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    rank = max(1, round(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def _stat_seconds(path: Path, fields: slice) -> float:
    """The sum of CPU time fields of a /proc stat file, in seconds (0 if it is gone)."""
    try:
        values = path.read_text().rpartition(")")[2].split()[fields]
    except FileNotFoundError:
        return 0.0
    return sum(int(v) for v in values) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of processes (and their reaped children), from /proc."""
    return sum(_stat_seconds(Path(f"/proc/{pid}/stat"), slice(11, 15)) for pid in pids)  # u s cu cs


def thread_cpu_seconds(pid: int) -> tuple[float, float]:
    """User + system CPU time of a process's main thread (its event loop) and of its other
    threads together (the store's writer thread among them), from /proc."""
    main = other = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        seconds = _stat_seconds(task / "stat", slice(11, 13))  # utime stime
        if task.name == str(pid):
            main += seconds
        else:
            other += seconds
    return main, other


def descendants(pid: int) -> list[int]:
    """Every process under ``pid`` (psutil is in the peers' environment)."""
    import psutil

    return [p.pid for p in psutil.Process(pid).children(recursive=True)]


def emit(result: dict[str, Any]) -> None:
    """A system's figures: one JSON line, the last of its output."""
    print(json.dumps(result), flush=True)
    sys.stdout.flush()


def measure(
    size: dict[str, Any],
    noop_all: Callable[[list[int]], list[Any]],
    noop_one: Callable[[int], Any],
    spin_all: Callable[[list[int]], list[Any]],
) -> dict[str, float]:
    """Workloads 1 to 3 on a system with a blocking API: its way to run ``noop`` over a list
    (results in order), ``noop`` once, and ``spin`` over a list."""
    out: dict[str, float] = {}
    inputs = list(range(size["noop"]))
    rates = []
    for run in range(size["runs"] + 1):  # the first is the warm-up
        begun = time.perf_counter()
        assert noop_all(inputs) == inputs
        if run:
            rates.append(size["noop"] / (time.perf_counter() - begun))
    out["noop_tasks_per_s"] = statistics.median(rates)
    samples = []
    for i in range(size["roundtrips"] + 200):
        begun = time.perf_counter()
        assert noop_one(i) == i
        if i >= 200:
            samples.append((time.perf_counter() - begun) * 1000)
    out["roundtrip_p50_ms"] = percentile(samples, 50)
    out["roundtrip_p99_ms"] = percentile(samples, 99)
    walls = []
    expected = spin(size["spin_n"])
    for run in range(size["runs"] + 1):
        begun = time.perf_counter()
        values = spin_all([size["spin_n"]] * size["map"])
        took = time.perf_counter() - begun
        assert len(values) == size["map"] and values[-1] == expected
        if run:
            walls.append(took)
    out["map_10k_wall_s"] = statistics.median(walls)
    return out
