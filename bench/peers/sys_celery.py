"""The workloads on Celery 5 with a Redis broker and result backend, its prefork pool with
``--concurrency=2`` (its default pool; the default prefetch multiplier of 4), results with
``group(...).get()`` (in input order) as its documentation recommends for many tasks.

Run by run.py, which starts redis-server and the worker (``celery -A peer_celery worker``)."""

from __future__ import annotations

import statistics
import time

from celery import group
from peer_celery import noop, spin
from work import emit, percentile, sizes


def main() -> None:
    size = sizes()
    out: dict[str, object] = {"system": "celery"}
    runs = []
    for run in range(size["runs"] + 1):
        begun = time.perf_counter()
        results = group(noop.s(i) for i in range(size["noop"])).apply_async().get(timeout=600)
        took = time.perf_counter() - begun
        assert results == list(range(size["noop"]))
        if run:
            runs.append(size["noop"] / took)
    out["noop_tasks_per_s"] = statistics.median(runs)
    samples = []
    for i in range(size["roundtrips"] + 200):
        begun = time.perf_counter()
        assert noop.delay(i).get(timeout=60) == i
        if i >= 200:
            samples.append((time.perf_counter() - begun) * 1000)
    out["roundtrip_p50_ms"] = percentile(samples, 50)
    out["roundtrip_p99_ms"] = percentile(samples, 99)
    walls = []
    for run in range(size["runs"] + 1):
        begun = time.perf_counter()
        done = group(spin.s(size["spin_n"]) for _ in range(size["map"])).apply_async()
        values = done.get(timeout=600)
        took = time.perf_counter() - begun
        assert len(values) == size["map"]
        if run:
            walls.append(took)
    out["map_10k_wall_s"] = statistics.median(walls)
    emit(out)


if __name__ == "__main__":
    main()
