"""The workloads on Ray on this machine: ``ray.init(num_cpus=2)`` (two worker processes for
one-CPU tasks), tasks submitted with ``.remote`` and collected with ``ray.get`` (in order)."""

from __future__ import annotations

import ray
from work import emit, measure, sizes
from work import noop as _noop
from work import spin as _spin


def main() -> None:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    noop = ray.remote(_noop)
    spin = ray.remote(_spin)
    figures = measure(
        sizes(),
        lambda xs: ray.get([noop.remote(x) for x in xs]),
        lambda x: ray.get(noop.remote(x)),
        lambda ns: ray.get([spin.remote(n) for n in ns]),
    )
    ray.shutdown()
    emit({"system": "ray", **figures})


if __name__ == "__main__":
    main()
