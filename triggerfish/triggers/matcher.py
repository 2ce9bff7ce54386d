"""Matching events to event triggers, with once keys and loop protection. Pure.

Triggers are indexed by (resource, action), each with its filter compiled once, so an event
costs only the triggers that listen to its resource and action, however many others exist.

Loop protection: an event carries the lineage of triggers whose executions led to it. A
trigger whose id already appears in the lineage more than its ``loop_limit`` does not fire,
nor does any trigger once the lineage has reached the global depth cap. Both are returned as
suppressions with a reason, for the engine to record and log; none is dropped silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..models import EventTriggerSpec
from .filters import Predicate, compile_filter

__all__ = ["Firing", "Suppression", "TriggerIndex"]


@dataclass(frozen=True, slots=True)
class Firing:
    """A trigger to fire. ``once_key`` is set for Once mode: the key of its fire record."""

    trigger_id: str
    spec: EventTriggerSpec
    once_key: str | None


@dataclass(frozen=True, slots=True)
class Suppression:
    trigger_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class _Entry:
    trigger_id: str
    spec: EventTriggerSpec
    predicate: Predicate


class TriggerIndex:
    """The active event triggers, by (resource, action)."""

    def __init__(self, max_depth: int = 10) -> None:
        self.max_depth = max_depth
        self._by_key: dict[tuple[str, str], dict[str, _Entry]] = {}
        self._keys_of: dict[str, list[tuple[str, str]]] = {}

    def __len__(self) -> int:
        return len(self._keys_of)

    def add(self, trigger_id: str, spec: EventTriggerSpec) -> None:
        """Index an active trigger (replacing what it was); the filter must already be valid."""
        self.remove(trigger_id)
        entry = _Entry(trigger_id, spec, compile_filter(spec.filter))
        keys = [(spec.resource, action) for action in spec.actions]
        for key in keys:
            self._by_key.setdefault(key, {})[trigger_id] = entry
        self._keys_of[trigger_id] = keys

    def remove(self, trigger_id: str) -> None:
        for key in self._keys_of.pop(trigger_id, []):
            entries = self._by_key[key]
            del entries[trigger_id]
            if not entries:
                del self._by_key[key]

    def listens_to(self, resource: str, action: str) -> bool:
        return (resource, action) in self._by_key

    def match(
        self,
        resource: str,
        action: str,
        body: Any,
        resource_id: str | None,
        lineage: Sequence[str] = (),
        event_id: str = "",
    ) -> tuple[list[Firing], list[Suppression]]:
        """The triggers an event fires, and those it would fire but loop protection stops.

        A Once trigger's fire record key is the resource id (the event id when the event has
        none, so such an event fires it once)."""
        entries = self._by_key.get((resource, action))
        if not entries:
            return [], []
        firings: list[Firing] = []
        suppressions: list[Suppression] = []
        for entry in entries.values():
            if not entry.predicate(body):
                continue
            reason = self._loop_reason(entry, lineage)
            if reason is not None:
                suppressions.append(Suppression(entry.trigger_id, reason))
                continue
            once = None
            if entry.spec.execution_mode == "Once":
                once = resource_id if resource_id is not None else f"event:{event_id}"
            firings.append(Firing(entry.trigger_id, entry.spec, once))
        return firings, suppressions

    def _loop_reason(self, entry: _Entry, lineage: Sequence[str]) -> str | None:
        if len(lineage) >= self.max_depth:
            return (
                f"the event's lineage is {len(lineage)} triggers deep (the cap is {self.max_depth})"
            )
        own = lineage.count(entry.trigger_id)
        if own > entry.spec.loop_limit:
            return (
                f"the event was caused by this trigger's own executions ({own} deep; "
                f"loop_limit is {entry.spec.loop_limit})"
            )
        return None
