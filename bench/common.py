"""Helpers the bench scripts share."""

from __future__ import annotations

import socket

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


def free_port() -> int:
    """A port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
