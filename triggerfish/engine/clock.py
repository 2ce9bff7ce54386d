"""The cron clock: one task sleeping until the earliest next fire time of all cron triggers.

Next fire times sit in a heap, so a tick costs the triggers due, not all of them. Changing or
removing a trigger bumps its generation; heap entries of an old generation are skipped when
they come up. The clock reads wall-clock time (cron is about wall clocks) and never polls:
it sleeps until the next fire time or until a new, earlier one is added.
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime

import anyio
from anyio.abc import TaskStatus

from ..triggers.cron import CronSchedule

#: Called for each fire time that is due: (trigger id, scheduled time, lateness in seconds).
Fire = Callable[[str, datetime, float], None]


class CronClock:
    def __init__(self, fire: Fire) -> None:
        self._fire = fire
        self._heap: list[tuple[float, int, str, int]] = []
        self._schedules: dict[str, tuple[CronSchedule, int]] = {}
        self._generations = itertools.count(1)
        self._order = itertools.count()
        self._wake = anyio.Event()

    def __len__(self) -> int:
        return len(self._schedules)

    def schedule(self, trigger_id: str, schedule: CronSchedule, after: datetime) -> None:
        """Fire ``trigger_id`` at its schedule's times after ``after`` (replacing any before)."""
        generation = next(self._generations)
        self._schedules[trigger_id] = (schedule, generation)
        self._push(trigger_id, schedule, generation, after)

    def unschedule(self, trigger_id: str) -> None:
        self._schedules.pop(trigger_id, None)

    def _push(
        self, trigger_id: str, schedule: CronSchedule, generation: int, after: datetime
    ) -> None:
        when = schedule.next_after(after)
        if when is None:
            self._schedules.pop(trigger_id, None)  # past its end_at
            return
        entry = (when.timestamp(), next(self._order), trigger_id, generation)
        heapq.heappush(self._heap, entry)
        if self._heap[0] is entry:
            self._wake.set()

    async def run(self, *, task_status: TaskStatus[None]) -> None:
        task_status.started()
        while True:
            now = time.time()
            while self._heap and self._heap[0][0] <= now:
                due, _, trigger_id, generation = heapq.heappop(self._heap)
                current = self._schedules.get(trigger_id)
                if current is None or current[1] != generation:
                    continue  # changed or removed since this entry was pushed
                when = datetime.fromtimestamp(due, UTC)
                self._fire(trigger_id, when, time.time() - due)  # read per firing: honest
                if trigger_id in self._schedules:
                    self._push(trigger_id, current[0], generation, when)
            delay = self._heap[0][0] - time.time() if self._heap else math.inf
            with anyio.move_on_after(max(0.0, delay)):
                await self._wake.wait()
            self._wake = anyio.Event()
