"""An execution's life: the one place that changes its status, saves it and tells of it.

Every status change goes through ``Lifecycle``: it checks the change against ``TRANSITIONS``
(an illegal one is a bug, logged with the ids and raised), appends it to the status log,
queues the record for the store's next group commit and publishes an
``ExecutionStatusChanged``. An unfinished execution has one ``Live`` object here holding all
the engine knows of it beyond its record: the replica it runs on, why it was asked to stop, who
waits for it, whether it waits out a retry delay.

The lifecycle sits at the bottom floor: it knows the store, the models and the events. What it
needs from the parts above it, it asks through two small ports the engine wires at start:
``Dispatch`` (the registry: function specs, service queues) and ``Timers`` (the timeouts part:
deadlines). Waiters hear of a final status from ``ExecutionFinished``, published once it is
committed, so a result a caller has seen is never run again after a crash.
"""

from __future__ import annotations

import dataclasses
import enum
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, Protocol

import anyio

from ..errors import (
    AttemptFailure,
    AttemptTimeoutError,
    ConfigurationError,
    EngineClosedError,
    EngineStoppedError,
    ErrorTriple,
    ExecutionNotFoundError,
    ReplicaDiedError,
    ResultTooLargeError,
    StoreRefusedError,
    StoreUnavailableError,
    TriggerfishError,
)
from ..log import debug_enabled, logger
from ..models import (
    TERMINAL_STATUSES,
    ExecutionRecord,
    ExecutionStatus,
    FunctionSpec,
    new_execution_ids,
)
from ..store.abc import Store
from .events import (
    EventHub,
    ExecutionCreated,
    ExecutionFinished,
    ExecutionLogged,
    ExecutionStatusChanged,
    TriggerFired,
)
from .replica import protocol
from .replica.views import JSON, REPR, TRUNCATED, WHOLE_LIMIT
from .scheduler import Slots

PENDING = ExecutionStatus.PENDING
RUNNING = ExecutionStatus.RUNNING
CANCELLING = ExecutionStatus.CANCELLING
SUCCEEDED = ExecutionStatus.SUCCEEDED
FAILED = ExecutionStatus.FAILED
CANCELLED = ExecutionStatus.CANCELLED
TIMED_OUT = ExecutionStatus.TIMED_OUT

#: Where each status may go. PENDING -> FAILED is a queued execution whose service cannot run
#: it; FAILED and TIMED_OUT -> PENDING is a rerun; RUNNING -> PENDING a retry, a replica lost
#: through no fault of the execution, or the engine stopping.
TRANSITIONS: Mapping[ExecutionStatus, frozenset[ExecutionStatus]] = {
    PENDING: frozenset({RUNNING, CANCELLED, FAILED}),
    RUNNING: frozenset({PENDING, CANCELLING, SUCCEEDED, FAILED, TIMED_OUT}),
    CANCELLING: frozenset({CANCELLED}),
    SUCCEEDED: frozenset(),
    FAILED: frozenset({PENDING}),
    CANCELLED: frozenset(),
    TIMED_OUT: frozenset({PENDING}),
}

MAX_LOG_ENTRIES = 10_000
MAX_LOG_TEXT = 64 * 1024
MAX_RESULT_BYTES = 256 * 1024 * 1024  # sqlite refuses a value over 1e9 bytes
VIEW_KINDS = frozenset({JSON, TRUNCATED, REPR})
#: A Live's fate when its once key had fired before: not an error, just not created.
REFUSED = "refused by its once key"


class IllegalTransitionError(TriggerfishError, RuntimeError):
    """A status change the transition table does not allow: a bug in the engine."""


class StopReason(enum.Enum):
    """Why the engine asked a running execution's replica to stop it."""

    CANCEL = "cancel"
    TIMEOUT = "timeout"


class Held(enum.Enum):
    """Why a PENDING execution is in no queue yet (one reason at a time)."""

    UNTIL_COMMITTED = "until committed"  # made by a trigger: queued once its row is
    BACKING_OFF = "backing off"  # waiting out its retry delay


class Waiter:
    """Someone waiting for an execution's final status; ``record`` is set when it is committed
    (None when the engine stopped first). Its event is made only if someone waits before the
    end: a waiter of a map is often settled before it is read, and an event costs more than
    the rest of a waiter."""

    __slots__ = ("_event", "record", "settled")

    def __init__(self) -> None:
        self.record: ExecutionRecord | None = None
        self.settled = False
        self._event: anyio.Event | None = None

    def settle(self, record: ExecutionRecord | None) -> None:
        self.record = record
        self.settled = True
        if self._event is not None:
            self._event.set()

    async def wait(self) -> None:
        if not self.settled:
            if self._event is None:
                self._event = anyio.Event()
            await self._event.wait()


class Live:
    """What the engine holds of an unfinished execution, beside its record."""

    __slots__ = ("fate", "held", "record", "slots", "spec", "stop", "waiter")

    def __init__(self, record: ExecutionRecord, *, born: bool = False) -> None:
        self.record = record
        self.slots: Slots | None = None  # the replica running it
        self.spec: FunctionSpec | None = None  # its function, as of its latest attempt
        self.stop: StopReason | None = None
        self.waiter: Waiter | None = None
        # Made by a trigger (``born``): dispatched once its creation is committed. One field
        # for both reasons keeps a queued execution's Live small (100,000 queued: 0.8 MB).
        self.held: Held | None = Held.UNTIL_COMMITTED if born else None
        self.fate: str | None = None  # why its creation was not stored, for its creator


class Functions(Protocol):
    """What the lifecycle and the triggers ask of the registry of functions."""

    def spec_of(self, function: str) -> FunctionSpec:
        """The spec of a function or alias; UnknownFunctionError naming the known ones."""

    def spec_for(self, function: str) -> FunctionSpec | None:
        """The spec of a function or alias, or None."""

    def paused(self, service: str) -> bool:
        """Whether a service is paused (its work waits, its triggers do not fire)."""


class Dispatch(Functions, Protocol):
    """The registry's queues, as the lifecycle uses them."""

    def enqueue(self, record: ExecutionRecord, *, front: bool = False) -> bool:
        """Queue a PENDING execution on its service's pool; False if no pool runs it yet
        (the pool takes it when it starts, see ``Lifecycle.waiting``)."""

    def enqueue_all(self, records: Iterable[ExecutionRecord]) -> list[ExecutionRecord]:
        """``enqueue`` for each, in order; those that no pool runs yet."""

    def withdraw(self, record: ExecutionRecord) -> None:
        """Take a queued execution out of its pool's queue (no-op if it is not queued)."""


class Firings(Protocol):
    """The triggering part, told of each triggered execution whose creation is committed."""

    def count_fired(self, trigger_id: str) -> None:
        """One more firing of the trigger (the store counted it in the same transaction)."""


class Timers(Protocol):
    """The timeouts part's deadlines; at each, it calls the lifecycle's ``*_expired``."""

    def arm_timeout(self, execution_id: str, seconds: float) -> None: ...

    def arm_grace(self, execution_id: str) -> None: ...

    def arm_backoff(self, execution_id: str, seconds: float) -> None: ...

    def disarm(self, execution_id: str) -> None:
        """Drop every deadline of an execution."""


def fired(record: ExecutionRecord, trigger_id: str) -> TriggerFired:
    """The event of a trigger's firing that created ``record``."""
    return TriggerFired(
        at=record.created_at,
        trigger_id=trigger_id,
        execution_id=record.id,
        function=record.function,
    )


def stamp(record: ExecutionRecord, message: str, now: float) -> None:
    """A new execution exists from ``now``: its creation time and first status log entry."""
    record.created_at = now
    record.status_log.append((now, PENDING, None, message))


def checked_view(view: Any) -> tuple[str, str]:
    """A result view as a replica sent it, if it has the shape of one (its text is checked
    where it is shown)."""
    if (
        type(view) is tuple
        and len(view) == 2
        and view[0] in VIEW_KINDS
        and type(view[1]) is str
        and len(view[1]) <= WHOLE_LIMIT
    ):
        return view
    return (REPR, "a result its replica sent no JSON view of")


class Lifecycle:
    """The unfinished executions of one engine, and every change of their status."""

    def __init__(self, store: Store, hub: EventHub, engine_id: str) -> None:
        self.store = store
        self.hub = hub
        self.engine_id = engine_id
        self.live: dict[str, Live] = {}
        self.placed: dict[str, Live] = {}  # on a replica now
        self._watched: dict[str, Live] = {}  # with a waiter, until it is settled
        # Set when another engine on a shared store finished it (or this one took it over).
        self._elsewhere: dict[str, anyio.Event] = {}
        self._stop_hearing: Callable[[], None] | None = None  # the waiters' listener
        self.accepting = False  # new executions are refused while the engine is not running
        self._killed_replicas: set[str] = set()
        self._idle = anyio.Event()  # set when nothing is placed (while the engine drains)
        self._dispatch: Dispatch | None = None
        self._timers: Timers | None = None
        self._firings: Firings | None = None

    def attach(self, dispatch: Dispatch, timers: Timers, firings: Firings) -> None:
        self._dispatch = dispatch
        self._timers = timers
        self._firings = firings

    @property
    def dispatch(self) -> Dispatch:
        assert self._dispatch is not None, "attach the registry first"
        return self._dispatch

    @property
    def timers(self) -> Timers:
        assert self._timers is not None, "attach the timeouts first"
        return self._timers

    def check_open(self) -> None:
        if not self.accepting:
            raise EngineClosedError("the engine is not running; use 'async with engine:'")

    # -- creating -------------------------------------------------------------------------

    async def submit(
        self,
        function: str,
        inputs: Sequence[bytes],
        *,
        parent_id: str | None = None,
        lineage: tuple[str, ...] = (),
        watch: bool = False,
    ) -> list[Live]:
        """New PENDING executions of ``function``, one per pickled input; returns once they
        are committed. They are queued at once, so that dispatch overlaps with their commit
        (they may already run by then); ``watch`` gives each a waiter before any can finish."""
        self.check_open()
        spec = self.dispatch.spec_of(function)
        now = time.time()
        lives = []
        for execution_id, blob in zip(new_execution_ids(len(inputs)), inputs, strict=True):
            record = ExecutionRecord(
                id=execution_id,
                function=spec.name,
                service=spec.service,
                input=blob,
                max_attempts=spec.max_attempts,
                created_at=now,
                parent_id=parent_id,
                lineage=lineage,
                engine_id=self.engine_id,
            )
            record.status_log.append((now, PENDING, None, ""))
            live = self.live[record.id] = Live(record)
            if watch:
                self.watch(live)
            lives.append(live)
        # Generators, not lists: a list of a big batch's records raised the engine's peak
        # memory by 8 bytes an execution.
        self.dispatch.enqueue_all(live.record for live in lives)  # the others wait (waiting)
        self.store.create_all(((live.record, None) for live in lives), lazy=False)
        if self.hub.wants(ExecutionCreated):
            for live in lives:
                self._tell_created(live.record)
        await self.store.flush(lazy=False)  # its own creations, not what others let wait
        self.raise_unstored(lives)
        return lives

    def adopt(self, record: ExecutionRecord, *, born: bool) -> Live:
        """A triggered execution, stamped (see ``stamp``), is the lifecycle's from now on;
        ``born`` ones are queued once their creation is committed (see ``committed``), the
        others by their creator."""
        self.adopt_all((record,), born=born)
        return self.live[record.id]

    def adopt_all(self, records: Sequence[ExecutionRecord], *, born: bool) -> None:
        """``adopt`` for each."""
        live, engine_id = self.live, self.engine_id
        for record in records:
            record.engine_id = engine_id  # its owner (see Store): whose writes change its row
            live[record.id] = Live(record, born=born)
        if self.hub.wants(ExecutionCreated):
            for record in records:
                self._tell_created(record)

    def enqueue(self, live: Live, *, front: bool = False) -> None:
        if not self.dispatch.enqueue(live.record, front=front):
            self.not_queued(live.record)

    @staticmethod
    def not_queued(record: ExecutionRecord) -> None:
        logger.warning(
            "execution_waiting_for_function", execution_id=record.id, function=record.function
        )

    def waiting(self, functions: Collection[str]) -> list[ExecutionRecord]:
        """PENDING executions of ``functions`` that no queue holds: a new pool takes them."""
        return [
            live.record
            for live in self.live.values()
            if live.record.status is PENDING
            and live.held is None
            and live.slots is None
            and live.record.function in functions
        ]

    def raise_unstored(self, lives: Iterable[Live]) -> None:
        """Tell the creator of new executions that the store could not take one: its
        server out of reach (StoreUnavailableError), or a value no row can hold."""
        for live in lives:
            if live.fate is not None and live.fate is not REFUSED:
                message = f"execution {live.record.id} could not be stored: {live.fate}"
                if live.fate.startswith(f"{StoreUnavailableError.__name__}:"):
                    raise StoreUnavailableError(message)
                raise ConfigurationError(message)

    def _tell_created(self, record: ExecutionRecord) -> None:
        self.hub.publish(
            ExecutionCreated(
                at=record.created_at,
                execution_id=record.id,
                function=record.function,
                service=record.service,
                trigger_id=record.trigger_id,
                parent_id=record.parent_id,
            )
        )

    # -- reading and waiting --------------------------------------------------------------

    async def record(self, execution_id: str) -> ExecutionRecord:
        """The freshest state of an execution: live if unfinished, else from the store."""
        live = self.live.get(execution_id)
        record = live.record if live is not None else await self.store.get(execution_id)
        if record is None:
            raise ExecutionNotFoundError(f"no execution has the id {execution_id!r}")
        return record

    def watch(self, live: Live) -> Waiter:
        """A waiter for the execution, settled when its ``ExecutionFinished`` is told."""
        if live.waiter is None:
            live.waiter = Waiter()
            self._watched[live.record.id] = live
            if self._stop_hearing is None:
                self._stop_hearing = self.hub.listen(ExecutionFinished, self._finished)
            if live.record.terminated:  # its final row may linger (see _finish): not now
                self.store.save(live.record)
        return live.waiter

    def _finished(self, event: ExecutionFinished) -> None:
        """The waiters' listener."""
        live = self._watched.pop(event.execution_id, None)
        if live is not None and live.waiter is not None:
            live.waiter.settle(live.record)

    async def wait(self, execution_id: str, timeout: float | None = None) -> ExecutionRecord:
        """The record once its final status is committed. TimeoutError after ``timeout``."""
        with anyio.fail_after(timeout):
            live = self.live.get(execution_id)
            if live is None:
                stored = await self.store.get(execution_id)
                if stored is None:
                    raise ExecutionNotFoundError(f"no execution has the id {execution_id!r}")
                if stored.terminated:
                    return stored
                live = self.live.get(execution_id)
                if live is None:  # unfinished in the store but not here
                    self.check_open()
                    if not self.store.shared:  # nobody runs it
                        raise EngineClosedError(
                            f"execution {execution_id} is not run by this engine"
                        )
                    return await self._wait_elsewhere(execution_id)
            self.check_open()
            return await self.wait_for(self.watch(live))

    async def _wait_elsewhere(self, execution_id: str) -> ExecutionRecord:
        """The record once another engine on the store finished it (``finished_elsewhere``
        tells of it), or, if this engine took it over meanwhile, once it finished here."""
        while True:
            told = self._elsewhere.get(execution_id)
            if told is None:
                told = self._elsewhere[execution_id] = anyio.Event()
            stored = await self.store.get(execution_id)  # read once a notice would be heard
            if stored is None:
                raise ExecutionNotFoundError(f"no execution has the id {execution_id!r}")
            if stored.terminated:
                return stored
            live = self.live.get(execution_id)
            if live is not None:
                return await self.wait_for(self.watch(live))
            self.check_open()
            await told.wait()

    def finished_elsewhere(self, execution_ids: Sequence[str] | None) -> None:
        """The store's word that other engines finished these executions (None: any)."""
        if execution_ids is None:
            told, self._elsewhere = list(self._elsewhere.values()), {}
        else:
            pop = self._elsewhere.pop
            told = [e for i in execution_ids if (e := pop(i, None)) is not None]
        for event in told:
            event.set()

    @staticmethod
    async def wait_for(waiter: Waiter) -> ExecutionRecord:
        await waiter.wait()
        if waiter.record is None:
            raise EngineClosedError("the engine stopped before the execution finished")
        return waiter.record

    # -- the status machine ---------------------------------------------------------------

    def _change(
        self, live: Live, status: ExecutionStatus, message: str, now: float, *, lazy: bool = False
    ) -> None:
        """``lazy``: the row may wait for a commit asked for by another (see Store.save)."""
        record = live.record
        previous = record.status
        if status not in TRANSITIONS[previous]:
            logger.error(
                "execution_transition_illegal",
                execution_id=record.id,
                function=record.function,
                status=previous.value,
                to=status.value,
            )
            raise IllegalTransitionError(
                f"execution {record.id} of {record.function}: {previous} cannot become {status}"
            )
        record.status = status
        record.status_log.append((now, status, record.progress, message))
        self.store.save(record, lazy=lazy)
        if self.hub.wants(ExecutionStatusChanged):
            self._tell_status(record, previous, message, now)

    def _tell_status(
        self, record: ExecutionRecord, previous: ExecutionStatus, message: str, now: float
    ) -> None:
        self.hub.publish(
            ExecutionStatusChanged(
                at=now,
                execution_id=record.id,
                function=record.function,
                status=record.status.value,
                previous=previous.value,
                attempt=record.attempts,
                progress=record.progress,
                message=message,
                error_type=record.error[0] if record.error else None,
            )
        )

    def _finish(self, live: Live, status: ExecutionStatus, message: str, now: float) -> None:
        """A final status. Its row lingers (see Store.save) while nobody waits for it: a crash
        before its commit runs the execution again, as it would a crash a moment earlier;
        a waiter that comes meanwhile asks for the commit (see ``watch``)."""
        live.record.finished_at = now
        lazy = live.waiter is None and status is not CANCELLED
        self._change(live, status, message, now, lazy=lazy)
        if debug_enabled():
            logger.debug("execution_finished", execution_id=live.record.id, status=status.value)

    def _attempt_failed(
        self, live: Live, error: ErrorTriple, now: float, *, timed_out: bool = False
    ) -> None:
        """An attempt failed: PENDING again (after its backoff) while attempts are left,
        else FAILED (or TIMED_OUT)."""
        record = live.record
        record.error = error
        record.failed_attempts += 1
        if record.attempts < record.max_attempts:
            spec = live.spec or self.dispatch.spec_for(record.function)
            delay = spec.backoff_for(record.attempts) if spec else 0.0
            summary = f"{error[0]}: {error[1]}"[:300]
            message = f"attempt {record.attempts} failed ({summary}); retry in {delay:g}s"
            self._change(live, PENDING, message, now)
            if delay > 0:
                live.held = Held.BACKING_OFF
                self.timers.arm_backoff(record.id, delay)
            else:
                self.enqueue(live)
            return
        status = TIMED_OUT if timed_out else FAILED
        self._finish(live, status, f"{error[0]}: {error[1]}"[:300], now)

    def fail_queued(self, record: ExecutionRecord, failure: AttemptFailure, now: float) -> None:
        """A queued execution its service cannot run (out of every queue already)."""
        live = self.live.get(record.id)
        if live is None:
            return
        record.error = failure.triple()
        self._finish(live, FAILED, str(failure)[:300], now)

    # -- attempts on replicas -------------------------------------------------------------

    def started(self, record: ExecutionRecord, slots: Slots, spec: FunctionSpec) -> None:
        """A pool sent an execution to a replica: its next attempt runs."""
        live = self.live[record.id]
        now = time.time()
        record.attempts += 1
        if record.started_at is None:
            record.started_at = now
        record.progress = None  # progress belongs to an attempt
        record.engine_id = self.engine_id
        live.slots = slots
        live.spec = spec
        self.placed[record.id] = live
        self._change(live, RUNNING, "", now, lazy=True)  # a crash before its commit: PENDING
        self.timers.arm_timeout(record.id, spec.timeout)
        if debug_enabled():
            logger.debug("execution_started", execution_id=record.id, replica_id=slots.replica.id)

    def _unplace(self, execution_id: str) -> Live | None:
        live = self.placed.pop(execution_id, None)
        self.timers.disarm(execution_id)
        if live is not None:
            live.slots = None
        if not self.placed:
            self._idle.set()
        return live

    def ended(self, execution_id: str, ok: bool, payload: Any, view: Any, now: float) -> None:
        """A replica reported an attempt's end: a result (pickled, with its JSON view) or
        the function's error (type, message, traceback)."""
        live = self._unplace(execution_id)
        if live is None:
            return
        stop, live.stop = live.stop, None
        record = live.record
        if stop is StopReason.CANCEL:
            self._finish(live, CANCELLED, "cancelled while it ran", now)
        elif stop is StopReason.TIMEOUT:
            self._timed_out(live, now)
        elif ok and len(payload) > MAX_RESULT_BYTES:
            failure = ResultTooLargeError(
                f"the result is {len(payload)} bytes pickled; at most {MAX_RESULT_BYTES} are stored"
            )
            self._attempt_failed(live, failure.triple(), now)
        elif ok:
            record.result = payload
            record.result_view = checked_view(view)
            record.error = None
            self._finish(live, SUCCEEDED, "", now)
        else:
            etype, emsg, etb = payload
            self._attempt_failed(live, (etype, emsg, etb), now)

    def _timed_out(self, live: Live, now: float) -> None:
        timeout = live.spec.timeout if live.spec else 0.0
        failure = AttemptTimeoutError(f"no result or progress within the {timeout:g}s timeout")
        self._attempt_failed(live, failure.triple(), now, timed_out=True)

    def logged(self, record: ExecutionRecord, stream: str, text: str, now: float) -> None:
        """A piece of the function's output (each line at most MAX_LOG_TEXT, at most
        MAX_LOG_ENTRIES pieces, and a mark where either cut it)."""
        logs = record.logs
        if not isinstance(logs, list):
            logs = record.logs = list(logs)
        if len(logs) < MAX_LOG_ENTRIES:
            if len(text) > MAX_LOG_TEXT:
                text = text[:MAX_LOG_TEXT] + "\n[triggerfish: line truncated]\n"
            logs.append((now, stream, text))
        elif len(logs) == MAX_LOG_ENTRIES:
            stream, text = "stderr", "[triggerfish: log truncated]\n"
            logs.append((now, stream, text))
        else:
            return
        self.store.save(record, lazy=True)
        if self.hub.wants(ExecutionLogged):
            self.hub.publish(
                ExecutionLogged(
                    at=now,
                    execution_id=record.id,
                    function=record.function,
                    stream=stream,
                    text=text,
                )
            )

    def progressed(self, record: ExecutionRecord, progress: int, message: str, now: float) -> None:
        """Progress restarts the attempt's timeout."""
        record.progress = progress
        record.status_log.append((now, record.status, progress, message))
        self.store.save(record, lazy=True)
        live = self.placed.get(record.id)
        if live is not None and live.stop is None and live.spec is not None:
            self.timers.arm_timeout(record.id, live.spec.timeout)
        if self.hub.wants(ExecutionStatusChanged):
            self._tell_status(record, record.status, message, now)

    def yielded(self, record: ExecutionRecord, result: bytes, view: Any) -> None:
        """A generator's latest value: the result while it runs."""
        record.result = result
        record.result_view = checked_view(view)
        self.store.save(record, lazy=True)

    def replica_lost(self, slots: Slots, reason: str, now: float) -> None:
        """A replica went away with executions on it."""
        replica_id = slots.replica.id
        killed_by_us = replica_id in self._killed_replicas
        self._killed_replicas.discard(replica_id)
        for record in list(slots.assigned.values()):
            live = self._unplace(record.id)
            if live is None:
                continue
            stop, live.stop = live.stop, None
            if stop is StopReason.CANCEL:
                self._finish(live, CANCELLED, "cancelled; its replica was killed", now)
            elif stop is StopReason.TIMEOUT:
                self._timed_out(live, now)
            elif killed_by_us:
                record.attempts -= 1  # an innocent bystander: this attempt does not count
                self._change(live, PENDING, f"requeued: replica {replica_id} was replaced", now)
                self.enqueue(live, front=True)
            else:
                failure = ReplicaDiedError(f"replica {replica_id} running it died: {reason}")
                self._attempt_failed(live, failure.triple(), now)
        slots.assigned.clear()

    # -- cancelling, deadlines, reruns ----------------------------------------------------

    async def cancel(self, execution_id: str) -> None:
        """At once if queued, via CANCELLING if running; a no-op if final."""
        self.check_open()
        record = await self.record(execution_id)
        live = self.live.get(execution_id)
        if record.terminated or live is None:
            return
        now = time.time()
        if live.slots is not None:
            if record.status is not CANCELLING:
                self._change(live, CANCELLING, "cancel requested", now)
                self._ask_to_stop(live, StopReason.CANCEL)
            return
        self.dispatch.withdraw(record)
        self.timers.disarm(execution_id)
        if live.held is Held.BACKING_OFF:  # one made by a trigger is still counted once stored
            live.held = None
        self._finish(live, CANCELLED, "cancelled before it ran", now)

    def _ask_to_stop(self, live: Live, reason: StopReason) -> None:
        assert live.slots is not None
        live.stop = reason
        live.slots.replica.send((protocol.CANCEL, live.record.id))
        self.timers.arm_grace(live.record.id)

    def timeout_expired(self, execution_id: str) -> None:
        live = self.placed.get(execution_id)
        if live is not None and live.stop is None:
            logger.info("execution_timed_out", execution_id=execution_id)
            self._ask_to_stop(live, StopReason.TIMEOUT)

    def grace_expired(self, execution_id: str) -> None:
        """The execution did not stop within the kill grace: its replica is killed (and
        replaced); the others on it go back to the queue."""
        live = self.placed.get(execution_id)
        if live is None or live.slots is None:
            return
        replica = live.slots.replica
        logger.warning(
            "replica_killed",
            replica_id=replica.id,
            execution_id=execution_id,
            reason="the execution did not stop within the kill grace",
        )
        self._killed_replicas.add(replica.id)
        replica.kill()

    def backoff_expired(self, execution_id: str) -> None:
        live = self.live.get(execution_id)
        if live is not None and live.held is Held.BACKING_OFF and live.record.status is PENDING:
            live.held = None
            self.enqueue(live)

    def rerun(self, records: Iterable[ExecutionRecord], spec: FunctionSpec) -> list[str]:
        """Run FAILED and TIMED_OUT executions again, each with its function's attempts anew
        (its own revision's, or ``spec``'s if that is gone); returns the ids that were started
        again (those not live already)."""
        now = time.time()
        started = []
        # Claimed with no await in between: a concurrent rerun finds them live and skips them.
        for record in records:
            if record.id in self.live or record.status not in (FAILED, TIMED_OUT):
                continue
            live = self.live[record.id] = Live(record)
            record.engine_id = self.engine_id
            own = self.dispatch.spec_for(record.function) or spec
            record.max_attempts = record.attempts + own.max_attempts
            record.error = None
            record.result = None
            record.result_view = None
            record.finished_at = None
            self._change(live, PENDING, "rerun", now)
            self.enqueue(live)
            started.append(record.id)
        return started

    # -- starting and stopping ------------------------------------------------------------

    async def recover(self) -> None:
        """Take back what an earlier run of the engine left unfinished, or what an engine on
        the same store that is gone left (``Store.take_unfinished``): the engine that ran
        them stopped, so RUNNING ones lose that attempt, as at a restart."""
        now = time.time()
        for record in await self.store.take_unfinished():
            if record.id in self.live:
                continue
            record.engine_id = self.engine_id
            live = self.live[record.id] = Live(record)
            self.finished_elsewhere((record.id,))  # its waiters here wait for it here now
            if record.status is RUNNING:
                failure = EngineStoppedError(
                    f"the engine stopped while attempt {record.attempts} ran"
                )
                self._attempt_failed(live, failure.triple(), now)
            elif record.status is CANCELLING:
                self._finish(live, CANCELLED, "cancelled while the engine was down", now)
            else:
                self.enqueue(live)
            logger.info("execution_recovered", execution_id=record.id, status=record.status.value)

    async def drain(self, timeout: float, abandoned: anyio.CancelScope) -> None:
        """Wait, at most ``timeout`` seconds, until no execution runs (``abandoned``, when
        cancelled, stops the wait at once)."""
        if not self.placed:
            return
        self._idle = anyio.Event()
        with abandoned, anyio.move_on_after(timeout):
            await self._idle.wait()

    def put_back(self) -> None:
        """The engine stops: what still runs goes back to PENDING for the next start (that
        attempt does not count); a cancel is not undone."""
        now = time.time()
        for execution_id, live in list(self.placed.items()):
            del self.placed[execution_id]
            live.slots = None
            if live.record.status is CANCELLING:
                self._finish(live, CANCELLED, "cancelled as the engine stopped", now)
                continue
            live.record.attempts -= 1
            message = "the engine stopped while it ran; it runs again at the next start"
            self._change(live, PENDING, message, now)

    def release_waiters(self) -> None:
        """Nobody waits forever on a stopped engine."""
        for live in self.live.values():
            if live.waiter is not None:
                live.waiter.settle(None)
        self.live.clear()
        self._watched.clear()
        self._hear_no_more()
        self.finished_elsewhere(None)

    def _hear_no_more(self) -> None:
        if self._stop_hearing is not None and not self._watched:
            self._stop_hearing()
            self._stop_hearing = None

    # -- after each commit ----------------------------------------------------------------

    def committed(
        self,
        written: Sequence[tuple[str, ExecutionStatus]],
        refused: Collection[str],
        failed: Mapping[str, str],
    ) -> None:
        """The store's commit listener: queue what triggers made, forget finished
        executions and tell of them (``ExecutionFinished``, which wakes who waits for them),
        and drop executions whose once key had fired before or that the store could not
        take."""
        for execution_id, why in failed.items():
            self._unstorable(execution_id, why)
        for execution_id in refused:
            live = self.live.get(execution_id)
            if live is None:
                continue
            if live.held is not Held.UNTIL_COMMITTED:
                self._fired_again(live)
                continue
            del self.live[execution_id]
            live.fate = REFUSED
        live_now, terminal = self.live, TERMINAL_STATUSES
        tell, publish, now = self.hub.wants(ExecutionFinished), self.hub.publish, time.time()
        for execution_id, status in written:
            live = live_now.get(execution_id)
            if live is None:
                continue
            record = live.record
            if live.held is Held.UNTIL_COMMITTED:
                live.held = None
                if record.trigger_id is not None:
                    assert self._firings is not None
                    self._firings.count_fired(record.trigger_id)
                    if self.hub.wants(TriggerFired):
                        self.hub.publish(fired(record, record.trigger_id))
                if record.status is PENDING:
                    self.enqueue(live)
            if status not in terminal or record.status not in terminal:
                continue  # unfinished, or run again (rerun) since this commit was prepared
            del live_now[execution_id]
            if tell:
                publish(
                    ExecutionFinished(
                        at=now,
                        execution_id=execution_id,
                        function=record.function,
                        status=record.status.value,
                    )
                )
        self._hear_no_more()

    def _unstorable(self, execution_id: str, why: str) -> None:
        """An execution the store could not write (its own fault, such as a value no row can
        hold): it is dropped, and whoever created or waits for it hears why."""
        live = self.live.pop(execution_id, None)
        if live is None:
            return
        live.fate = why
        self._watched.pop(execution_id, None)
        if live.slots is None:
            self.dispatch.withdraw(live.record)
            self.timers.disarm(execution_id)
        if live.waiter is not None:  # never stored, so never finished: told here
            failure = StoreRefusedError(f"the store could not take it: {why}")
            live.waiter.settle(
                dataclasses.replace(live.record, status=FAILED, error=failure.triple())
            )

    def _fired_again(self, live: Live) -> None:
        """A cron firing that went to its pool before its commit was refused by its fire
        record. Only a wall clock stepped back across a restart does that; the run has begun
        (or is queued), so it is kept and stored, without a fire record, and logged."""
        record = live.record
        logger.warning(
            "cron_fired_again",
            execution_id=record.id,
            trigger_id=record.trigger_id,
            scheduled=record.event.get("scheduled") if record.event else None,
        )
        self.store.save(record)
