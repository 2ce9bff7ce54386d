"""The workloads on Celery 5 with a Redis broker and result backend, its prefork pool with
``--concurrency=2`` (its default pool, and the default prefetch multiplier of 4), many tasks
sent and collected with ``group(...).get()`` (results in input order), as its documentation
recommends.

Run by run.py, which starts redis-server and the worker (``celery -A peer_celery worker``)."""

from __future__ import annotations

from celery import group
from peer_celery import noop, spin
from work import emit, measure, sizes


def main() -> None:
    figures = measure(
        sizes(),
        lambda xs: group(noop.s(x) for x in xs).apply_async().get(timeout=900),
        lambda x: noop.delay(x).get(timeout=60),
        lambda ns: group(spin.s(n) for n in ns).apply_async().get(timeout=900),
    )
    emit({"system": "celery", **figures})


if __name__ == "__main__":
    main()
