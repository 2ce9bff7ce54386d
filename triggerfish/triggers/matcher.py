"""Matching events to event triggers, with once keys and loop protection. Pure.

Triggers are indexed by (resource, action), each with its filter compiled once, so an event
costs only the triggers that listen to its resource and action, however many others exist.
Within one (resource, action), a filter that requires a plain string at a path (``{"dir":
"/in"}``, also inside ``$and``) is filed under that string: an event runs only the filters
filed under the strings it carries at those paths, plus the filters with no such key. A filed
filter is compiled without that equality, which finding it under its string has shown: a filter
that is only ``{"dir": "/in"}`` runs nothing at all.

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
from .filters import Predicate, compile_filter, split_on_key, strings_at

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
    key: tuple[str, str] | None  # the (path, string) it is filed under
    predicate: Predicate  # the rest of its filter (all of it, with no key)

    @classmethod
    def of(cls, trigger_id: str, spec: EventTriggerSpec) -> _Entry:
        key, rest = split_on_key(spec.filter)
        return cls(trigger_id, spec, key, compile_filter(rest))


class _Bucket:
    """The triggers of one (resource, action): by required string, and the rest."""

    __slots__ = ("by_path", "unkeyed")

    def __init__(self) -> None:
        self.by_path: dict[str, dict[str, dict[str, _Entry]]] = {}  # path -> string -> id
        self.unkeyed: dict[str, _Entry] = {}

    def add(self, entry: _Entry) -> None:
        key = entry.key
        if key is None:
            self.unkeyed[entry.trigger_id] = entry
        else:
            path, value = key
            self.by_path.setdefault(path, {}).setdefault(value, {})[entry.trigger_id] = entry

    def remove(self, entry: _Entry) -> None:
        key = entry.key
        if key is None:
            del self.unkeyed[entry.trigger_id]
            return
        path, value = key
        by_value = self.by_path[path]
        del by_value[value][entry.trigger_id]
        if not by_value[value]:
            del by_value[value]
            if not by_value:
                del self.by_path[path]

    def __bool__(self) -> bool:
        return bool(self.unkeyed or self.by_path)

    def candidates(self, body: Any) -> list[_Entry]:
        """The entries whose filter may match ``body``, in no particular order."""
        found = list(self.unkeyed.values())
        for path, by_value in self.by_path.items():
            for value in strings_at(body, path):
                entries = by_value.get(value)
                if entries:
                    found.extend(entries.values())
        return found


class TriggerIndex:
    """The active event triggers, by (resource, action)."""

    def __init__(self, max_depth: int = 10) -> None:
        self.max_depth = max_depth
        self._by_key: dict[tuple[str, str], _Bucket] = {}
        self._keys_of: dict[str, tuple[_Entry, list[tuple[str, str]]]] = {}

    def __len__(self) -> int:
        return len(self._keys_of)

    def add(self, trigger_id: str, spec: EventTriggerSpec) -> None:
        """Index an active trigger (replacing what it was); the filter must already be valid."""
        self.remove(trigger_id)
        entry = _Entry.of(trigger_id, spec)
        keys = [(spec.resource, action) for action in spec.actions]
        for key in keys:
            self._by_key.setdefault(key, _Bucket()).add(entry)
        self._keys_of[trigger_id] = (entry, keys)

    def remove(self, trigger_id: str) -> None:
        found = self._keys_of.pop(trigger_id, None)
        if found is None:
            return
        entry, keys = found
        for key in keys:
            bucket = self._by_key[key]
            bucket.remove(entry)
            if not bucket:
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
        bucket = self._by_key.get((resource, action))
        if bucket is None:
            return [], []
        firings: list[Firing] = []
        suppressions: list[Suppression] = []
        for entry in bucket.candidates(body):
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
