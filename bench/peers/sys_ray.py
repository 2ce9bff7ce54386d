"""The workloads on Ray on this machine: ``ray.init(num_cpus=2)`` (two worker processes for
one-CPU tasks), tasks submitted with ``.remote`` and collected with ``ray.get`` (in order)."""

from __future__ import annotations

import statistics
import time

import ray
from work import emit, percentile, sizes
from work import noop as _noop
from work import spin as _spin


def main() -> None:
    size = sizes()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    noop = ray.remote(_noop)
    spin = ray.remote(_spin)
    out: dict[str, object] = {"system": "ray"}
    runs = []
    for run in range(size["runs"] + 1):
        begun = time.perf_counter()
        results = ray.get([noop.remote(i) for i in range(size["noop"])])
        took = time.perf_counter() - begun
        assert results == list(range(size["noop"]))
        if run:
            runs.append(size["noop"] / took)
    out["noop_tasks_per_s"] = statistics.median(runs)
    samples = []
    for i in range(size["roundtrips"] + 200):
        begun = time.perf_counter()
        assert ray.get(noop.remote(i)) == i
        if i >= 200:
            samples.append((time.perf_counter() - begun) * 1000)
    out["roundtrip_p50_ms"] = percentile(samples, 50)
    out["roundtrip_p99_ms"] = percentile(samples, 99)
    walls = []
    for run in range(size["runs"] + 1):
        begun = time.perf_counter()
        values = ray.get([spin.remote(size["spin_n"]) for _ in range(size["map"])])
        took = time.perf_counter() - begun
        assert len(values) == size["map"]
        if run:
            walls.append(took)
    out["map_10k_wall_s"] = statistics.median(walls)
    ray.shutdown()
    emit(out)


if __name__ == "__main__":
    main()
