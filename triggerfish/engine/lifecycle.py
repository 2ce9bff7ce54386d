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
import itertools
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, Protocol

import anyio
import anyio.abc

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
from ..store.abc import Channel, Store
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

#: Seconds ``Channel.FINISHED`` is heard after the last waiter for another engine's work.
HEARING = 5.0
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
    # On a shared store, given to the shared queue: this engine forgets it once its row (with
    # no owner) is committed, and whichever engine has room claims it. Made by a trigger
    # (SHARED_FIRED): its firing is counted then too.
    SHARED = "shared"
    SHARED_FIRED = "shared, fired"


#: What a commit does with a held execution once its row is committed.
_SHARED = frozenset({Held.SHARED, Held.SHARED_FIRED})


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

    def room(self, service: str) -> int:
        """How many more executions of ``service`` this engine should take now, where work is
        shared among engines: what its replicas run at most, and some queued ahead."""

    def functions_of(self, service: str | None) -> Collection[str]:
        """The functions of a service (None: of every service); none if it is unknown."""

    def unqueue(self, service: str, count: int) -> list[ExecutionRecord]:
        """Take at most ``count`` executions out of the service's queue, the latest queued
        first."""

    def watch_room(self, service: str, room_opened: Callable[[str], None] | None) -> None:
        """Call ``room_opened(service)`` each time a slot of the service's pool frees while
        its queue runs low (None: no more)."""


class SharedWork(Protocol):
    """The part that claims work from a shared store's shared queue."""

    def may_have_work(self, functions: Iterable[str] | None) -> None:
        """The shared queue may hold executions of ``functions`` (None: of any function):
        claim them while this engine has room."""

    def functions_changed(self) -> None:
        """The functions this engine runs changed: the other engines are to hear of it."""


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
        # On a shared store: waiters for executions that other engines hold or that wait in
        # the shared queue, settled from the store once another engine tells it finished them
        # (ids to read in ``_unread``), or handed to a Live when this engine takes one.
        self._remote: dict[str, Waiter] = {}
        self._unread: set[str] = set()
        self._read_wake = anyio.Event()
        self._cancels_unheard = False  # some asks to cancel may have gone unheard
        # Triggered executions kept by this engine that wait for their commit, by service:
        # room they take before any pool counts them.
        self._born: dict[str, int] = {}
        self._stop_hearing: Callable[[], None] | None = None  # the waiters' listener
        self.accepting = False  # new executions are refused while the engine is not running
        self._killed_replicas: set[str] = set()
        self._idle = anyio.Event()  # set when nothing is placed (while the engine drains)
        self._dispatch: Dispatch | None = None
        self._timers: Timers | None = None
        self._firings: Firings | None = None
        self._sharing: SharedWork | None = None

    def attach(
        self, dispatch: Dispatch, timers: Timers, firings: Firings, sharing: SharedWork
    ) -> None:
        self._dispatch = dispatch
        self._timers = timers
        self._firings = firings
        self._sharing = sharing

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
        (they may already run by then); ``watch`` gives each a waiter before any can finish.
        On a shared store, those this engine has no room for go to the shared queue."""
        self.check_open()
        spec = self.dispatch.spec_of(function)
        now = time.time()
        keep = len(inputs)
        if self._sharing_work(spec.name):
            keep = max(0, self._room(spec.service))
        lives: list[Live] = []
        for execution_id, blob in zip(new_execution_ids(len(inputs)), inputs, strict=True):
            kept = len(lives) < keep
            record = ExecutionRecord(
                id=execution_id,
                function=spec.name,
                service=spec.service,
                input=blob,
                max_attempts=spec.max_attempts,
                created_at=now,
                parent_id=parent_id,
                lineage=lineage,
                engine_id=self.engine_id if kept else None,
            )
            record.status_log.append((now, PENDING, None, ""))
            live = self.live[record.id] = Live(record)
            if not kept:
                live.held = Held.SHARED
            if watch:
                self.watch(live)
            lives.append(live)
        # Generators, not lists: a list of a big batch's records raised the engine's peak
        # memory by 8 bytes an execution.
        self.dispatch.enqueue_all(live.record for live in itertools.islice(lives, keep))
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
        others by their creator (see ``adopt_all``)."""
        self.adopt_all((record,), born=born)
        return self.live[record.id]

    def adopt_all(self, records: Sequence[ExecutionRecord], *, born: bool) -> list[ExecutionRecord]:
        """``adopt`` for each; returns those this engine keeps, for their creator to queue
        (not ``born`` ones). On a shared store, those it has no room for go to the shared
        queue instead, at their commit."""
        live, engine_id = self.live, self.engine_id
        if not self.store.shared:
            for record in records:
                record.engine_id = engine_id  # its owner (see Store): whose writes change its row
                live[record.id] = Live(record, born=born)
            kept = list(records) if not born else []
        else:
            kept = self._share_overflow(records, born)
        if self.hub.wants(ExecutionCreated):
            for record in records:
                self._tell_created(record)
        return kept

    def _share_overflow(
        self, records: Sequence[ExecutionRecord], born: bool
    ) -> list[ExecutionRecord]:
        """``adopt_all`` on a shared store: each kept while its service has room."""
        live, engine_id = self.live, self.engine_id
        rooms: dict[str, int] = {}
        kept = []
        elsewhere = self.store.runs_elsewhere
        for record in records:
            if not elsewhere(record.function):  # nobody else to run it: this engine keeps it
                record.engine_id = engine_id
                live[record.id] = Live(record, born=born)
                if not born:
                    kept.append(record)
                continue
            service = record.service
            room = rooms.get(service)
            if room is None:
                room = self._room(service)
            if room > 0:
                rooms[service] = room - 1
                record.engine_id = engine_id
                live[record.id] = Live(record, born=born)
                if born:
                    self._born[service] = self._born.get(service, 0) + 1
                else:
                    kept.append(record)
            else:
                rooms[service] = 0
                record.engine_id = None
                shared = live[record.id] = Live(record)
                shared.held = Held.SHARED_FIRED if born else Held.SHARED
        return kept

    def _room(self, service: str) -> int:
        return self.dispatch.room(service) - self._born.get(service, 0)

    def _sharing_work(self, function: str) -> bool:
        """Whether work of ``function`` this engine has no room for goes to the shared queue:
        on a shared store, while another engine runs the function."""
        return self.store.shared and self.store.runs_elsewhere(function)

    def share_excess(self, service: str) -> None:
        """Another engine began to run functions of ``service``: what this engine holds
        queued beyond its room goes to the shared queue (the latest queued first)."""
        excess = -self._room(service)
        if excess <= 0:
            return
        for record in self.dispatch.unqueue(service, excess):
            live = self.live.get(record.id)
            if live is not None and self._sharing_work(record.function):
                self._share(live)
            else:
                self.dispatch.enqueue(record)  # nobody else runs it: back in its queue

    def _unborn(self, live: Live) -> None:
        """A triggered execution this engine kept is committed, or will never be."""
        if live.held is Held.UNTIL_COMMITTED and self._born:
            service = live.record.service
            left = self._born.get(service, 0) - 1
            if left > 0:
                self._born[service] = left
            else:
                self._born.pop(service, None)

    def enqueue(self, live: Live, *, front: bool = False) -> None:
        if not self.dispatch.enqueue(live.record, front=front):
            if self.store.shared:  # another engine may run it: it goes to the shared queue
                self._share(live)
            else:
                self.not_queued(live.record)

    def _share(self, live: Live) -> None:
        """Give an execution this engine owns, PENDING and in no queue, to the shared queue:
        its row says so at the next commit, and this engine forgets it then."""
        record = live.record
        self.timers.disarm(record.id)
        record.engine_id = None
        live.held = Held.SHARED
        self.store.save(record)

    def work_wanted(self, functions: Iterable[str], *, started: bool = False) -> None:
        """A pool for ``functions`` ``started``, or resumed: on a shared store, it claims
        their work from the shared queue (and the other engines hear what this one runs)."""
        if self.store.shared and self._sharing is not None:
            if started:
                self._sharing.functions_changed()
            self._sharing.may_have_work(functions)

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
                    return await self.wait_for(self.watch_elsewhere(execution_id))
            self.check_open()
            return await self.wait_for(self.watch(live))

    def watch_elsewhere(self, execution_id: str) -> Waiter:
        """A waiter for an execution this engine may not hold (on a shared store): settled
        once another engine finished it (read from the store, which is read once now, in
        case that happened already), or handed to the execution's Live if this engine
        takes it over."""
        live = self.live.get(execution_id)
        if live is not None:
            return self.watch(live)
        waiter = self._remote.get(execution_id)
        if waiter is None:
            waiter = self._remote[execution_id] = Waiter()
            self._to_read((execution_id,))
        return waiter

    def finished_elsewhere(self, execution_ids: Sequence[str] | None) -> None:
        """Heard (``Channel.FINISHED``): other engines finished these executions (None: some
        may have gone unheard). Their waiters here read them from the store."""
        remote = self._remote
        if execution_ids is None:
            self._to_read(list(remote))
        elif remote:
            self._to_read([i for i in execution_ids if i in remote])

    def _to_read(self, execution_ids: Iterable[str]) -> None:
        self._unread.update(execution_ids)
        if self._unread:
            self._read_wake.set()

    def cancel_asked(self, messages: Sequence[str] | None) -> None:
        """Heard (``Channel.CANCEL``): another engine asks the owner of an execution to cancel
        it (None: some asks may have gone unheard; the store is asked which)."""
        if messages is None:
            self._cancels_unheard = True
            self._read_wake.set()
            return
        now = time.time()
        for message in messages:
            owner, _, execution_id = message.partition(" ")
            live = self.live.get(execution_id) if owner == self.engine_id else None
            if live is not None:
                self._cancel_live(live, "cancelled at another engine's request", now)

    async def hear_elsewhere(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """On a shared store, while the engine runs: read the executions other engines
        finished that someone here waits for, many in one read, and settle their waiters;
        look for the asks to cancel that went unheard. ``Channel.FINISHED`` is heard only
        while someone here waits for another engine's work (and ``HEARING`` seconds after,
        lest a stream of calls begin and end it each time): before a waiter's first read,
        so that a finish is either heard, or already in what is read."""
        task_status.started()
        hearing = False
        while True:
            if hearing and not self._remote:
                with anyio.move_on_after(HEARING):
                    await self._read_wake.wait()
                if not self._remote:
                    with anyio.move_on_after(1.0, shield=True):  # a stop waits a second at most
                        await self._hear_finished(False)
                    hearing = False
                    continue
            else:
                await self._read_wake.wait()
            self._read_wake = anyio.Event()
            unread: set[str] = set()
            try:
                if self._remote and not hearing:
                    await self._hear_finished(True)
                    hearing = True
                if self._cancels_unheard:
                    self._cancels_unheard = False
                    now = time.time()
                    for execution_id in await self.store.asked_to_cancel():
                        live = self.live.get(execution_id)
                        if live is not None:
                            self._cancel_live(live, "cancelled at another engine's request", now)
                unread, self._unread = self._unread, unread
                wanted = [i for i in unread if i in self._remote]
                for start in range(0, len(wanted), 1000):
                    for record in await self.store.get_many(wanted[start : start + 1000]):
                        if record.terminated:
                            waiter = self._remote.pop(record.id, None)
                            if waiter is not None:
                                waiter.settle(record)
            except StoreUnavailableError as exc:  # read at the next word, or reconnection
                self._unread |= unread
                logger.warning("engine_remote_read_failed", error=str(exc))

    async def _hear_finished(self, hearing: bool) -> None:
        await self.store.hear_now(Channel.FINISHED, hearing)

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
        """At once if queued, via CANCELLING if running; a no-op if final. On a shared store,
        one in the shared queue is claimed and cancelled here, and one another engine holds
        is marked for it to cancel (see ``Store.ask_to_cancel``)."""
        self.check_open()
        record = await self.record(execution_id)
        if record.terminated:
            return
        live = self.live.get(execution_id)
        if live is None and self.store.shared:
            live = await self._cancel_elsewhere(execution_id)
        if live is not None:
            self._cancel_live(live, "cancelled before it ran", time.time())

    async def _cancel_elsewhere(self, execution_id: str) -> Live | None:
        """An execution this engine does not hold, to cancel: claimed from the shared queue
        (its Live, to cancel here), or asked of its owner (None). An execution that moves
        between the two meanwhile is looked at again."""
        for _ in range(10):  # it moves between owners: looked at again, a few times
            claimed = await self.store.claim_ids((execution_id,))
            if claimed:
                self.take(claimed)
                return self.live.get(execution_id)
            if await self.store.ask_to_cancel(execution_id) is not None:
                return None
            stored = await self.store.get(execution_id)
            live = self.live.get(execution_id)
            if live is not None or stored is None or stored.terminated:
                return live
            if stored.engine_id == self.engine_id:  # taken by this engine meanwhile
                return self.live.get(execution_id)
            await anyio.sleep(0.01)
        return None

    def _cancel_live(self, live: Live, message: str, now: float) -> None:
        """Cancel an unfinished execution this engine holds."""
        record = live.record
        if record.terminated:
            return
        if live.slots is not None:
            if record.status is not CANCELLING:
                self._change(live, CANCELLING, "cancel requested", now)
                self._ask_to_stop(live, StopReason.CANCEL)
            return
        self.dispatch.withdraw(record)
        self.timers.disarm(record.id)
        if live.held is Held.BACKING_OFF:  # one made by a trigger is still counted once stored
            live.held = None
        self._finish(live, CANCELLED, message, now)

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

    async def recover(self) -> tuple[str, ...]:
        """Take back what an earlier run of the engine left unfinished, or what an engine on
        the same store that is gone left (``Store.take_unfinished``); on a shared store, the
        gone engines' PENDING work went to the shared queue, which is then claimed from.
        The ids of the engines whose work was taken (on a store of one engine: none)."""
        adopted = await self.store.take_unfinished()
        self.take(adopted.executions)
        if self.store.shared and self._sharing is not None:
            self._sharing.may_have_work(None)
        return adopted.engines

    def take(self, records: Iterable[ExecutionRecord]) -> None:
        """Executions this engine was given by the store (an earlier run's, a gone engine's,
        or claimed from the shared queue) are its own: queued, or, where the engine that
        ran them stopped, RUNNING ones lose that attempt, as at a restart. One another engine
        asked to cancel is cancelled. Those this engine holds already are skipped."""
        now = time.time()
        for record in records:
            held = self.live.get(record.id)
            if held is not None:
                if held.held in _SHARED and held.record.status is PENDING:
                    # Claimed back before this engine heard that it was given away.
                    held.held = None
                    held.record.engine_id = self.engine_id
                    self.enqueue(held)
                continue
            record.engine_id = self.engine_id
            live = self.live[record.id] = Live(record)
            waiter = self._remote.pop(record.id, None)
            if waiter is not None:  # its waiters here wait for it here now
                live.waiter = waiter
                self._watched[record.id] = live
                if self._stop_hearing is None:
                    self._stop_hearing = self.hub.listen(ExecutionFinished, self._finished)
            if record.status is RUNNING:
                if record.cancel_requested:
                    self._change(live, CANCELLING, "cancel requested", now)
                    self._finish(live, CANCELLED, "cancelled; the engine running it was gone", now)
                    continue
                failure = EngineStoppedError(
                    f"the engine stopped while attempt {record.attempts} ran"
                )
                self._attempt_failed(live, failure.triple(), now)
                logger.info("execution_recovered", execution_id=record.id, status="RUNNING")
            elif record.status is CANCELLING:
                self._finish(live, CANCELLED, "cancelled while the engine was down", now)
            elif record.cancel_requested:
                self._finish(live, CANCELLED, "cancelled at another engine's request", now)
            else:
                self.enqueue(live)

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
        attempt does not count); a cancel is not undone. On a shared store, everything this
        engine holds that has not run goes to the shared queue, for the other engines."""
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
        if self.store.shared:
            for live in self.live.values():
                if live.record.status is PENDING and live.held not in _SHARED:
                    self.dispatch.withdraw(live.record)
                    self._share(live)

    def release_waiters(self) -> None:
        """Nobody waits forever on a stopped engine."""
        for live in self.live.values():
            if live.waiter is not None:
                live.waiter.settle(None)
        for waiter in self._remote.values():
            waiter.settle(None)
        self.live.clear()
        self._watched.clear()
        self._remote.clear()
        self._unread.clear()
        self._born.clear()
        self._hear_no_more()

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
            if live.held is not Held.UNTIL_COMMITTED and live.held not in _SHARED:
                self._fired_again(live)
                continue
            self._unborn(live)
            del self.live[execution_id]
            self._watched.pop(execution_id, None)
            live.fate = REFUSED
        live_now, terminal = self.live, TERMINAL_STATUSES
        tell, publish, now = self.hub.wants(ExecutionFinished), self.hub.publish, time.time()
        shared: set[str] = set()
        for execution_id, status in written:
            live = live_now.get(execution_id)
            if live is None:
                continue
            record = live.record
            held = live.held
            if held is not None and held is not Held.BACKING_OFF:  # waited for this commit
                if held is not Held.SHARED and record.trigger_id is not None:
                    assert self._firings is not None
                    self._firings.count_fired(record.trigger_id)
                    if self.hub.wants(TriggerFired):
                        self.hub.publish(fired(record, record.trigger_id))
                if held is Held.UNTIL_COMMITTED:
                    self._unborn(live)
                    live.held = None
                    if record.status is PENDING:
                        self.enqueue(live)
                elif record.status is PENDING:  # in the shared queue from now on
                    if self.store.queued(execution_id):
                        continue  # given away after this commit was made: at the next
                    del live_now[execution_id]
                    self._forget_shared(live)
                    shared.add(record.function)
                    continue
                else:
                    live.held = None  # cancelled before its commit
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
        if shared and self._sharing is not None:  # claimed back here too, if room opens
            self._sharing.may_have_work(shared)
        self._hear_no_more()

    def _forget_shared(self, live: Live) -> None:
        """An execution given to the shared queue: its waiter here waits for whoever runs it
        (read once ``Channel.FINISHED`` is heard, in case it finished before)."""
        if live.waiter is not None:
            self._watched.pop(live.record.id, None)
            self._remote[live.record.id] = live.waiter
            self._unread.add(live.record.id)
            self._read_wake.set()

    def _unstorable(self, execution_id: str, why: str) -> None:
        """An execution the store could not write (its own fault, such as a value no row can
        hold): it is dropped, and whoever created or waits for it hears why."""
        live = self.live.pop(execution_id, None)
        if live is None:
            return
        self._unborn(live)
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
