"""Deadlines of running executions: their timeout, the kill grace after a stop was asked, and
the backoff before a retry. One task sleeps until the earliest of them and hands each expired
one to the lifecycle, which decides what it means (the execution may have moved on since)."""

from __future__ import annotations

import math
import time

import anyio
from anyio.abc import TaskStatus

from .deadlines import DeadlineQueue
from .lifecycle import Lifecycle


class Timeouts:
    """The lifecycle's ``Timers``: timeouts, kill grace and backoff, on a monotonic clock."""

    def __init__(self, lifecycle: Lifecycle, kill_grace: float) -> None:
        self._lifecycle = lifecycle
        self.kill_grace = kill_grace
        self._wake = anyio.Event()
        self._timeouts = DeadlineQueue(self._earlier)
        self._grace = DeadlineQueue(self._earlier)
        self._backoff = DeadlineQueue(self._earlier)

    def _earlier(self) -> None:
        self._wake.set()

    def arm_timeout(self, execution_id: str, seconds: float) -> None:
        self._timeouts.arm(execution_id, seconds, time.monotonic())

    def arm_grace(self, execution_id: str) -> None:
        self._grace.arm(execution_id, self.kill_grace, time.monotonic())

    def arm_backoff(self, execution_id: str, seconds: float) -> None:
        self._backoff.arm(execution_id, seconds, time.monotonic())

    def disarm(self, execution_id: str) -> None:
        self._timeouts.disarm(execution_id)
        self._grace.disarm(execution_id)
        self._backoff.disarm(execution_id)

    async def run(self, *, task_status: TaskStatus[None]) -> None:
        queues = (self._timeouts, self._grace, self._backoff)
        lifecycle = self._lifecycle
        task_status.started()
        while True:
            deadlines = [d for q in queues if (d := q.next_deadline()) is not None]
            delay = max(0.0, min(deadlines) - time.monotonic()) if deadlines else math.inf
            with anyio.move_on_after(delay):
                await self._wake.wait()
            self._wake = anyio.Event()
            now = time.monotonic()
            for key in self._timeouts.pop_expired(now):
                lifecycle.timeout_expired(str(key))
            for key in self._grace.pop_expired(now):
                lifecycle.grace_expired(str(key))
            for key in self._backoff.pop_expired(now):
                lifecycle.backoff_expired(str(key))
