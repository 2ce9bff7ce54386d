"""What pools and their replicas report, turned into lifecycle changes and engine events.

This is the pools' ``PoolListener``. It reads the replica protocol (RUN was sent, DONE, LOG,
PROGRESS, YIELD; CALL goes to the nested calls part) and says what each message means for an
execution through the lifecycle. A message that is not of the protocol's shape (a replica that
is broken, or hostile) ends that replica, never the engine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..errors import ErrorTriple, ServiceInitError
from ..log import logger
from ..models import ExecutionRecord, FunctionSpec, ServiceState
from .events import EventHub, ReplicaLost, ReplicaStarted, ServiceStateChanged
from .lifecycle import Lifecycle
from .replica import protocol
from .scheduler import ServicePool, Slots

#: Serves a nested call (a CALL message) from a replica: (the replica's slots, the message).
CallHandler = Callable[[Slots, tuple[Any, ...]], None]


class PoolReports:
    """The engine's ear on its pools."""

    def __init__(self, lifecycle: Lifecycle, hub: EventHub, on_call: CallHandler) -> None:
        self._lifecycle = lifecycle
        self._hub = hub
        self._on_call = on_call
        self._told_state: dict[str, ServiceState] = {}

    def dispatched(self, record: ExecutionRecord, slots: Slots, spec: FunctionSpec) -> None:
        self._lifecycle.started(record, slots, spec)

    def replica_ready(self, pool: ServicePool, slots: Slots) -> None:
        if self._hub.wants(ReplicaStarted):
            self._hub.publish(
                ReplicaStarted(at=time.time(), service=pool.spec.name, replica_id=slots.replica.id)
            )
        self._tell_state(pool)

    def replica_messages(self, pool: ServicePool, slots: Slots, messages: list[Any]) -> None:
        lifecycle = self._lifecycle
        now = time.time()
        try:
            for message in messages:
                kind = message[0]
                if kind == protocol.DONE:
                    record = slots.assigned.get(message[1])
                    if record is not None:
                        pool.release(slots, record)
                        lifecycle.ended(record.id, message[2], message[3], message[4], now)
                    continue
                if kind == protocol.CALL:
                    self._on_call(slots, message)
                    continue
                record = slots.assigned.get(message[1])
                if record is None or record.id not in lifecycle.placed:
                    continue  # not its execution any more (put back as the engine stops)
                if kind == protocol.LOG:
                    lifecycle.logged(record, message[2], message[3], now)
                elif kind == protocol.PROGRESS:
                    lifecycle.progressed(record, message[2], message[3], now)
                elif kind == protocol.YIELD:
                    lifecycle.yielded(record, message[2], message[3])
        except (IndexError, KeyError, TypeError, ValueError, AttributeError):
            logger.exception("replica_message_refused", replica_id=slots.replica.id)
            slots.replica.kill()

    def replica_lost(self, pool: ServicePool, slots: Slots, reason: str) -> None:
        now = time.time()
        if self._hub.wants(ReplicaLost):
            self._hub.publish(
                ReplicaLost(
                    at=now, service=pool.spec.name, replica_id=slots.replica.id, reason=reason
                )
            )
        self._lifecycle.replica_lost(slots, reason, now)

    def init_failed(self, pool: ServicePool, error: ErrorTriple) -> None:
        now = time.time()
        logger.error(
            "service_init_failed", service=pool.spec.name, error_type=error[0], error=error[1]
        )
        self._tell_state(pool)
        if any(s.open for s in pool.replicas.values()):
            return  # other replicas are serving: the queue waits for them
        message = f"service {pool.spec.name!r} failed to initialize: {error[0]}: {error[1]}"
        failure = ServiceInitError(message, error[2])
        for record in pool.drain_queue():
            self._lifecycle.fail_queued(record, failure, now)

    def _tell_state(self, pool: ServicePool) -> None:
        name = pool.spec.name
        if self._told_state.get(name) is pool.state:
            return
        self._told_state[name] = pool.state
        if self._hub.wants(ServiceStateChanged):
            error = pool.error if pool.state is not ServiceState.ACTIVE else None
            self._hub.publish(
                ServiceStateChanged(
                    at=time.time(),
                    service=name,
                    state=pool.state.value,
                    error_type=error[0] if error else None,
                    error_message=error[1] if error else None,
                )
            )
