"""What the engine tells of itself: typed events, and the hub that hands them out.

Events are frozen values, named in the past tense, made at the moment the engine makes the
change they tell of (an execution's final status is then on its way to the store, in the same
group commit as whatever it causes), but for one: ``ExecutionFinished`` tells that a final
status is committed, which a crash no longer undoes; waiters (``await_result``, ``map``,
nested calls) hear of results from it. They go to two kinds of readers:

* **listeners**, the engine's own parts (``EventHub.listen``): called at once, on the event
  loop, in publish order; a listener must not block and must not raise.
* **subscribers** (``EventHub.subscribe``): async iterators, each with a bounded buffer. A
  subscriber that falls behind never slows the engine: what does not fit is dropped and
  counted, and the subscriber reads a ``SubscriberLagged(missed=N)`` in its place.

Producers ask ``wants(kind)`` before they build an event, so a kind nobody reads costs one set
lookup.
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import anyio

from ..log import logger
from ..models import belongs_to

__all__ = [
    "EVENT_KINDS",
    "CronMissed",
    "EngineEvent",
    "EventHub",
    "ExecutionCreated",
    "ExecutionFinished",
    "ExecutionLogged",
    "ExecutionStatusChanged",
    "ReplicaLost",
    "ReplicaStarted",
    "ServiceStateChanged",
    "SubscriberLagged",
    "Subscription",
    "TriggerFired",
    "TriggerSuppressed",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineEvent:
    """Something that happened in the engine, at ``at`` (unix seconds). An event about an
    execution has ``execution_id`` and ``function`` fields: what subscriptions filter on."""

    kind: ClassVar[str] = ""
    at: float

    def to_json(self) -> dict[str, Any]:
        """The event as JSON: its ``kind`` and its fields."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {"kind": self.kind, **fields}


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionCreated(EngineEvent):
    """A new execution was created (PENDING)."""

    kind: ClassVar[str] = "ExecutionCreated"
    execution_id: str
    function: str
    service: str
    trigger_id: str | None = None
    parent_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionStatusChanged(EngineEvent):
    """An execution changed status, or reported progress (then ``status`` is ``previous``)."""

    kind: ClassVar[str] = "ExecutionStatusChanged"
    execution_id: str
    function: str
    status: str
    previous: str
    attempt: int
    progress: int | None = None
    message: str = ""
    error_type: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionFinished(EngineEvent):
    """An execution's final status is committed: after a crash it is still so. Told after the
    ``ExecutionStatusChanged`` of that status, once the store has it."""

    kind: ClassVar[str] = "ExecutionFinished"
    execution_id: str
    function: str
    status: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionLogged(EngineEvent):
    """A running execution wrote a piece of output."""

    kind: ClassVar[str] = "ExecutionLogged"
    execution_id: str
    function: str
    stream: str
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicaStarted(EngineEvent):
    """A replica of a service is ready for work."""

    kind: ClassVar[str] = "ReplicaStarted"
    service: str
    replica_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicaLost(EngineEvent):
    """A ready replica went away without being stopped (it died, or was killed)."""

    kind: ClassVar[str] = "ReplicaLost"
    service: str
    replica_id: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceStateChanged(EngineEvent):
    """A service's state changed (Initializing, Active, Error, BuildFailed)."""

    kind: ClassVar[str] = "ServiceStateChanged"
    service: str
    state: str
    error_type: str | None = None
    error_message: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TriggerFired(EngineEvent):
    """A trigger's firing created an execution, now stored (a cron firing of the clock is
    told when it is dispatched, which comes first)."""

    kind: ClassVar[str] = "TriggerFired"
    trigger_id: str
    execution_id: str
    function: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TriggerSuppressed(EngineEvent):
    """A matching event, or a due cron time, created no execution; ``reason`` says why."""

    kind: ClassVar[str] = "TriggerSuppressed"
    trigger_id: str
    trigger: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CronMissed(EngineEvent):
    """Cron times that passed while the engine was down and were not run (misfire policy)."""

    kind: ClassVar[str] = "CronMissed"
    trigger_id: str
    trigger: str
    missed: int
    policy: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriberLagged(EngineEvent):
    """This subscriber fell behind: ``missed`` events were dropped here."""

    kind: ClassVar[str] = "SubscriberLagged"
    missed: int


#: Every kind of event, by name.
EVENT_KINDS: dict[str, type[EngineEvent]] = {
    kind.kind: kind
    for kind in (
        ExecutionCreated,
        ExecutionStatusChanged,
        ExecutionFinished,
        ExecutionLogged,
        ReplicaStarted,
        ReplicaLost,
        ServiceStateChanged,
        TriggerFired,
        TriggerSuppressed,
        CronMissed,
        SubscriberLagged,
    )
}

Listener = Callable[[Any], None]


class Subscription:
    """Events as an async iterator, from when it was made until it is closed (or the engine
    stops). Use it as ``async with engine.subscribe() as events: async for event in events``.

    ``kinds`` (None: all), ``function`` (its pinned revisions too) and ``execution_id`` select
    what it receives; an event that names no function or execution does not pass a filter on
    one. At most ``buffer`` events wait to be read.
    """

    def __init__(
        self,
        hub: EventHub,
        kinds: frozenset[type[EngineEvent]] | None,
        function: str | None,
        execution_id: str | None,
        buffer: int,
    ) -> None:
        if buffer < 1:
            raise ValueError(f"buffer must be at least 1, got {buffer}")
        self.kinds = kinds
        self.function = function
        self.execution_id = execution_id
        self._hub = hub
        self._buffer: deque[EngineEvent] = deque()
        self._room = buffer
        self._missed = 0
        self._ready = anyio.Event()
        self.closed = False

    def accepts(self, event: EngineEvent) -> bool:
        wanted = self.execution_id
        if wanted is not None and getattr(event, "execution_id", None) != wanted:
            return False
        if self.function is not None:
            named = getattr(event, "function", None)
            return named is not None and belongs_to(named, self.function)
        return True

    def offer(self, event: EngineEvent) -> None:
        """Called by the hub: keep the event if there is room, else count it as missed."""
        if len(self._buffer) >= self._room:
            self._missed += 1
            return
        if self._missed:
            self._buffer.append(SubscriberLagged(at=event.at, missed=self._missed))
            self._missed = 0
        self._buffer.append(event)
        self._ready.set()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._hub.unsubscribe(self)
            self._ready.set()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> EngineEvent:
        while not self._buffer:
            if self._missed:
                missed, self._missed = self._missed, 0
                return SubscriberLagged(at=time.time(), missed=missed)
            if self.closed:
                raise StopAsyncIteration
            await self._ready.wait()
            self._ready = anyio.Event()
        return self._buffer.popleft()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()


class EventHub:
    """Hands each published event to the listeners and subscribers of its kind."""

    def __init__(self) -> None:
        self._listeners: dict[type[EngineEvent], list[Listener]] = {}
        self._subscriptions: list[Subscription] = []
        self._wanted: set[type[EngineEvent]] = set()
        self._all_wanted = False
        #: Told the kinds the subscribers want, each time that changes (see ``subscribed``).
        self.on_subscribed: Callable[[frozenset[type[EngineEvent]]], None] | None = None
        self._subscribed: frozenset[type[EngineEvent]] = frozenset()

    def wants(self, kind: type[EngineEvent]) -> bool:
        """Whether anyone reads events of ``kind``: ask before building one."""
        return self._all_wanted or kind in self._wanted

    def publish(self, event: EngineEvent) -> None:
        """Hand ``event`` to its listeners, then to its subscribers."""
        kind = type(event)
        for listener in self._listeners.get(kind, ()):
            try:
                listener(event)
            except Exception:  # a part's bug must not stop the others from hearing it
                logger.exception("event_listener_failed", kind=event.kind)
        for subscription in self._subscriptions:
            if (subscription.kinds is None or kind in subscription.kinds) and (
                subscription.accepts(event)
            ):
                subscription.offer(event)

    def offer(self, event: EngineEvent) -> None:
        """Hand ``event`` to its subscribers alone: one another engine told of (its own
        parts heard it there)."""
        kind = type(event)
        for subscription in self._subscriptions:
            if (subscription.kinds is None or kind in subscription.kinds) and (
                subscription.accepts(event)
            ):
                subscription.offer(event)

    @property
    def subscribed(self) -> frozenset[type[EngineEvent]]:
        """The kinds some subscriber wants."""
        return self._subscribed

    def listen(self, kind: type[EngineEvent], listener: Listener) -> Callable[[], None]:
        """Call ``listener`` with each event of ``kind``; returns what stops it."""
        self._listeners.setdefault(kind, []).append(listener)
        self._rewant()

        def stop() -> None:
            listeners = self._listeners.get(kind, [])
            if listener in listeners:
                listeners.remove(listener)
                if not listeners:
                    del self._listeners[kind]
                self._rewant()

        return stop

    def subscribe(
        self,
        kinds: Iterable[type[EngineEvent] | str] | None = None,
        *,
        function: str | None = None,
        execution_id: str | None = None,
        buffer: int = 1000,
    ) -> Subscription:
        """A new subscription (see ``Subscription``); kinds by class or by name."""
        subscription = Subscription(self, _kinds(kinds), function, execution_id, buffer)
        self._subscriptions.append(subscription)
        self._rewant()
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)
            self._rewant()

    def close(self) -> None:
        """End every subscription (the engine stopped): each reads what it holds, then ends."""
        for subscription in list(self._subscriptions):
            subscription.close()

    def _rewant(self) -> None:
        subscribed: set[type[EngineEvent]] = set()
        self._all_wanted = False
        for subscription in self._subscriptions:
            if subscription.kinds is None:
                self._all_wanted = True
                subscribed.update(EVENT_KINDS.values())
            else:
                subscribed |= subscription.kinds
        self._wanted = subscribed | set(self._listeners)
        if subscribed != self._subscribed:
            self._subscribed = frozenset(subscribed)
            if self.on_subscribed is not None:
                self.on_subscribed(self._subscribed)


def _kinds(kinds: Iterable[type[EngineEvent] | str] | None) -> frozenset[type[EngineEvent]] | None:
    if kinds is None:
        return None
    chosen: set[type[EngineEvent]] = set()
    for kind in kinds:
        if isinstance(kind, str):
            found = EVENT_KINDS.get(kind)
            if found is None:
                known = ", ".join(EVENT_KINDS)
                raise ValueError(f"kinds: no event kind {kind!r} (known: {known})")
            chosen.add(found)
        elif isinstance(kind, type) and issubclass(kind, EngineEvent):
            chosen.add(kind)
        else:
            raise ValueError(f"kinds: {kind!r} is not an event kind")
    return frozenset(chosen)
