"""Deadlines for many keys, cheap to arm, move and drop.

Keys armed with the same duration expire in the order they were armed (time only moves
forward), so each duration keeps an insertion-ordered dict and its first entry is its earliest
deadline. Arming, re-arming (a progress update) and disarming are O(1), and nothing stale is left
behind, unlike a heap with lazy deletion where every finished execution would leave an entry
until its timeout passed. There are few distinct durations, so the earliest overall is cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable


class DeadlineQueue:
    """Deadlines on a monotonic clock; ``on_earlier`` is called when the earliest one moves
    earlier, so the task sleeping until it can wake and sleep again for less."""

    def __init__(self, on_earlier: Callable[[], None] = lambda: None) -> None:
        self._groups: dict[float, dict[Hashable, float]] = {}
        self._duration_of: dict[Hashable, float] = {}
        self._on_earlier = on_earlier

    def __len__(self) -> int:
        return len(self._duration_of)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._duration_of

    def arm(self, key: Hashable, duration: float, now: float) -> None:
        """Expire ``key`` at ``now + duration``, replacing any deadline it had."""
        self.disarm(key)
        group = self._groups.get(duration)
        if group:  # it goes last in its group, behind the group's first: no earlier deadline
            group[key] = now + duration
            self._duration_of[key] = duration
            return
        earliest = self.next_deadline()
        self._groups[duration] = {key: now + duration}
        self._duration_of[key] = duration
        if earliest is None or now + duration < earliest:
            self._on_earlier()

    def disarm(self, key: Hashable) -> None:
        duration = self._duration_of.pop(key, None)
        if duration is not None:
            group = self._groups[duration]
            del group[key]
            if not group:
                del self._groups[duration]

    def next_deadline(self) -> float | None:
        """The earliest deadline, or None when nothing is armed."""
        firsts = [next(iter(group.values())) for group in self._groups.values()]
        return min(firsts) if firsts else None

    def pop_expired(self, now: float) -> list[Hashable]:
        """Disarm and return every key whose deadline is at or before ``now``."""
        expired: list[Hashable] = []
        for duration in list(self._groups):
            group = self._groups[duration]
            for key, deadline in list(group.items()):
                if deadline > now:
                    break
                expired.append(key)
                del group[key]
                del self._duration_of[key]
            if not group:
                del self._groups[duration]
        return expired
