"""The cron clock: one task sleeping until the earliest next fire time of all cron triggers.

Next fire times sit in a heap, so a tick costs the triggers due, not all of them. Triggers
that share a schedule and a next fire time share one heap entry (a bucket), and a schedule's
next fire time is computed once for all of them (``NextFireTimes``): ten thousand triggers
on ``* * * * *`` are one entry and one croniter walk a minute.

Each due time is handled in two steps, so that what is due is handed over in one tight loop
right at its time. ``lead`` seconds ahead, every trigger of the buckets due then is *staged*:
the engine builds its firing (input, event, record) without creating anything. At the due
time the staged firings still current are *handed over* together; the engine creates them
then, never earlier. The next fire times are worked out after the hand-over, off its path.

Changing or removing a trigger bumps its generation; a bucket member or a staged firing of
an old generation is dropped when it comes up. The clock reads wall-clock time (cron is about
wall clocks) and never polls: it sleeps until the next staging or hand-over time, or until a
new, earlier fire time is added.
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

import anyio
from anyio.abc import TaskStatus

from ..triggers.cron import CronSchedule, NextFireTimes

T = TypeVar("T")

#: Builds ahead of time what firing ``trigger id`` at ``scheduled time`` needs, creating
#: nothing; None if it has nothing to fire.
Stage = Callable[[str, datetime], T | None]
#: Creates the staged firings of one scheduled time; called once that time has come.
HandOver = Callable[[list[T], datetime], None]

#: How long before a due time its firings are staged: enough to build thousands of them.
STAGE_LEAD = 0.25


@dataclass(slots=True, eq=False)
class _Bucket:
    """The triggers (id -> generation) that fire on one schedule at one time."""

    schedule: CronSchedule
    when: datetime
    members: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Staged(Generic[T]):
    """A bucket's firings staged for its time, with the members (id, generation) they are of."""

    bucket: _Bucket
    members: list[tuple[str, int]]
    firings: list[T]
    changes: int  # the clock's count of changes as staging began: none since, none is stale


class CronClock(Generic[T]):
    def __init__(self, stage: Stage[T], hand_over: HandOver[T], lead: float = STAGE_LEAD) -> None:
        self._stage = stage
        self._hand_over = hand_over
        self._lead = lead
        self._heap: list[tuple[float, int, _Bucket]] = []
        self._open: dict[tuple[CronSchedule, datetime], _Bucket] = {}  # in the heap still
        self._staged: dict[float, list[_Staged[T]]] = {}
        self._schedules: dict[str, tuple[CronSchedule, int]] = {}
        self._changes = 0  # schedule and unschedule calls so far
        self._next_times = NextFireTimes()
        self._generations = itertools.count(1)
        self._order = itertools.count()
        self._wake = anyio.Event()

    def __len__(self) -> int:
        return len(self._schedules)

    def schedule(self, trigger_id: str, schedule: CronSchedule, after: datetime) -> None:
        """Fire ``trigger_id`` at its schedule's times after ``after`` (replacing any before)."""
        generation = next(self._generations)
        self._schedules[trigger_id] = (schedule, generation)
        self._changes += 1
        when = self._next_times.next_after(schedule, after)
        if when is None:
            del self._schedules[trigger_id]  # past its end_at
            return
        self._bucket(schedule, when).members[trigger_id] = generation

    def unschedule(self, trigger_id: str) -> None:
        self._schedules.pop(trigger_id, None)
        self._changes += 1

    def _current(self, trigger_id: str, generation: int) -> bool:
        current = self._schedules.get(trigger_id)
        return current is not None and current[1] == generation

    def _bucket(self, schedule: CronSchedule, when: datetime) -> _Bucket:
        bucket = self._open.get((schedule, when))
        if bucket is None:
            bucket = self._open[schedule, when] = _Bucket(schedule, when)
            entry = (when.timestamp(), next(self._order), bucket)
            heapq.heappush(self._heap, entry)
            if self._heap[0] is entry:
                self._wake.set()
        return bucket

    def _stage_next(self) -> None:
        """Stage every bucket due at the earliest time in the heap."""
        due = self._heap[0][0]
        staged = self._staged.setdefault(due, [])
        while self._heap and self._heap[0][0] == due:
            bucket = heapq.heappop(self._heap)[2]
            del self._open[bucket.schedule, bucket.when]
            members, firings, changes = [], [], self._changes
            for trigger_id, generation in bucket.members.items():
                if self._current(trigger_id, generation):
                    firing = self._stage(trigger_id, bucket.when)
                    if firing is not None:
                        members.append((trigger_id, generation))
                        firings.append(firing)
            staged.append(_Staged(bucket, members, firings, changes))

    def _fire(self, due: float) -> None:
        """Hand over what is staged for ``due``, then put its triggers back in the heap."""
        staged = self._staged.pop(due)
        for group in staged:
            firings = group.firings
            if group.changes != self._changes:  # some trigger changed: drop what it staged
                current = zip(group.members, firings, strict=True)
                firings = [firing for (t, g), firing in current if self._current(t, g)]
            if firings:
                self._hand_over(firings, group.bucket.when)
        for bucket in (group.bucket for group in staged):
            members = {t: g for t, g in bucket.members.items() if self._current(t, g)}
            if not members:
                continue
            when = self._next_times.next_after(bucket.schedule, bucket.when)
            if when is None:  # past its end_at
                for trigger_id in members:
                    del self._schedules[trigger_id]
            else:
                self._bucket(bucket.schedule, when).members.update(members)

    async def run(self, *, task_status: TaskStatus[None]) -> None:
        task_status.started()
        while True:
            now = time.time()
            if self._heap and self._heap[0][0] - self._lead <= now:
                self._stage_next()
                continue
            due = min(self._staged, default=math.inf)
            if due <= now:
                self._fire(due)
                continue
            stage_at = self._heap[0][0] - self._lead if self._heap else math.inf
            with anyio.move_on_after(min(due, stage_at) - now):
                await self._wake.wait()
            self._wake = anyio.Event()
