"""Events of the other engines on a shared store, for this engine's subscribers.

A subscriber of one engine (``engine.subscribe``, ``GET /events/stream``, log following)
hears of the executions and triggers of every engine on the store. Each engine says which
kinds its subscribers want (``Store.set_watching``, told on ``Channel.WATCHING``); while some
other engine wants a kind, this one tells each event of that kind it publishes on
``Channel.EVENTS``, as JSON, and the engines that watch hand what they hear to their
subscribers alone, never to their own parts (a pipeline step fires once, on the engine where
the status changed). Nothing is told while nobody watches. What cannot be told (a store out
of reach) is missed by the subscribers elsewhere, as a lagging subscriber misses events;
never by the engine.

Replica and service events stay with their engine: they tell of its own replicas.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import anyio
from anyio.abc import TaskStatus

from .. import _json
from ..errors import StoreUnavailableError
from ..log import logger
from ..store.abc import Channel, Store
from .events import (
    EVENT_KINDS,
    CronMissed,
    EngineEvent,
    EventHub,
    ExecutionCreated,
    ExecutionFinished,
    ExecutionLogged,
    ExecutionStatusChanged,
    TriggerFired,
    TriggerSuppressed,
)

__all__ = ["Forwarding"]

#: The kinds engines tell each other.
TOLD: frozenset[type[EngineEvent]] = frozenset(
    {
        ExecutionCreated,
        ExecutionStatusChanged,
        ExecutionFinished,
        ExecutionLogged,
        TriggerFired,
        TriggerSuppressed,
        CronMissed,
    }
)
#: An event told is at most this long, as JSON (a notification holds less than 8,000 bytes):
#: a longer log line is cut in what is told, and marked; the whole line is in the logs.
TOLD_BYTES = 7000
CUT = "[triggerfish: cut here; the whole line is in the execution's logs]"


class Forwarding:
    """Tells other engines' subscribers of this engine's events, and this engine's of
    theirs; on a store of one engine, nothing."""

    def __init__(self, hub: EventHub, store: Store) -> None:
        self._hub = hub
        self._store = store
        self._telling: dict[type[EngineEvent], Callable[[], None]] = {}  # kind -> stop
        self._changed = True  # what this engine watches, or what others do, changed
        self._wake: anyio.Event | None = None
        if store.shared:
            hub.on_subscribed = lambda _: self._stir()
            store.hear(Channel.EVENTS, self._heard, on_demand=True)
            store.hear(Channel.WATCHING, lambda _: self._stir())

    def _stir(self) -> None:
        self._changed = True
        if self._wake is not None:
            self._wake.set()

    async def run(self, *, task_status: TaskStatus[None]) -> None:
        """Keep the store's word of what this engine watches, and the telling of what the
        others watch, up to date (a store out of reach: at the next change)."""
        self._wake = anyio.Event()
        task_status.started()
        if not self._store.shared:
            return
        watching: frozenset[str] | None = None
        try:
            while True:
                if not self._changed:
                    await self._wake.wait()
                self._wake = anyio.Event()
                self._changed = False
                wanted = frozenset(kind.kind for kind in self._hub.subscribed & TOLD)
                try:
                    if wanted != watching:
                        # Heard before the others are told to tell, and until they stop.
                        if wanted:
                            await self._store.hear_now(Channel.EVENTS, True)
                        await self._store.set_watching(wanted)
                        if not wanted:
                            await self._store.hear_now(Channel.EVENTS, False)
                        watching = wanted
                    self._tell({EVENT_KINDS[k] for k in await self._store.watched()} & TOLD)
                except StoreUnavailableError as exc:
                    logger.warning("engine_watching_not_told", error=str(exc))
        finally:
            self._tell(set())

    def _tell(self, kinds: set[type[EngineEvent]]) -> None:
        """Tell the events of ``kinds`` from now on, and no others."""
        for kind in set(self._telling) - kinds:
            self._telling.pop(kind)()
        for kind in kinds - set(self._telling):
            self._telling[kind] = self._hub.listen(kind, self._forward)

    def _forward(self, event: EngineEvent) -> None:
        told = _json.dumps(event.to_json())
        while len(told.encode()) > TOLD_BYTES and isinstance(event, ExecutionLogged):
            cut = event.text[: len(event.text) // 2]
            event = dataclasses.replace(event, text=f"{cut}\n{CUT}\n")
            told = _json.dumps(event.to_json())
        self._store.tell(Channel.EVENTS, [told])

    def _heard(self, messages: Sequence[str] | None) -> None:
        if messages is None:
            return  # missed: subscribers miss them, as a lagging one does
        if not self._hub.subscribed:
            return
        for message in messages:
            try:
                fields = _json.loads(message)
                kind = EVENT_KINDS[fields.pop("kind")]
                event = kind(**fields)
            except (ValueError, KeyError, TypeError) as exc:  # another version's event
                logger.warning("engine_event_unread", error=str(exc)[:300])
                continue
            self._hub.offer(event)
