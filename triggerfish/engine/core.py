"""The engine core: executions from start to a final status, durably.

It owns the live state of every unfinished execution, the service pools that run them, and
the store that keeps them. Everything here runs on one event loop; the only awaits on the hot
path are the store's group commits.

Life of an execution: ``submit`` stores it PENDING and queues it on its service's pool; the pool
dispatches it to a replica (RUNNING); the replica reports DONE and it becomes SUCCEEDED, or a
failed attempt goes back to PENDING after its backoff until ``max_attempts`` is spent (FAILED,
TIMED_OUT). Cancel and timeout ask the replica to stop it; a replica that does not within the
kill grace is killed and replaced, and the other executions it held go back to the queue.
Waiters (``wait``) are woken only once the final status is committed, so a result a caller has
seen is never run again after a crash.
"""

from __future__ import annotations

import gc
import math
import pickle
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import anyio
from anyio.abc import TaskGroup, TaskStatus

from .. import _json
from ..errors import (
    ConfigurationError,
    EngineClosedError,
    ExecutionNotFoundError,
    InvocationCancelledError,
    InvocationError,
    InvocationFailedError,
    InvocationTimedOutError,
    TriggerfishError,
    TriggerNotFoundError,
    UnknownFunctionError,
)
from ..log import debug_enabled, logger
from ..models import (
    CronTriggerSpec,
    ErrorInfo,
    EventTriggerSpec,
    ExecutionRecord,
    ExecutionStatus,
    FunctionSpec,
    ServiceSpec,
    ServiceState,
    ServiceStatus,
    TriggerRecord,
    TriggerSpec,
    belongs_to,
    claim_execution_ids,
    execution_ids_from,
    new_execution_id,
    new_execution_ids,
)
from ..store.abc import Store
from ..triggers.cron import CronSchedule, plan_misfires
from ..triggers.definitions import validate_spec
from .bus import EventBus
from .clock import CronClock
from .deadlines import DeadlineQueue
from .replica import protocol
from .replica.views import JSON, REPR, TRUNCATED, WHOLE_LIMIT
from .runtimes.abc import ReplicaPlan, Runtime
from .runtimes.process import ProcessRuntime
from .scheduler import ErrorTriple, PoolCallbacks, ServicePool, Slots

PENDING = ExecutionStatus.PENDING
RUNNING = ExecutionStatus.RUNNING
UNFINISHED = (PENDING, RUNNING, ExecutionStatus.CANCELLING)
MAX_LOG_ENTRIES = 10_000
MAX_LOG_TEXT = 64 * 1024
MAX_RESULT_BYTES = 256 * 1024 * 1024  # sqlite refuses a value over 1e9 bytes
VIEW_KINDS = frozenset({JSON, TRUNCATED, REPR})
#: The largest result view an Execution statusChanged event carries as its result.
EVENT_RESULT_LIMIT = 64 * 1024
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class CronFiring(NamedTuple):
    """A cron firing built ahead of its time, waiting to be created."""

    trigger: TriggerRecord
    record: ExecutionRecord | None  # None: its function is not registered or is paused
    once: tuple[str, str]
    message: str
    id_ns: int  # the time in its id, made ahead (see claim_execution_ids)


def _fired_by(trigger: TriggerRecord) -> str:
    return f"fired by trigger {trigger.spec.name!r}"


def _stamp_created(record: ExecutionRecord, message: str, now: float) -> None:
    """A triggered execution exists from ``now``."""
    record.created_at = now
    record.status_log.append((now, PENDING, None, message))


def _pickled_input(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bytes:
    return pickle.dumps((args, dict(kwargs)), protocol=pickle.HIGHEST_PROTOCOL)


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


def raise_for_outcome(record: ExecutionRecord) -> bytes:
    """The pickled result of a SUCCEEDED record; the matching InvocationError otherwise."""
    if record.status is ExecutionStatus.SUCCEEDED:
        return record.result or pickle.dumps(None)
    raise invocation_error(record.id, record.function, record.status, record.error)


def invocation_error(
    execution_id: str,
    function: str,
    status: ExecutionStatus,
    error: tuple[str, str, str] | None,
) -> InvocationError:
    """The InvocationError for an execution that did not succeed (or has not finished)."""
    etype, emsg, etb = error or ("", "", "")
    where = f"execution {execution_id} of {function}"
    if status is ExecutionStatus.CANCELLED:
        return InvocationCancelledError(f"{where} was cancelled", execution_id=execution_id)
    if status is ExecutionStatus.TIMED_OUT:
        return InvocationTimedOutError(f"{where} timed out: {emsg}", execution_id=execution_id)
    if status is ExecutionStatus.FAILED:
        return InvocationFailedError(
            f"{where} failed: {etype}: {emsg}",
            execution_id=execution_id,
            error_type=etype,
            error_message=emsg,
            remote_traceback=etb,
        )
    return InvocationError(f"{where} has not finished ({status})", execution_id=execution_id)


class Waiter:
    """Someone waiting for an execution's final status; ``record`` is set when it is committed."""

    __slots__ = ("event", "record")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.record: ExecutionRecord | None = None


class Service:
    """A registered service: its spec, its functions and what a replica loads (with the host
    directories of code it loads by path, which a container must see)."""

    def __init__(
        self,
        spec: ServiceSpec,
        functions: dict[str, FunctionSpec],
        init_payload: bytes,
        code_paths: tuple[str, ...] = (),
    ) -> None:
        self.spec = spec
        self.functions = functions
        self.init_payload = init_payload
        self.code_paths = code_paths

    def plan(self) -> ReplicaPlan:
        return ReplicaPlan(
            service=self.spec,
            functions=self.functions,
            init_payload=self.init_payload,
            code_paths=self.code_paths,
        )


class EngineCore(PoolCallbacks):
    """Runs registered functions' executions on replicas, keeping each one in the store.

    Each service runs on the runtime its spec names: ``runtime`` (default: ProcessRuntime) for
    "process", ``runtimes`` for others; a "docker" or "swarm" one not given is made on first use.
    ``engine_id`` names this engine's containers, and must be the same across restarts on
    the same store, so that a new run finds what an earlier one left behind.
    """

    def __init__(
        self,
        store: Store,
        runtime: Runtime | None = None,
        *,
        runtimes: Mapping[str, Runtime] | None = None,
        engine_id: str | None = None,
        kill_grace: float = 5.0,
        drain_timeout: float = 10.0,
        max_lineage_depth: int = 10,
    ) -> None:
        self.store = store
        self.engine_id = engine_id or secrets.token_hex(6)
        self.runtimes: dict[str, Runtime] = {
            "process": runtime or ProcessRuntime(),
            **(runtimes or {}),
        }
        self._started_runtimes: list[Runtime] = []
        self._runtime_lock = anyio.Lock()
        self.kill_grace = kill_grace
        self.drain_timeout = drain_timeout
        self.services: dict[str, Service] = {}
        self.functions: dict[str, FunctionSpec] = {}
        # A name that stands for another at submit time: a deployed service's plain function
        # name (resizer.resize) for the one pinned to its current revision (resizer.resize@2).
        self.aliases: dict[str, str] = {}
        self.pools: dict[str, ServicePool] = {}
        self._retired_pools: set[ServicePool] = set()
        self.inactive: set[str] = set()  # paused services: their pools start Inactive
        # Run once the store is open, before pools start and unfinished executions are taken
        # back (deployed services are restored here); and after the store is closed.
        self.before_recovery: list[Callable[[], Awaitable[None]]] = []
        self.after_stop: list[Callable[[], Awaitable[None]]] = []
        self.live: dict[str, ExecutionRecord] = {}
        self._placement: dict[str, tuple[ServicePool, Slots]] = {}
        self._stop_reasons: dict[str, str] = {}
        self._killed: set[str] = set()
        self._waiters: dict[str, Waiter] = {}
        self._followers: dict[str, anyio.Event] = {}
        self._drain_scope: anyio.CancelScope | None = None
        self._drain_abandoned = False
        self._clock_wake = anyio.Event()
        self._timeouts = DeadlineQueue(lambda: self._clock_wake.set())
        self._grace = DeadlineQueue(lambda: self._clock_wake.set())
        self._backoff = DeadlineQueue(lambda: self._clock_wake.set())
        self._idle_placements = anyio.Event()
        self._task_group: TaskGroup | None = None
        self.running = False
        # Triggers: every stored trigger, the bus for event ones, the clock for cron ones.
        self.trigger_records: dict[str, TriggerRecord] = {}
        self._trigger_ids: dict[str, str] = {}  # name -> id: names are unique, looked up often
        self.bus = EventBus(
            self._create_triggered, lambda t: self.store.save_trigger(t), max_lineage_depth
        )
        self.clock: CronClock[CronFiring] = CronClock(self._cron_stage, self._cron_hand_over)
        # The cron time being staged, as text, and the id time of its next firing.
        self._staging: tuple[datetime | None, str, int] = (None, "", 0)
        self._cron_inputs: dict[str, tuple[object, bytes]] = {}  # id -> (spec, pickled input)
        self.cron_lateness: deque[float] = deque(maxlen=100_000)
        # Made by events (and cron on recovery), dispatched once committed; cron firings of the
        # clock are dispatched at once (see _cron_hand_over).
        self._born: dict[str, ExecutionRecord] = {}
        self._emit_waiting: set[str] = set()
        self._refused: set[str] = set()
        # New executions the store could not take, with why, until their submitter hears it.
        self._unstored: dict[str, str] = {}

    # -- registration and life ------------------------------------------------------------

    def register(self, service: Service) -> None:
        """Add a service and its functions (before or while the engine runs)."""
        self._add(service, replace=False)
        if self._task_group is not None:
            self._task_group.start_soon(self._start_pool, service)

    async def install(self, service: Service) -> None:
        """Add a service, or replace the one of the same name. While the engine runs, the new
        pool is started before this returns and takes over the old one's queue; the old one
        finishes what it runs, then stops."""
        self._add(service, replace=True)
        if self._task_group is not None:
            await self._start_pool(service)

    def runtime_for(self, spec: ServiceSpec) -> Runtime:
        """The runtime that runs ``spec``'s replicas (made on first use)."""
        runtime = self.runtimes.get(spec.runtime)
        if runtime is None:
            # aiodocker is imported only where a service runs in containers.
            if spec.runtime == "docker":
                from .runtimes.docker import DockerRuntime

                runtime = DockerRuntime(self.engine_id)
            elif spec.runtime == "swarm":
                from .runtimes.swarm import SwarmRuntime

                runtime = SwarmRuntime(self.engine_id)
            else:
                raise ConfigurationError(f"service {spec.name!r}: no runtime {spec.runtime!r}")
            self.runtimes[spec.runtime] = runtime
        return runtime

    async def _started_runtime(self, spec: ServiceSpec) -> Runtime:
        runtime = self.runtime_for(spec)
        async with self._runtime_lock:
            if runtime not in self._started_runtimes:
                assert self._task_group is not None
                await runtime.start(self._task_group)
                self._started_runtimes.append(runtime)
        return runtime

    def _add(self, service: Service, *, replace: bool) -> None:
        name = service.spec.name
        old = self.services.get(name)
        if old is not None and not replace:
            raise TriggerfishError(f"a service named {name!r} is already registered")
        self.runtime_for(service.spec).check(service.plan())
        for function in service.functions:
            owner = self.functions.get(function)
            if owner is not None and owner.service != name:
                raise TriggerfishError(f"a function named {function!r} is already registered")
        if old is not None:
            for function in old.functions:
                self.functions.pop(function, None)
        self.services[name] = service
        self.functions.update(service.functions)

    def set_min_replicas(self, service: str, minimum: int) -> None:
        """Change a service's minimum of replicas (an older revision goes down to zero)."""
        registered = self.services[service]
        registered.spec = registered.spec.model_copy(update={"min_replicas": minimum})
        pool = self.pools.get(service)
        if pool is not None:
            pool.set_min_replicas(minimum)

    def set_inactive(self, services: Iterable[str], inactive: bool) -> None:
        """Pause services (their work waits, their replicas stop, their triggers do not fire)
        or resume them."""
        for name in services:
            if inactive:
                self.inactive.add(name)
            else:
                self.inactive.discard(name)
            pool = self.pools.get(name)
            if pool is not None:
                pool.pause() if inactive else pool.resume()

    async def start(self, task_group: TaskGroup) -> None:
        await self.store.start(task_group, self._committed)
        for hook in self.before_recovery:
            await hook()
        self._task_group = task_group
        await task_group.start(self._run_clock, name="engine-clock")
        await task_group.start(self.clock.run, name="cron-clock")
        for service in self.services.values():
            await self._start_pool(service)
        stored = await self.store.list_triggers()
        for trigger in stored:  # before recovery, whose status changes are events too
            self.trigger_records[trigger.id] = trigger
            self._trigger_ids[trigger.spec.name] = trigger.id
            if isinstance(trigger.spec, EventTriggerSpec):
                self.bus.watch(trigger)
        await self._recover()
        self.running = True
        now = time.time()
        for trigger in stored:
            if isinstance(trigger.spec, CronTriggerSpec):
                self._arm(trigger, now, recovering=True)
        logger.info("engine_started", services=sorted(self.services))

    async def _start_pool(self, service: Service) -> None:
        assert self._task_group is not None
        name = service.spec.name
        runtime = await self._started_runtime(service.spec)
        pool = ServicePool(
            service.spec,
            service.functions,
            service.init_payload,
            runtime,
            self,
            code_paths=service.code_paths,
        )
        pool.inactive = name in self.inactive
        old = self.pools.get(name)
        self.pools[name] = pool  # from now on, new executions queue here
        if old is not None:
            self._retired_pools.add(old)
            waiting = old.retire()
        else:  # executions waiting for this function
            waiting = [
                r
                for r in self.live.values()
                if r.status is PENDING
                and r.id not in self._backoff
                and r.function in service.functions
            ]
        now = time.time()
        for record in waiting:
            if record.function in service.functions:
                pool.enqueue(record)
            else:
                record.error = ("UnknownFunctionError", f"{name} has no {record.function}", "")
                self._finish(record, ExecutionStatus.FAILED, record.error[1], now)
        await self._task_group.start(pool.run, self._task_group, name=f"pool-{name}")

    async def _recover(self) -> None:
        """Take back what a previous run of the engine left unfinished."""
        now = time.time()
        for record in await self.store.find(statuses=UNFINISHED):
            if record.id in self.live:
                continue
            self.live[record.id] = record
            if record.status is RUNNING:
                error = (
                    "EngineStoppedError",
                    f"the engine stopped while attempt {record.attempts} ran",
                    "",
                )
                self._attempt_failed(record, error, now=now, timed_out=False)
            elif record.status is ExecutionStatus.CANCELLING:
                self._finish(
                    record, ExecutionStatus.CANCELLED, "cancelled while the engine was down", now
                )
            else:
                self._requeue(record)
            logger.info("execution_recovered", execution_id=record.id, status=record.status.value)

    def abandon_drain(self) -> None:
        """Stop waiting for running executions (now, or when ``stop`` gets there): they are
        put back to PENDING, as when the drain time runs out."""
        self._drain_abandoned = True
        if self._drain_scope is not None:
            self._drain_scope.cancel()

    async def stop(self) -> None:
        """Stop taking work, let running executions finish within the drain time, put the rest
        back to PENDING for the next start, stop every replica and close the store."""
        if not self.running:
            return
        self.running = False
        with anyio.CancelScope(shield=True):
            for pool in self.pools.values():
                pool.paused = True
            if self._placement and not self._drain_abandoned:
                self._idle_placements = anyio.Event()
                with anyio.move_on_after(self.drain_timeout) as self._drain_scope:
                    await self._idle_placements.wait()
                self._drain_scope = None
            now = time.time()
            for execution_id in list(self._placement):
                _, slots = self._placement.pop(execution_id)
                record = slots.assigned[execution_id]
                if record.status is ExecutionStatus.CANCELLING:  # a cancel is not undone
                    record.finished_at = now
                    record.change(ExecutionStatus.CANCELLED, "cancelled as the engine stopped", now)
                    self.store.save(record)
                    continue
                record.attempts -= 1  # not the function's fault: this attempt does not count
                record.change(
                    PENDING, "the engine stopped while it ran; it runs again at the next start", now
                )
                self.store.save(record)
            async with anyio.create_task_group() as tg:
                for pool in [*self.pools.values(), *self._retired_pools]:
                    tg.start_soon(pool.stop, self.kill_grace)
            for runtime in self._started_runtimes:
                await runtime.aclose()
            self._started_runtimes.clear()
            await self.store.aclose()
            for hook in self.after_stop:
                await hook()
            for waiter in self._waiters.values():  # nobody waits forever on a stopped engine
                waiter.event.set()
            self._waiters.clear()
            for follower in self._followers.values():
                follower.set()
            self._followers.clear()
        logger.info("engine_stopped")

    # -- starting, reading, cancelling ----------------------------------------------------

    def check_running(self) -> None:
        if not self.running:
            raise EngineClosedError("the engine is not running; use 'async with engine:'")

    def spec_of(self, function: str) -> FunctionSpec:
        """The spec of a function, or of the function an alias stands for now."""
        try:
            return self.functions[self.aliases.get(function, function)]
        except KeyError:
            known = ", ".join(sorted({*self.functions, *self.aliases})) or "none"
            raise UnknownFunctionError(
                f"no function named {function!r} is registered (registered: {known})"
            ) from None

    async def submit(
        self,
        function: str,
        inputs: Sequence[bytes],
        *,
        parent_id: str | None = None,
        lineage: tuple[str, ...] = (),
    ) -> list[str]:
        """Store new executions of ``function``, one per pickled input; returns their ids once
        committed. They are queued at once, so they may already run by then."""
        records = self._new_records(function, inputs, parent_id, lineage)
        await self.store.insert(records)
        self._raise_unstored(records)
        return [record.id for record in records]

    def _raise_unstored(self, records: Iterable[ExecutionRecord | str]) -> None:
        """Tell the submitter of new executions that the store could not take."""
        if not self._unstored:
            return
        ids = [r if isinstance(r, str) else r.id for r in records]
        whys = [(i, why) for i in ids if (why := self._unstored.pop(i, None)) is not None]
        if whys:
            execution_id, why = whys[0]
            raise ConfigurationError(f"execution {execution_id} could not be stored: {why}")

    async def submit_watched(
        self,
        function: str,
        inputs: Sequence[bytes],
        *,
        parent_id: str | None = None,
        lineage: tuple[str, ...] = (),
    ) -> list[tuple[str, Waiter]]:
        """``submit``, with a waiter for each execution registered before any can finish."""
        records = self._new_records(function, inputs, parent_id, lineage)
        watched = [(record.id, self._watch(record.id)) for record in records]
        await self.store.insert(records)
        self._raise_unstored(records)
        return watched

    def _new_records(
        self,
        function: str,
        inputs: Sequence[bytes],
        parent_id: str | None,
        lineage: tuple[str, ...] = (),
    ) -> list[ExecutionRecord]:
        self.check_running()
        spec = self.spec_of(function)
        pool = self.pools[spec.service]
        now = time.time()
        records = []
        for blob in inputs:
            record = ExecutionRecord(
                id=new_execution_id(),
                function=spec.name,
                service=spec.service,
                input=blob,
                max_attempts=spec.max_attempts,
                created_at=now,
                parent_id=parent_id,
                lineage=lineage,
            )
            record.status_log.append((now, PENDING, None, ""))
            self.live[record.id] = record
            records.append(record)
        for record in records:  # queued before the commit: dispatch overlaps with it
            pool.enqueue(record)
        return records

    async def record(self, execution_id: str) -> ExecutionRecord:
        """The freshest state of an execution: live if unfinished, else from the store."""
        record = self.live.get(execution_id)
        if record is None:
            record = await self.store.get(execution_id)
        if record is None:
            raise ExecutionNotFoundError(f"no execution has the id {execution_id!r}")
        return record

    def change_event(self, execution_id: str) -> anyio.Event:
        """An event set at the next log line, progress update or status change of a live
        execution. Take it before reading the record, so no change falls in between."""
        event = self._followers.get(execution_id)
        if event is None:
            event = self._followers[execution_id] = anyio.Event()
        return event

    def _touched(self, execution_id: str) -> None:
        event = self._followers.pop(execution_id, None)
        if event is not None:
            event.set()

    def _watch(self, execution_id: str) -> Waiter:
        waiter = self._waiters.get(execution_id)
        if waiter is None:
            waiter = self._waiters[execution_id] = Waiter()
        return waiter

    async def wait(self, execution_id: str, timeout: float | None = None) -> ExecutionRecord:
        """The record once its final status is committed. TimeoutError after ``timeout``."""
        with anyio.fail_after(timeout):
            if execution_id in self.live:
                self.check_running()
                return await self.wait_for(self._watch(execution_id))
            stored = await self.store.get(execution_id)
            if stored is None:
                raise ExecutionNotFoundError(f"no execution has the id {execution_id!r}")
            if stored.terminated:
                return stored
            if execution_id not in self.live:
                # Unfinished in the store but not live here: only a running engine takes it on.
                self.check_running()
            return await self.wait_for(self._watch(execution_id))

    @staticmethod
    async def wait_for(waiter: Waiter) -> ExecutionRecord:
        await waiter.event.wait()
        if waiter.record is None:
            raise EngineClosedError("the engine stopped before the execution finished")
        return waiter.record

    async def cancel(self, execution_id: str) -> None:
        """Cancel an execution: at once if queued, via CANCELLING if running; no-op if final."""
        self.check_running()
        record = await self.record(execution_id)
        if record.terminated or record.id not in self.live:
            return
        now = time.time()
        placed = self._placement.get(execution_id)
        if placed is not None:
            if record.status is not ExecutionStatus.CANCELLING:
                self._status(record, ExecutionStatus.CANCELLING, "cancel requested", now)
                self._ask_to_stop(execution_id, placed[1], "cancel")
            return
        pool = self.pools.get(record.service)
        if pool is not None:
            pool.remove(record)
        self._backoff.disarm(execution_id)
        self._finish(record, ExecutionStatus.CANCELLED, "cancelled before it ran", now)

    async def rerun(self, function: str, execution_ids: Iterable[str] | None = None) -> list[str]:
        """Run FAILED and TIMED_OUT executions of ``function`` again; returns their ids."""
        self.check_running()
        spec = self.spec_of(function)
        await self.store.flush()
        failed = (ExecutionStatus.FAILED, ExecutionStatus.TIMED_OUT)
        if execution_ids is None:
            records = await self.store.find(function=function, statuses=failed)
        else:
            records = [await self.record(i) for i in execution_ids]
            records = [
                r for r in records if r.status in failed and belongs_to(r.function, function)
            ]
        now = time.time()
        # Claimed with no await in between: a concurrent rerun finds them live and skips them.
        records = [r for r in records if r.id not in self.live]
        for record in records:
            self.live[record.id] = record
            own = self.functions.get(record.function, spec)  # an older revision's own spec
            record.max_attempts = record.attempts + own.max_attempts
            record.error = None
            record.result = None
            record.result_view = None
            record.finished_at = None
            self._status(record, PENDING, "rerun", now)
            self._requeue(record)
        return [r.id for r in records]

    def service_status(self, name: str) -> ServiceStatus:
        pool = self.pools.get(name)
        if pool is None:
            raise UnknownFunctionError(f"no service named {name!r}")
        error = None
        if pool.error is not None:
            error = ErrorInfo(type=pool.error[0], message=pool.error[1], traceback=pool.error[2])
        state = pool.state
        if not self.running or pool.inactive:
            state = ServiceState.INACTIVE
        elif state is ServiceState.INITIALIZING and not pool.starting and not pool.replicas:
            state = ServiceState.ACTIVE  # nothing to start yet: it scales up from zero on demand
        return ServiceStatus(
            name=name,
            state=state,
            replicas=sum(1 for s in pool.replicas.values() if s.open),
            busy_slots=pool.busy_slots,
            queued=pool.queued,
            error=error,
        )

    # -- events and triggers --------------------------------------------------------------

    async def emit(
        self,
        resource: str,
        action: str,
        body: Any = None,
        resource_id: str | None = None,
        lineage: tuple[str, ...] = (),
    ) -> list[str]:
        """Publish an event; returns the ids of the executions it caused, once committed."""
        self.check_running()
        for name, value in (("resource", resource), ("action", action)):
            if not isinstance(value, str) or not value:
                raise ConfigurationError(f"{name} must be a non-empty string, got {value!r}")
            _json.check(value, name)
        _json.check(body, "body")
        if resource_id is None and isinstance(body, dict) and body.get("id") is not None:
            resource_id = str(body["id"])
        if resource_id is not None:
            _json.check(resource_id, "resource_id")
        created = [r.id for r in self.bus.publish(resource, action, body, resource_id, lineage)]
        if not created:
            return []
        self._emit_waiting.update(created)
        try:
            await self.store.flush()
            self._raise_unstored(created)
            return [i for i in created if i not in self._refused]
        finally:
            self._emit_waiting.difference_update(created)
            self._refused.difference_update(created)

    def _create_triggered(
        self,
        trigger: TriggerRecord,
        body: Any,
        lineage: tuple[str, ...],
        event: dict[str, Any],
        once: tuple[str, str] | None,
    ) -> ExecutionRecord | None:
        now = time.time()
        record = self._triggered_record(trigger, body, lineage, event)
        if record is None:
            self._not_fired(trigger, now)
            return None
        record.id = new_execution_id()
        self._hand_over(record, once, _fired_by(trigger), now)
        self._adopt(record)
        return record

    def _triggered_record(
        self, trigger: TriggerRecord, body: Any, lineage: tuple[str, ...], event: dict[str, Any]
    ) -> ExecutionRecord | None:
        """A firing's record, not created yet (no id, no time); None if its function is not
        registered or its service is paused (see _not_fired)."""
        spec = self._trigger_function(trigger)
        if spec is None or spec.service in self.inactive:
            return None
        if isinstance(trigger.spec, EventTriggerSpec):
            payload = _pickled_input((body,), trigger.spec.input)
        else:  # a cron firing's input is the same every time: pickled once per spec
            cached = self._cron_inputs.get(trigger.id)
            if cached is None or cached[0] is not trigger.spec:
                cached = (trigger.spec, _pickled_input((), trigger.spec.input))
                self._cron_inputs[trigger.id] = cached
            payload = cached[1]
        return ExecutionRecord(
            id="",
            function=spec.name,
            service=spec.service,
            input=payload,
            max_attempts=spec.max_attempts,
            created_at=0.0,
            trigger_id=trigger.id,
            event=event,
            lineage=lineage,
        )

    def _hand_over(
        self, record: ExecutionRecord, once: tuple[str, str] | None, message: str, now: float
    ) -> None:
        """Create a triggered execution: it exists from ``now``; dispatched once committed."""
        _stamp_created(record, message, now)
        self.store.create(record, once)

    def _adopt(self, record: ExecutionRecord) -> None:
        self.live[record.id] = record
        self._born[record.id] = record

    def _trigger_function(self, trigger: TriggerRecord) -> FunctionSpec | None:
        function = trigger.spec.function
        return self.functions.get(self.aliases.get(function, function))

    def _not_fired(self, trigger: TriggerRecord, now: float) -> None:
        """Record why a matching event or a due cron time created no execution."""
        function = trigger.spec.function
        spec = self._trigger_function(trigger)
        if spec is None:
            reason = f"function {function!r} is not registered"
            logger.error("trigger_function_missing", trigger_id=trigger.id, function=function)
        else:
            reason = f"service {spec.service!r} is paused"
            logger.info("trigger_service_paused", trigger_id=trigger.id, service=spec.service)
        self._suppress(trigger, reason, now)

    def _suppress(self, trigger: TriggerRecord, reason: str, now: float) -> None:
        trigger.suppressed += 1
        trigger.last_suppressed_reason = reason
        trigger.last_suppressed_at = now
        self.store.save_trigger(trigger)

    def _cron_stage(self, trigger_id: str, when: datetime) -> CronFiring | None:
        """Build a cron firing ahead of its time (see CronClock); creates nothing."""
        trigger = self.trigger_records.get(trigger_id)
        if trigger is None:
            return None
        staging, scheduled, id_ns = self._staging
        if staging != when:  # thousands of firings share a time: format it once
            scheduled, id_ns = when.isoformat(), (when - EPOCH) // timedelta(microseconds=1) * 1000
        self._staging = (when, scheduled, id_ns + 1)
        event = {"resource": "Cron", "action": "tick", "scheduled": scheduled}
        record = self._triggered_record(trigger, None, (trigger.id,), event)
        if record is not None:
            (record.id,) = execution_ids_from(id_ns, 1)
        return CronFiring(trigger, record, (trigger.id, scheduled), _fired_by(trigger), id_ns)

    def _cron_hand_over(
        self, firings: list[CronFiring], when: datetime, *, recovered: bool = False
    ) -> None:
        """Create staged cron firings, now that ``when`` has come: each is timed on its own,
        in a loop kept to what creating one needs.

        A firing of the clock goes to its pool at once, ahead of its commit: the clock only
        fires times after the engine started, so no fire record can refuse it, and a crash
        before the commit leaves the trigger's cursor before the time (it rides with a later
        commit), so the restart fires it again under the trigger's misfire policy. A firing
        made on ``recovered`` start waits for its commit like an event's: its time may have
        fired before the crash, and its fire record then refuses it."""
        if not self.running or not firings:
            return
        due = when.timestamp()
        # Staged in order, so their ids run from the first to the last.
        if not claim_execution_ids(firings[0].id_ns, firings[-1].id_ns):
            for firing, execution_id in zip(firings, new_execution_ids(len(firings)), strict=True):
                if firing.record is not None:
                    firing.record.id = execution_id
        clock, lateness, requeue = time.time, self.cron_lateness.append, self._requeue
        inactive, created = self.inactive, []
        collecting = gc.isenabled()
        gc.disable()  # a full collection of a large heap would stall the firings behind it
        try:
            for firing in firings:
                record, now = firing.record, clock()
                if record is None or (inactive and record.service in inactive):  # or paused
                    self._not_fired(firing.trigger, now)
                    continue
                _stamp_created(record, firing.message, now)
                if not recovered:
                    requeue(record)
                lateness(now - due)
                created.append((firing.trigger, record, firing.once))
        finally:
            if collecting:
                gc.enable()
        # Stored after the loop, so that the pools wake before the store's writer does: a
        # commit's snapshots must not stand between a firing and its dispatch.
        create = self.store.create
        for trigger, record, once in created:
            create(record, once)
            if recovered:
                self._adopt(record)  # counted as fired once committed
            else:
                self.live[record.id] = record
                trigger.fired += 1
        for firing in firings:
            firing.trigger.cursor = due
            self.store.save_trigger(firing.trigger)

    def _arm(self, trigger: TriggerRecord, now: float, *, recovering: bool = False) -> None:
        """Make a trigger take effect (or stop, if inactive)."""
        spec = trigger.spec
        if isinstance(spec, EventTriggerSpec):
            self.bus.watch(trigger)
            return
        if not spec.active:
            self.clock.unschedule(trigger.id)
            return
        schedule = CronSchedule.parse(spec.cron, spec.timezone, spec.start_at, spec.end_at)
        now_dt = datetime.fromtimestamp(now, UTC)
        if recovering and trigger.cursor is not None and trigger.cursor < now:
            cursor = datetime.fromtimestamp(trigger.cursor, UTC)
            plan = plan_misfires(schedule, spec.misfire, spec.misfire_grace, cursor, now_dt)
            for when in plan.run:
                firing = self._cron_stage(trigger.id, when)
                if firing is not None:
                    self._cron_hand_over([firing], when, recovered=True)
            missed = len(plan.missed) + plan.missed_beyond
            if missed:
                trigger.missed += missed
                trigger.last_missed_at = (plan.missed or plan.run)[-1].timestamp()
                logger.warning(
                    "cron_missed",
                    trigger_id=trigger.id,
                    trigger=spec.name,
                    missed=missed,
                    policy=spec.misfire,
                    ran=len(plan.run),
                )
        trigger.cursor = now
        self.store.save_trigger(trigger)
        self.clock.schedule(trigger.id, schedule, now_dt)

    def trigger_named(self, name: str) -> TriggerRecord | None:
        trigger_id = self._trigger_ids.get(name)
        return None if trigger_id is None else self.trigger_records[trigger_id]

    def find_trigger(self, trigger: str) -> TriggerRecord:
        """A trigger by id or by name."""
        found = self.trigger_records.get(trigger) or self.trigger_named(trigger)
        if found is None:
            raise TriggerNotFoundError(f"no trigger has the id or name {trigger!r}")
        return found

    async def put_trigger(self, spec: TriggerSpec, trigger_id: str | None = None) -> TriggerRecord:
        """Create a trigger, or replace the spec of ``trigger_id``; stored before returning."""
        self.check_running()
        validate_spec(spec)
        self.spec_of(spec.function)
        clash = self.trigger_named(spec.name)
        if clash is not None and clash.id != trigger_id:
            raise ConfigurationError(f"a trigger named {spec.name!r} exists already ({clash.id})")
        now = time.time()
        if trigger_id is None:
            trigger = TriggerRecord(id=f"trg-{secrets.token_hex(6)}", spec=spec, created_at=now)
        else:
            trigger = self.find_trigger(trigger_id)
            if type(trigger.spec) is not type(spec):
                raise ConfigurationError("an event trigger cannot become a cron trigger, or back")
            del self._trigger_ids[trigger.spec.name]  # added again below: a rename frees it
            trigger.spec = spec
        self.trigger_records[trigger.id] = trigger
        self._trigger_ids[spec.name] = trigger.id
        self._arm(trigger, now)
        self.store.save_trigger(trigger)
        await self.store.flush()
        logger.info("trigger_saved", trigger_id=trigger.id, trigger=spec.name, active=spec.active)
        return trigger

    async def delete_trigger(self, trigger: str) -> None:
        self.check_running()
        found = self.find_trigger(trigger)
        del self.trigger_records[found.id]
        del self._trigger_ids[found.spec.name]
        self.bus.forget(found.id)
        self.clock.unschedule(found.id)
        self._cron_inputs.pop(found.id, None)
        self.store.delete_trigger(found.id)
        await self.store.flush()
        logger.info("trigger_deleted", trigger_id=found.id, trigger=found.spec.name)

    # -- the status machine ---------------------------------------------------------------

    def _committed(
        self,
        written: Sequence[tuple[str, ExecutionStatus]],
        refused: Collection[str],
        failed: Mapping[str, str],
    ) -> None:
        """After each commit: start what triggers made, forget finished executions, wake who
        waits for them, and drop executions whose once key had fired before or that the store
        could not take."""
        for execution_id, why in failed.items():
            self._unstorable(execution_id, why)
        for execution_id in refused:
            if self._born.pop(execution_id, None) is None:
                self._fired_again(execution_id)
                continue
            self.live.pop(execution_id, None)
            if execution_id in self._emit_waiting:
                self._refused.add(execution_id)
        for execution_id, status in written:
            born = self._born.pop(execution_id, None)
            if born is not None:
                trigger = self.trigger_records.get(born.trigger_id or "")
                if trigger is not None:
                    trigger.fired += 1
                    self.store.save_trigger(trigger)
                if born.status is PENDING and execution_id not in self._backoff:
                    self._requeue(born)
            if status in UNFINISHED:
                continue
            record = self.live.get(execution_id)
            if record is None or not record.terminated:
                continue  # already run again (rerun) since this commit was prepared
            del self.live[execution_id]
            waiter = self._waiters.pop(execution_id, None)
            if waiter is not None:
                waiter.record = record
                waiter.event.set()

    def _unstorable(self, execution_id: str, why: str) -> None:
        """An execution the store could not write (its own fault, such as a value no row can
        hold): it is dropped, and whoever submitted or waits for it hears why."""
        self._born.pop(execution_id, None)
        record = self.live.pop(execution_id, None)
        if record is None:
            return
        pool = self.pools.get(record.service)
        if pool is not None and execution_id not in self._placement:
            pool.remove(record)
        self._backoff.disarm(execution_id)
        self._unstored[execution_id] = why
        waiter = self._waiters.pop(execution_id, None)
        if waiter is not None:
            record.status = ExecutionStatus.FAILED
            record.error = ("StoreError", f"the store could not take it: {why}", "")
            waiter.record = record
            waiter.event.set()

    def _fired_again(self, execution_id: str) -> None:
        """A cron firing that went to its pool before its commit was refused by its fire
        record. Only a wall clock stepped back across a restart does that; the run has begun
        (or is queued), so it is kept and stored, without a fire record, and logged."""
        record = self.live.get(execution_id)
        if record is None:
            return
        logger.warning(
            "cron_fired_again",
            execution_id=execution_id,
            trigger_id=record.trigger_id,
            scheduled=record.event.get("scheduled") if record.event else None,
        )
        self.store.save(record)

    def _status(
        self, record: ExecutionRecord, status: ExecutionStatus, message: str, now: float
    ) -> None:
        """Every status change goes through here: logged, saved, and published on the bus
        (resource Execution, action statusChanged) when a trigger listens to that."""
        record.change(status, message, now)
        self.store.save(record)
        if self._followers:
            self._touched(record.id)
        if self.bus.listens_to("Execution", "statusChanged"):
            self.bus.publish(
                "Execution", "statusChanged", self._summary(record), record.id, record.lineage
            )

    @staticmethod
    def _summary(record: ExecutionRecord) -> dict[str, Any]:
        """An execution as the body of its statusChanged event."""
        body: dict[str, Any] = {
            "id": record.id,
            "function": record.function,
            "service": record.service,
            "status": record.status.value,
            "attempts": record.attempts,
            "parent_id": record.parent_id,
            "trigger_id": record.trigger_id,
            "error": None,
            "result": None,
        }
        if record.error is not None:
            body["error"] = {"type": record.error[0], "message": record.error[1]}
        if record.status is ExecutionStatus.SUCCEEDED and record.result_view is not None:
            # The result as its replica showed it in JSON, never unpickled here; one too
            # large for an event (or with no JSON form) is left out, and its kind says so.
            kind, text = record.result_view
            body["result_encoding"] = kind
            if kind == JSON and len(text) <= EVENT_RESULT_LIMIT:
                try:  # read as input from outside: a replica's text could be anything
                    body["result"] = _json.parse(text, "result")
                except ValueError:  # not the JSON its replica claimed
                    body["result_encoding"] = REPR
        return body

    def _finish(
        self, record: ExecutionRecord, status: ExecutionStatus, message: str, now: float
    ) -> None:
        record.finished_at = now
        self._status(record, status, message, now)
        if debug_enabled():
            logger.debug("execution_finished", execution_id=record.id, status=status.value)

    def _requeue(self, record: ExecutionRecord, *, front: bool = False) -> None:
        pool = self.pools.get(record.service)
        if pool is None:
            logger.warning(
                "execution_waiting_for_function", execution_id=record.id, function=record.function
            )
        elif front:
            pool.enqueue_front(record)
        else:
            pool.enqueue(record)

    def _attempt_failed(
        self, record: ExecutionRecord, error: ErrorTriple, *, now: float, timed_out: bool
    ) -> None:
        record.error = error
        record.failed_attempts += 1
        spec = self.functions.get(record.function)
        if record.attempts < record.max_attempts:
            delay = spec.backoff_for(record.attempts) if spec else 0.0
            summary = f"{error[0]}: {error[1]}"[:300]
            message = f"attempt {record.attempts} failed ({summary}); retry in {delay:g}s"
            self._status(record, PENDING, message, now)
            if delay > 0:
                self._backoff.arm(record.id, delay, time.monotonic())
            else:
                self._requeue(record)
            return
        status = ExecutionStatus.TIMED_OUT if timed_out else ExecutionStatus.FAILED
        self._finish(record, status, f"{error[0]}: {error[1]}"[:300], now)

    def _unplace(self, execution_id: str) -> None:
        self._placement.pop(execution_id, None)
        self._timeouts.disarm(execution_id)
        self._grace.disarm(execution_id)
        if not self._placement:
            self._idle_placements.set()

    # -- PoolCallbacks: what the pools tell us --------------------------------------------

    def dispatched(self, record: ExecutionRecord, slots: Slots) -> None:
        now = time.time()
        record.attempts += 1
        if record.started_at is None:
            record.started_at = now
        record.progress = None  # progress belongs to an attempt
        self._status(record, RUNNING, "", now)
        pool = self.pools[record.service]
        self._placement[record.id] = (pool, slots)
        self._timeouts.arm(record.id, self.functions[record.function].timeout, time.monotonic())
        if debug_enabled():
            logger.debug("execution_started", execution_id=record.id, replica_id=slots.replica.id)

    def replica_messages(self, pool: ServicePool, slots: Slots, messages: list[Any]) -> None:
        """What a replica said. A message that is not of the protocol's shape (a replica that
        is broken, or hostile) ends that replica, never the engine."""
        now = time.time()
        save = self.store.save
        try:
            for message in messages:
                kind = message[0]
                if kind == protocol.DONE:
                    self._done(pool, slots, message[1], message[2], message[3], message[4], now)
                    continue
                if kind == protocol.CALL:
                    assert self._task_group is not None
                    self._task_group.start_soon(self._serve_call, slots, message)
                    continue
                record = slots.assigned.get(message[1])
                if record is None:
                    continue
                if kind == protocol.LOG:
                    if len(record.logs) < MAX_LOG_ENTRIES:
                        text = message[3]
                        if len(text) > MAX_LOG_TEXT:
                            text = text[:MAX_LOG_TEXT] + "\n[triggerfish: line truncated]\n"
                        record.logs.append((now, message[2], text))
                    elif len(record.logs) == MAX_LOG_ENTRIES:
                        record.logs.append((now, "stderr", "[triggerfish: log truncated]\n"))
                elif kind == protocol.PROGRESS:
                    record.progress = message[2]
                    record.status_log.append((now, record.status, message[2], message[3]))
                    if record.id in self._timeouts:  # progress restarts the timeout
                        self._timeouts.arm(
                            record.id, self.functions[record.function].timeout, time.monotonic()
                        )
                elif kind == protocol.YIELD:
                    record.result = message[2]
                    record.result_view = checked_view(message[3])
                save(record)
                if self._followers:
                    self._touched(record.id)
        except (IndexError, KeyError, TypeError, ValueError, AttributeError):
            logger.exception("replica_message_refused", replica_id=slots.replica.id)
            slots.replica.kill()

    def _done(
        self,
        pool: ServicePool,
        slots: Slots,
        execution_id: str,
        ok: bool,
        payload: Any,
        view: Any,
        now: float,
    ) -> None:
        record = slots.assigned.get(execution_id)
        if record is None:
            return
        pool.release(slots, record)
        self._unplace(execution_id)
        reason = self._stop_reasons.pop(execution_id, None)
        if reason == "cancel":
            self._finish(record, ExecutionStatus.CANCELLED, "cancelled while it ran", now)
        elif reason == "timeout":
            self._timed_out(record, now)
        elif ok and len(payload) > MAX_RESULT_BYTES:
            error = (
                "SerializationError",
                f"the result is {len(payload)} bytes pickled; "
                f"at most {MAX_RESULT_BYTES} are stored",
                "",
            )
            self._attempt_failed(record, error, now=now, timed_out=False)
        elif ok:
            record.result = payload
            record.result_view = checked_view(view)
            record.error = None
            self._finish(record, ExecutionStatus.SUCCEEDED, "", now)
        else:
            etype, emsg, etb = payload
            self._attempt_failed(record, (etype, emsg, etb), now=now, timed_out=False)

    def _timed_out(self, record: ExecutionRecord, now: float) -> None:
        timeout = self.functions[record.function].timeout
        error = ("TimeoutError", f"no result or progress within the {timeout:g}s timeout", "")
        self._attempt_failed(record, error, now=now, timed_out=True)

    def replica_lost(self, pool: ServicePool, slots: Slots, reason: str) -> None:
        now = time.time()
        replica_id = slots.replica.id
        killed_by_us = replica_id in self._killed
        self._killed.discard(replica_id)
        for record in list(slots.assigned.values()):
            self._unplace(record.id)
            stop_reason = self._stop_reasons.pop(record.id, None)
            if stop_reason == "cancel":
                self._finish(
                    record, ExecutionStatus.CANCELLED, "cancelled; its replica was killed", now
                )
            elif stop_reason == "timeout":
                self._timed_out(record, now)
            elif killed_by_us:
                record.attempts -= 1  # an innocent bystander: this attempt does not count
                self._status(record, PENDING, f"requeued: replica {replica_id} was replaced", now)
                pool.enqueue_front(record)
            else:
                error = ("ReplicaDiedError", f"replica {replica_id} running it died: {reason}", "")
                self._attempt_failed(record, error, now=now, timed_out=False)
        slots.assigned.clear()

    def init_failed(self, pool: ServicePool, error: ErrorTriple) -> None:
        now = time.time()
        logger.error(
            "service_init_failed", service=pool.spec.name, error_type=error[0], error=error[1]
        )
        message = f"service {pool.spec.name!r} failed to initialize: {error[0]}: {error[1]}"
        if any(s.open for s in pool.replicas.values()):
            return  # other replicas are serving: the queue waits for them
        for record in pool.drain_queue():
            record.error = ("ServiceInitError", message, error[2])
            self._finish(record, ExecutionStatus.FAILED, message[:300], now)

    # -- stopping executions, and the clock -----------------------------------------------

    def _ask_to_stop(self, execution_id: str, slots: Slots, reason: str) -> None:
        self._stop_reasons[execution_id] = reason
        slots.replica.send((protocol.CANCEL, execution_id))
        self._grace.arm(execution_id, self.kill_grace, time.monotonic())

    async def _run_clock(self, *, task_status: TaskStatus[None]) -> None:
        queues = (self._timeouts, self._grace, self._backoff)
        task_status.started()
        while True:
            deadlines = [d for q in queues if (d := q.next_deadline()) is not None]
            delay = max(0.0, min(deadlines) - time.monotonic()) if deadlines else math.inf
            with anyio.move_on_after(delay):
                await self._clock_wake.wait()
            self._clock_wake = anyio.Event()
            now = time.monotonic()
            for key in self._timeouts.pop_expired(now):
                placed = self._placement.get(str(key))
                if placed is not None and str(key) not in self._stop_reasons:
                    logger.info("execution_timed_out", execution_id=key)
                    self._ask_to_stop(str(key), placed[1], "timeout")
            for key in self._grace.pop_expired(now):
                placed = self._placement.get(str(key))
                if placed is not None:
                    replica = placed[1].replica
                    logger.warning(
                        "replica_killed",
                        replica_id=replica.id,
                        execution_id=key,
                        reason="the execution did not stop within the kill grace",
                    )
                    self._killed.add(replica.id)
                    replica.kill()
            for key in self._backoff.pop_expired(now):
                record = self.live.get(str(key))
                if record is not None and record.status is PENDING:
                    self._requeue(record)

    # -- nested invocations from inside a replica -----------------------------------------

    async def _serve_call(self, slots: Slots, message: tuple[Any, ...]) -> None:
        _, parent_id, request_id, op, payload = message
        parent = self.live.get(parent_id)
        lineage = parent.lineage if parent is not None else ()
        reply: Any
        try:
            if op == "start":
                function, blob = payload
                (reply,) = await self.submit(function, [blob], parent_id=parent_id, lineage=lineage)
            elif op == "call_remote":
                function, blob = payload
                ((_, waiter),) = await self.submit_watched(
                    function, [blob], parent_id=parent_id, lineage=lineage
                )
                reply = raise_for_outcome(await self.wait_for(waiter))
            elif op == "emit":  # the body comes as JSON text: read under the boundary's rules
                resource, action, text, resource_id = payload
                body = _json.parse(text, "body")
                reply = await self.emit(resource, action, body, resource_id, lineage)
            elif op == "await_result":
                child, timeout = payload
                reply = raise_for_outcome(await self.wait(child, timeout))
            else:
                raise TriggerfishError(f"unknown nested operation {op!r}")
            answer: tuple[Any, ...] = (protocol.REPLY, request_id, True, reply)
        except InvocationFailedError as exc:
            extra = {
                "execution_id": exc.execution_id,
                "error_type": exc.error_type,
                "error_message": exc.error_message,
                "remote_traceback": exc.remote_traceback,
            }
            answer = (protocol.REPLY, request_id, False, (type(exc).__name__, exc.args[0], extra))
        except (TriggerfishError, TimeoutError) as exc:
            answer = (protocol.REPLY, request_id, False, (type(exc).__name__, str(exc), {}))
        except Exception as exc:  # bad arguments from inside a function fail the call, not us
            refusal = f"the nested {op} was refused: {type(exc).__name__}: {exc}"
            answer = (protocol.REPLY, request_id, False, ("TriggerfishError", refusal, {}))
        slots.replica.send(answer)
