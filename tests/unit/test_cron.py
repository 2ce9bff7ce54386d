"""Cron schedules over a clock that is passed in, including a zone with daylight saving."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from triggerfish.triggers.cron import CronError, CronSchedule, NextFireTimes

BERLIN = ZoneInfo("Europe/Berlin")


def local(times: list[datetime]) -> list[str]:
    return [t.astimezone(BERLIN).strftime("%m-%d %H:%M%z") for t in times]


def test_five_and_six_field_specs() -> None:
    minutely = CronSchedule.parse("*/20 * * * *")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert minutely.next_after(start) == start + timedelta(minutes=20)
    assert minutely.next_after(start + timedelta(seconds=1)) == start + timedelta(minutes=20)
    seconds = CronSchedule.parse("*/20 * * * * *")  # seconds first
    assert list(seconds.fire_times(start, start + timedelta(minutes=1))) == [
        start + timedelta(seconds=s) for s in (20, 40, 60)
    ]


def test_time_zone_start_and_end() -> None:
    schedule = CronSchedule.parse(
        "0 9 * * *",
        "Europe/Berlin",
        start_at=datetime(2026, 1, 10, tzinfo=UTC),
        end_at=datetime(2026, 1, 12, 12, tzinfo=UTC),
    )
    fires = list(
        schedule.fire_times(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC))
    )
    assert local(fires) == ["01-10 09:00+0100", "01-11 09:00+0100", "01-12 09:00+0100"]
    assert schedule.next_after(datetime(2026, 1, 12, 9, tzinfo=UTC)) is None


def test_spring_forward_daily_job_fires_once_shifted_by_the_gap() -> None:
    daily = CronSchedule.parse("30 2 * * *", "Europe/Berlin")
    fires = list(
        daily.fire_times(datetime(2026, 3, 27, tzinfo=UTC), datetime(2026, 3, 31, tzinfo=UTC))
    )
    assert local(fires) == [
        "03-27 02:30+0100",
        "03-28 02:30+0100",
        "03-29 03:30+0200",  # 02:30 does not exist that night
        "03-30 02:30+0200",
    ]


def test_spring_forward_skipped_quarters_fire_once_at_the_jump() -> None:
    quarterly = CronSchedule.parse("*/15 * * * *", "Europe/Berlin")
    start = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)  # 01:30 local, before the jump
    fires = list(quarterly.fire_times(start, start + timedelta(hours=1, minutes=20)))
    assert local(fires) == [
        "03-29 01:45+0100",
        "03-29 03:00+0200",
        "03-29 03:15+0200",
        "03-29 03:30+0200",
        "03-29 03:45+0200",
    ]


def test_fall_back_repeated_hour_fires_once() -> None:
    hourly = CronSchedule.parse("0 * * * *", "Europe/Berlin")
    start = datetime(2026, 10, 24, 22, tzinfo=UTC)  # local midnight of a 25-hour day
    fires = list(hourly.fire_times(start, start + timedelta(hours=25)))
    assert len(fires) == 24
    assert local(fires)[:3] == ["10-25 01:00+0200", "10-25 02:00+0200", "10-25 03:00+0100"]
    assert fires == sorted(set(fires))


@pytest.mark.parametrize(
    ("spec", "zone", "words"),
    [
        ("* * *", "UTC", "has 3 fields"),
        ("61 * * * *", "UTC", "invalid cron spec"),
        ("* * * * * * *", "UTC", "has 7 fields"),
        ("0 * * * *", "Mars/Olympus", "unknown IANA time zone"),
    ],
)
def test_bad_specs_are_refused_clearly(spec: str, zone: str, words: str) -> None:
    with pytest.raises(CronError, match=words):
        CronSchedule.parse(spec, zone)


def test_bounds_must_be_aware_and_ordered() -> None:
    with pytest.raises(CronError, match="start_at must carry a time zone"):
        CronSchedule.parse("0 * * * *", start_at=datetime(2026, 1, 1))
    with pytest.raises(CronError, match="is not after start_at"):
        CronSchedule.parse(
            "0 * * * *",
            start_at=datetime(2026, 1, 2, tzinfo=UTC),
            end_at=datetime(2026, 1, 1, tzinfo=UTC),
        )


def test_misfire_policies_over_a_passed_in_clock() -> None:
    from triggerfish.triggers.cron import plan_misfires

    every_minute = CronSchedule.parse("* * * * *")
    down_at = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    back_at = down_at + timedelta(minutes=10, seconds=30)  # ten fire times missed
    minutes = [down_at + timedelta(minutes=m) for m in range(1, 11)]

    skip = plan_misfires(every_minute, "skip", 0, down_at, back_at)
    assert skip.run == () and list(skip.missed) == minutes

    once = plan_misfires(every_minute, "run_once", 0, down_at, back_at)
    assert once.run == (minutes[-1],) and list(once.missed) == minutes[:-1]

    catch_up = plan_misfires(every_minute, "catch_up", 200, down_at, back_at)
    assert list(catch_up.run) == minutes[-3:]  # within 200 s of now
    assert list(catch_up.missed) == minutes[:-3]

    nothing = plan_misfires(every_minute, "catch_up", 200, down_at, down_at + timedelta(seconds=30))
    assert nothing.run == () and nothing.missed == ()


def test_times_fired_already_are_neither_run_again_nor_missed() -> None:
    """A leader of the cron clock that died after firing some times, before it stored the
    cursor past them: its successor leaves those out of its plan."""
    from triggerfish.triggers.cron import plan_misfires

    every_minute = CronSchedule.parse("* * * * *")
    cursor = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    now = cursor + timedelta(minutes=10, seconds=30)
    minutes = [cursor + timedelta(minutes=m) for m in range(1, 11)]
    fired = {minutes[0], minutes[1]}

    once = plan_misfires(every_minute, "run_once", 0, cursor, now, fired=fired)
    assert once.run == (minutes[-1],) and list(once.missed) == minutes[2:-1]
    latest_fired = plan_misfires(every_minute, "run_once", 0, cursor, now, fired={minutes[-1]})
    assert latest_fired.run == () and list(latest_fired.missed) == minutes[:-1]
    skip = plan_misfires(every_minute, "skip", 0, cursor, now, fired=fired)
    assert skip.run == () and list(skip.missed) == minutes[2:]
    catch_up = plan_misfires(every_minute, "catch_up", 200, cursor, now, fired={minutes[-2]})
    assert list(catch_up.run) == [minutes[-3], minutes[-1]]
    all_fired = plan_misfires(every_minute, "catch_up", 200, cursor, now, fired=set(minutes))
    assert all_fired.run == () and all_fired.missed == () and all_fired.missed_beyond == 0


def test_misfire_listing_keeps_the_latest_times() -> None:
    from triggerfish.triggers.cron import plan_misfires

    every_second = CronSchedule.parse("* * * * * *")
    start = datetime(2026, 5, 1, tzinfo=UTC)
    plan = plan_misfires(every_second, "catch_up", 5, start, start + timedelta(hours=1), limit=100)
    assert plan.missed_beyond == 3600 - 100
    assert len(plan.run) == 6 and plan.run[-1] == start + timedelta(hours=1)  # [now-5s, now]


@pytest.mark.parametrize(
    ("spec", "zone"),
    [("*/15 * * * *", "Europe/Berlin"), ("30 2 * * *", "Europe/Berlin"), ("*/7 * * * * *", "UTC")],
)
def test_shared_next_fire_times_agree_with_the_schedule(spec: str, zone: str) -> None:
    schedule = CronSchedule.parse(spec, zone, end_at=datetime(2026, 10, 26, tzinfo=UTC))
    shared = NextFireTimes()
    # Across both transitions of 2026 and past end_at, at uneven steps, forwards and back.
    for start in (datetime(2026, 3, 28, 23, tzinfo=UTC), datetime(2026, 10, 24, 23, tzinfo=UTC)):
        instants = [start + timedelta(seconds=97 * i) for i in range(3000)]
        for after in instants + instants[::-7]:
            assert shared.next_after(schedule, after) == schedule.next_after(after), after


def test_shared_next_fire_times_forget_beyond_their_limit() -> None:
    shared = NextFireTimes(limit=2)
    after = datetime(2026, 1, 1, tzinfo=UTC)
    for minute in range(5):
        schedule = CronSchedule.parse(f"{minute} * * * *")
        assert shared.next_after(schedule, after) == after + timedelta(minutes=minute or 60)
    assert len(shared._known) <= 2
    with pytest.raises(CronError, match="time zone"):
        shared.next_after(schedule, datetime(2026, 1, 1))


def test_a_time_skipped_by_spring_forward_still_fires_when_asked_from_inside_the_gap() -> None:
    daily = CronSchedule.parse("30 2 * * *", "Europe/Berlin")
    jump = datetime(2026, 3, 29, 1, tzinfo=UTC)  # 02:00 CET becomes 03:00 CEST
    shifted = datetime(2026, 3, 29, 1, 30, tzinfo=UTC)  # 02:30, shifted to 03:30 CEST
    for after in (jump - timedelta(minutes=1), jump, jump + timedelta(minutes=1)):
        assert daily.next_after(after) == shifted
    following = daily.next_after(shifted)
    assert following is not None and local([following]) == ["03-30 02:30+0200"]
