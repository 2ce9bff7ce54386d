"""The event bus: events in, trigger firings out, every suppression counted and logged.

``publish`` matches an event against the active event triggers (see ``triggers.matcher``) and
asks the engine to create an execution for each firing, Once firings with their fire-record key
so the store writes both in one transaction. It runs synchronously on the event loop, so the
executions an event causes join the same group commit as whatever caused the event: an
execution's status change and the pipeline step it triggers are committed together.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from ..log import logger
from ..models import EventTriggerSpec, TriggerRecord, id_salt
from ..triggers.matcher import TriggerIndex

T = TypeVar("T")

#: Creates an execution for a firing: (trigger, body, lineage, event summary, once key);
#: returns what stands for it, or None if it made none.
CreateExecution = Callable[
    [TriggerRecord, Any, tuple[str, ...], dict[str, Any], tuple[str, str] | None], T | None
]


def new_event_id() -> str:
    return f"evt-{time.time_ns():016x}{id_salt()}"


class EventBus(Generic[T]):
    """Active event triggers and what events do to them."""

    def __init__(
        self,
        create: CreateExecution[T],
        suppressed: Callable[[TriggerRecord, str, float], None],
        max_depth: int = 10,
    ) -> None:
        self.index = TriggerIndex(max_depth)
        self.triggers: dict[str, TriggerRecord] = {}
        self._create = create
        self._suppressed = suppressed

    def watch(self, trigger: TriggerRecord) -> None:
        """Start (or stop, when inactive) matching events for an event trigger."""
        assert isinstance(trigger.spec, EventTriggerSpec)
        self.triggers[trigger.id] = trigger
        if trigger.spec.active:
            self.index.add(trigger.id, trigger.spec)
        else:
            self.index.remove(trigger.id)

    def forget(self, trigger_id: str) -> None:
        self.triggers.pop(trigger_id, None)
        self.index.remove(trigger_id)

    def listens_to(self, resource: str, action: str) -> bool:
        return self.index.listens_to(resource, action)

    def publish(
        self,
        resource: str,
        action: str,
        body: Any,
        resource_id: str | None = None,
        lineage: Sequence[str] = (),
    ) -> list[T]:
        """Match an event; returns the executions queued for creation (a Once one may still
        be refused by its fire record when committed)."""
        event_id = new_event_id()
        firings, suppressions = self.index.match(
            resource, action, body, resource_id, lineage, event_id
        )
        now = time.time()
        for suppression in suppressions:
            trigger = self.triggers[suppression.trigger_id]
            self._suppressed(trigger, suppression.reason, now)
            logger.warning(
                "trigger_suppressed",
                trigger_id=trigger.id,
                trigger=trigger.spec.name,
                event_id=event_id,
                resource=resource,
                action=action,
                resource_id=resource_id,
                reason=suppression.reason,
            )
        created = []
        summary = {
            "id": event_id,
            "resource": resource,
            "action": action,
            "resource_id": resource_id,
        }
        for firing in firings:
            trigger = self.triggers[firing.trigger_id]
            once = (trigger.id, firing.once_key) if firing.once_key is not None else None
            record = self._create(trigger, body, (*lineage, trigger.id), summary, once)
            if record is not None:
                created.append(record)
        return created
