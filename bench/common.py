"""Helpers the bench scripts share."""

from __future__ import annotations

import anyio

from triggerfish import Engine


async def wait_ready(engine: Engine, service: str, replicas: int, timeout: float = 60.0) -> None:
    # The engine has no "replicas ready" event to wait on; its status is polled.
    with anyio.fail_after(timeout):
        while engine.service_status(service).replicas < replicas:  # noqa: ASYNC110
            await anyio.sleep(0.01)


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    rank = max(1, round(pct / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]
