"""The cron clock on the real wall clock: grouping, staging ahead, and dropping stale firings."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import anyio
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream

from triggerfish.engine.clock import CronClock
from triggerfish.triggers.cron import CronSchedule

pytestmark = pytest.mark.anyio
EVERY_SECOND = CronSchedule.parse("* * * * * *")
YEARLY = CronSchedule.parse("0 0 1 1 *")


@dataclass
class HandOver:
    firings: list[str]
    when: datetime
    at: float  # wall-clock time of the hand-over


@dataclass
class Recorder:
    """Stands in for the engine: stages a trigger id, and reports every hand-over."""

    on_stage: Callable[[CronClock[str], list[str]], None] = lambda clock, staged: None
    staged: list[tuple[str, datetime, float]] = field(default_factory=list)

    @asynccontextmanager
    async def running(
        self, lead: float
    ) -> AsyncIterator[tuple[CronClock[str], MemoryObjectReceiveStream[HandOver]]]:
        send, receive = anyio.create_memory_object_stream[HandOver](100)

        def stage(trigger_id: str, when: datetime) -> str:
            self.staged.append((trigger_id, when, time.time()))
            self.on_stage(clock, [t for t, _, _ in self.staged])
            return trigger_id

        def hand_over(firings: list[str], when: datetime) -> None:
            send.send_nowait(HandOver(sorted(firings), when, time.time()))

        clock = CronClock(stage, hand_over, lead=lead)
        async with send, receive, anyio.create_task_group() as tg:
            await tg.start(clock.run)
            yield clock, receive
            tg.cancel_scope.cancel()


async def test_triggers_on_one_schedule_share_an_entry_and_fire_together_once() -> None:
    recorder = Recorder()
    async with recorder.running(lead=0.3) as (clock, handovers):
        now = datetime.now(UTC)
        for trigger_id in ("a", "b", "c"):
            clock.schedule(trigger_id, EVERY_SECOND, now)
        assert len(clock._heap) == 1  # one bucket for the three
        with anyio.fail_after(3):
            first = await handovers.receive()
            second = await handovers.receive()
    assert first.firings == second.firings == ["a", "b", "c"]
    assert second.when == first.when + timedelta(seconds=1)
    for handover in (first, second):
        assert handover.at >= handover.when.timestamp()  # never before its time
    for trigger_id, when, at in recorder.staged:
        assert at < when.timestamp(), f"{trigger_id} was staged only at its time"
    assert len(recorder.staged) == 6  # each trigger staged once per fire time


async def test_a_trigger_changed_or_removed_after_staging_does_not_fire() -> None:
    def change_once_all_are_staged(clock: CronClock[str], staged: list[str]) -> None:
        if len(staged) == 4:
            clock.unschedule("deleted")
            clock.schedule("changed", YEARLY, datetime.now(UTC))

    recorder = Recorder(on_stage=change_once_all_are_staged)
    async with recorder.running(lead=0.3) as (clock, handovers):
        now = datetime.now(UTC)
        for trigger_id in ("kept", "deleted", "changed", "also-kept"):
            clock.schedule(trigger_id, EVERY_SECOND, now)
        with anyio.fail_after(3):
            first = await handovers.receive()
            second = await handovers.receive()
    assert sorted(t for t, _, _ in recorder.staged[:4]) == [
        "also-kept",
        "changed",
        "deleted",
        "kept",
    ]
    assert first.firings == second.firings == ["also-kept", "kept"]
    assert second.when == first.when + timedelta(seconds=1)
    assert len(clock) == 3  # "changed" waits for new year


async def test_a_trigger_past_its_end_stops_and_one_not_yet_started_waits() -> None:
    recorder = Recorder()
    async with recorder.running(lead=0.2) as (clock, handovers):
        now = datetime.now(UTC)
        first_time = EVERY_SECOND.next_after(now)
        assert first_time is not None and now < first_time <= now + timedelta(seconds=1)
        ending = CronSchedule.parse("* * * * * *", end_at=first_time + timedelta(milliseconds=500))
        starting = CronSchedule.parse("* * * * * *", start_at=first_time + timedelta(seconds=1))
        clock.schedule("ending", ending, now)
        clock.schedule("starting", starting, now)
        clock.schedule("steady", EVERY_SECOND, now)
        with anyio.fail_after(4):
            fired = [await handovers.receive() for _ in range(4)]
    by_time: dict[datetime, list[str]] = {}
    for handover in fired:
        by_time.setdefault(handover.when, []).extend(handover.firings)
    assert {when: sorted(ids) for when, ids in by_time.items()} == {
        first_time: ["ending", "steady"],
        first_time + timedelta(seconds=1): ["starting", "steady"],
    }
    assert "ending" not in clock._schedules
