"""Cron schedules: the next fire time after a given instant, in a time zone, between bounds.

Pure: time is passed in, never read. All instants are timezone-aware; results are in UTC.

The spec has five fields (minute hour day-of-month month day-of-week) or six with seconds
first (second minute hour day-of-month month day-of-week). Fields are matched against the wall
clock of ``timezone``, and daylight-saving transitions follow these rules:

* A wall time that does not exist (the hour skipped when clocks go forward) fires when the
  clock jumps, shifted forward by the length of the gap: 02:30 on a spring-forward night in
  Europe/Berlin fires at 03:30 local time. Several skipped times that land on the same instant
  fire once.
* A wall time that happens twice (the hour repeated when clocks go back) fires once, at its
  first occurrence.

So a daily job fires exactly once every day, and an hourly job fires 23 or 24 times on the
days of the transitions rather than 25.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from ..errors import ConfigurationError

__all__ = ["CronError", "CronSchedule", "MisfirePlan", "NextFireTimes", "plan_misfires"]


class CronError(ConfigurationError):
    """A cron spec, time zone or bound that cannot be accepted."""


def zone(name: str) -> ZoneInfo:
    """The IANA time zone of that name; CronError if there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CronError(f"unknown IANA time zone {name!r}") from None


def _aware(value: datetime, what: str) -> datetime:
    if value.tzinfo is None:
        raise CronError(f"{what} must carry a time zone (got {value.isoformat()})")
    return value.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """When a cron trigger fires. Build with ``CronSchedule.parse``."""

    spec: str
    timezone: str = "UTC"
    start_at: datetime | None = None
    end_at: datetime | None = None

    @classmethod
    def parse(
        cls,
        spec: str,
        timezone: str = "UTC",
        start_at: datetime | None = None,
        end_at: datetime | None = None,
    ) -> CronSchedule:
        """Validate and build; a bad spec, zone or bound raises CronError naming it."""
        fields = spec.split()
        if len(fields) not in (5, 6):
            raise CronError(
                f"cron spec {spec!r} has {len(fields)} fields; it takes 5 "
                "(minute hour day month weekday) or 6 (second first)"
            )
        _check_spec(" ".join(fields))
        zone(timezone)
        start = _aware(start_at, "start_at") if start_at else None
        end = _aware(end_at, "end_at") if end_at else None
        if start and end and end <= start:
            raise CronError(
                f"end_at ({end.isoformat()}) is not after start_at ({start.isoformat()})"
            )
        return cls(" ".join(fields), timezone, start, end)

    def next_after(self, after: datetime) -> datetime | None:
        """The first fire time strictly after ``after`` (UTC), or None once past ``end_at``."""
        after = _aware(after, "after")
        if self.start_at is not None and after < self.start_at:
            after = self.start_at - timedelta(microseconds=1)
        where = zone(self.timezone)
        iterator = croniter(
            self.spec,
            _walk_start(after, where),
            ret_type=datetime,
            second_at_beginning=len(self.spec.split()) == 6,
        )
        # Walk wall-clock times until one maps to an instant after ``after``: that skips the
        # second pass through a repeated hour and merges skipped times that shift onto one.
        for _ in range(10_000):
            wall: datetime = iterator.get_next(datetime)
            instant = _to_utc(wall, where)
            if instant <= after:
                continue
            if self.end_at is not None and instant > self.end_at:
                return None
            return instant
        return None  # a spec like "0 0 30 2 *" never fires

    def fire_times(self, after: datetime, until: datetime) -> Iterator[datetime]:
        """Every fire time in (after, until], oldest first."""
        current = self.next_after(after)
        while current is not None and current <= until:
            yield current
            current = self.next_after(current)


@lru_cache(maxsize=1024)
def _check_spec(spec: str) -> None:
    """Raise CronError for a spec croniter refuses. Cached: building a croniter costs tens of
    microseconds, and thousands of triggers often share one spec."""
    try:
        croniter(spec, second_at_beginning=len(spec.split()) == 6)
    except (ValueError, KeyError) as exc:
        raise CronError(f"invalid cron spec {spec!r}: {exc}") from None


class NextFireTimes:
    """``CronSchedule.next_after`` for many triggers that share schedules, computed once.

    An answer ``next_after(a) == b`` holds for every instant in ``[a, b)`` (no fire time lies
    between), and ``None`` holds for every instant after ``a``; so each schedule's latest answer
    is kept with that range and serves any ``after`` inside it. Pure: time is passed in.
    """

    def __init__(self, limit: int = 4096) -> None:
        self._limit = limit
        self._known: dict[CronSchedule, tuple[datetime, datetime | None]] = {}

    def next_after(self, schedule: CronSchedule, after: datetime) -> datetime | None:
        after = _aware(after, "after")
        known = self._known.get(schedule)
        if known is not None:
            since, answer = known
            if since <= after and (answer is None or after < answer):
                return answer
        answer = schedule.next_after(after)
        if len(self._known) >= self._limit:
            self._known.clear()  # schedules come and go: forget them all rather than track use
        self._known[schedule] = (after, answer)
        return answer


def _walk_start(after: datetime, zone: ZoneInfo) -> datetime:
    """The naive wall time to walk fire times from. Usually the wall clock at ``after``; but
    less than a gap's length after clocks went forward, the skipped wall times (which fire
    shifted by the gap, so after ``after``) lie behind the wall clock: start before them."""
    offset = after.astimezone(zone).utcoffset()
    earlier = (after - timedelta(days=1)).astimezone(zone).utcoffset()
    assert offset is not None and earlier is not None  # a ZoneInfo always has one
    gap = offset - earlier
    if gap > timedelta(0) and (after - gap).astimezone(zone).utcoffset() != offset:
        offset = earlier
    return (after + offset).replace(tzinfo=None)


def _to_utc(wall: datetime, zone: ZoneInfo) -> datetime:
    """A naive wall time in ``zone`` as an instant. fold=0 picks the first occurrence of a
    repeated time, and reads a skipped time with the offset from before the jump, which is
    the same as shifting it forward by the gap (PEP 495)."""
    return wall.replace(tzinfo=zone, fold=0).astimezone(UTC)


@dataclass(frozen=True, slots=True)
class MissedTimes:
    """The fire times in (cursor, now]: how many, and the latest of them (at most a limit)."""

    total: int
    times: list[datetime]


def missed_times(
    schedule: CronSchedule, cursor: datetime, now: datetime, limit: int
) -> MissedTimes:
    """The fire times of ``schedule`` in (cursor, now], the latest ``limit`` of them listed."""
    latest: deque[datetime] = deque(maxlen=limit)
    total = 0
    for when in schedule.fire_times(cursor, now):
        latest.append(when)
        total += 1
    return MissedTimes(total, list(latest))


@dataclass(frozen=True, slots=True)
class MisfirePlan:
    """What to do with the fire times missed while the engine was down."""

    run: tuple[datetime, ...]
    missed: tuple[datetime, ...]
    missed_beyond: int  # missed times not listed (more than the listing limit)


def plan_misfires(
    schedule: CronSchedule,
    policy: str,
    grace: float,
    cursor: datetime,
    now: datetime,
    limit: int = 10_000,
    fired: Collection[datetime] = (),
) -> MisfirePlan:
    """Split the fire times in (cursor, now] by the misfire policy: ``skip`` runs none,
    ``run_once`` runs the latest, ``catch_up`` runs those within ``grace`` seconds of ``now``.
    The latest ``limit`` times are listed; older ones are only counted. Times in ``fired``
    were fired already (by an engine that stopped before it stored the cursor past them):
    neither run nor missed, and ``run_once`` runs nothing if the latest is one of them."""
    listed = missed_times(schedule, cursor, now, limit)
    total, times = listed.total, listed.times
    beyond = total - len(times)
    if fired:
        done = set(fired)
        ran_latest = bool(times) and times[-1] in done
        times = [when for when in times if when not in done]
        if policy == "run_once" and ran_latest:
            return MisfirePlan((), tuple(times), beyond)
    if not times:
        return MisfirePlan((), (), beyond)
    if policy == "skip":
        return MisfirePlan((), tuple(times), beyond)
    if policy == "run_once":
        return MisfirePlan((times[-1],), tuple(times[:-1]), beyond)
    if policy != "catch_up":
        raise CronError(f"unknown misfire policy {policy!r} (skip, run_once or catch_up)")
    oldest = now - timedelta(seconds=grace)
    return MisfirePlan(
        tuple(t for t in times if t >= oldest), tuple(t for t in times if t < oldest), beyond
    )
