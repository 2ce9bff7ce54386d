"""Per-service queues, dispatch within caps, and autoscaling between min and max replicas.

Each service has its own pool: its own queue per function and its own replicas, so one flooded
service cannot starve another. Within a service, functions with work take turns (round robin)
and a function at its ``max_concurrency`` steps aside without blocking the others. Dispatch is
driven by events (work queued, a slot freed, a replica ready), never by polling.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import anyio
from anyio.abc import TaskGroup, TaskStatus

from ..errors import ErrorTriple, ImageBuildError, ReplicaDiedError
from ..log import logger
from ..models import ExecutionRecord, FunctionSpec, ServiceSpec, ServiceState
from .deadlines import DeadlineQueue
from .replica import protocol
from .runtimes.abc import Replica, ReplicaListener, ReplicaPlan, Runtime

#: On a store several engines share, how many executions a pool takes queued ahead of what
#: its replicas run, at least; or as many as they run at most, or as many as they finish in
#: ``AHEAD`` seconds while busy, if that is more. The rest wait in the shared queue for
#: whichever engine has room: work that this engine would finish within a second is not
#: worth a round trip through the database (a claim costs the server a row write).
PREFETCH = 32
AHEAD = 1.0
RATE_AFTER = 0.01  # seconds of busy time, and executions, before a pool's rate is trusted
RATE_DONE = 50


class Slots:
    """A replica as the scheduler sees it: is it ready, and what runs on it."""

    __slots__ = ("assigned", "ready", "replica", "retiring")

    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        self.ready = False
        self.retiring = False  # being stopped (idle): takes no more work
        self.assigned: dict[str, ExecutionRecord] = {}

    @property
    def open(self) -> bool:
        return self.ready and not self.retiring


class PoolListener(Protocol):
    """What a pool reports, in the order it happens (the engine's ``PoolReports`` hears it).

    Each is called on the event loop and must not block. ``dispatched`` comes before the RUN
    message is sent; ``replica_messages`` carries every message of a ready replica but READY
    and INIT_FAILED, which the pool handles itself and reports as ``replica_ready`` and
    ``init_failed``; ``replica_lost`` is a ready replica that exited without being stopped,
    with the executions it held still in ``slots.assigned``.
    """

    def dispatched(self, record: ExecutionRecord, slots: Slots, spec: FunctionSpec) -> None: ...

    def replica_ready(self, pool: ServicePool, slots: Slots) -> None: ...

    def replica_messages(self, pool: ServicePool, slots: Slots, messages: list[Any]) -> None: ...

    def replica_lost(self, pool: ServicePool, slots: Slots, reason: str) -> None: ...

    def init_failed(self, pool: ServicePool, error: ErrorTriple) -> None: ...


class ServicePool(ReplicaListener):
    """The replicas and queues of one service."""

    def __init__(
        self,
        spec: ServiceSpec,
        functions: dict[str, FunctionSpec],
        init_payload: bytes,
        runtime: Runtime,
        listener: PoolListener,
        *,
        code_paths: tuple[str, ...] = (),
    ) -> None:
        self.spec = spec
        self.functions = functions
        self._payload = init_payload
        self._code_paths = code_paths
        self._runtime = runtime
        self._listener = listener
        self.queues: dict[str, deque[ExecutionRecord]] = {name: deque() for name in functions}
        self.running: dict[str, int] = dict.fromkeys(functions, 0)
        self._turns: deque[str] = deque(functions)
        self.queued = 0
        self.replicas: dict[str, Slots] = {}
        self.starting = 0
        self.state = ServiceState.INITIALIZING
        self.error: ErrorTriple | None = None
        self.paused = False  # the engine is stopping
        self.inactive = False  # the service is paused (Inactive): no replicas, work waits
        self.retired = False  # replaced by a new pool: it finishes its work and stops
        self._wake = anyio.Event()
        self._idle = DeadlineQueue(lambda: self._wake.set())
        self._task_group: TaskGroup | None = None
        self._stopping = False
        self._init_reported: set[str] = set()
        # Called when a slot frees and the queue runs low, while the shared queue may hold
        # this pool's work (set by the part that claims it).
        self.on_room: Callable[[str], None] | None = None
        # How fast its replicas finish executions while it has work queued: executions
        # finished, over the seconds they took (both halved as they grow, so that the rate
        # follows what the pool does now).
        self._busy_done = 0
        self._busy_seconds = 0.0
        self._last_done = 0.0
        self._was_busy = False

    # -- what the engine calls ------------------------------------------------------------

    def room(self) -> int:
        """How many more executions this pool should hold, where work is shared among
        engines: its replicas' slots at their most, and what it queues ahead (see PREFETCH),
        less what it holds."""
        capacity = self.spec.max_replicas * self.spec.concurrency
        return capacity + self._ahead(capacity) - self.queued - sum(self.running.values())

    def _ahead(self, capacity: int) -> int:
        # Trusted once it covers a while: a few results in one frame would make it huge.
        busy, done = self._busy_seconds, self._busy_done
        rate = done / busy if busy >= RATE_AFTER and done >= RATE_DONE else 0.0
        return max(capacity, PREFETCH, int(rate * AHEAD))

    def _low(self) -> bool:
        """Whether the queue is low enough for a claim to be worth a round trip."""
        capacity = self.spec.max_replicas * self.spec.concurrency
        return self.queued <= self._ahead(capacity) // 2

    def _finished_one(self) -> None:
        """Count an execution's end towards the rate while the pool is busy (something ran
        or waited since the last end: the time between the two counts)."""
        now = time.monotonic()
        if self._was_busy:
            self._busy_seconds += now - self._last_done
            self._busy_done += 1
            if self._busy_done >= 10_000:
                self._busy_done //= 2
                self._busy_seconds /= 2
        self._was_busy = bool(self.queued) or any(self.running.values())
        self._last_done = now

    def enqueue(self, record: ExecutionRecord) -> None:
        self.queues[record.function].append(record)
        self.queued += 1
        self._wake.set()

    def enqueue_all(self, records: Iterable[ExecutionRecord]) -> None:
        """``enqueue`` for each (a cron second's firings, a map's inputs), waking the pool once."""
        queues, queued = self.queues, 0
        for record in records:
            queues[record.function].append(record)
            queued += 1
        self.queued += queued
        self._wake.set()

    def enqueue_front(self, record: ExecutionRecord) -> None:
        """Put back an execution that lost its replica through no fault of its own."""
        self.queues[record.function].appendleft(record)
        self.queued += 1
        self._wake.set()

    def remove(self, record: ExecutionRecord) -> bool:
        """Take a queued execution out; False if it was not queued."""
        try:
            self.queues[record.function].remove(record)
        except ValueError:
            return False
        self.queued -= 1
        return True

    def unqueue(self, count: int) -> list[ExecutionRecord]:
        """Take at most ``count`` queued executions out, the latest queued first (function
        by function, in turn)."""
        taken: list[ExecutionRecord] = []
        queues = [queue for queue in self.queues.values() if queue]
        while len(taken) < count and queues:
            for queue in list(queues):
                taken.append(queue.pop())
                if not queue:
                    queues.remove(queue)
                if len(taken) == count:
                    break
        self.queued -= len(taken)
        return taken

    def drain_queue(self) -> list[ExecutionRecord]:
        """Take every queued execution out (they fail with the service's init error)."""
        drained = [record for queue in self.queues.values() for record in queue]
        for queue in self.queues.values():
            queue.clear()
        self.queued = 0
        return drained

    def release(self, slots: Slots, record: ExecutionRecord) -> None:
        """An execution on ``slots`` ended: free its slot."""
        if slots.assigned.pop(record.id, None) is not None:
            self.running[record.function] -= 1
            self._finished_one()
            if not slots.assigned:
                if self.inactive or self.retired:
                    self._retire(slots)
                else:
                    self._arm_idle(slots)
            self._wake.set()
            if self.on_room is not None and self._low():
                self.on_room(self.spec.name)

    def pause(self) -> None:
        """Inactive: start nothing more; idle replicas stop now, busy ones once their work
        ends. Queued and new executions wait for ``resume``."""
        self.inactive = True
        for slots in list(self.replicas.values()):
            if not slots.assigned:
                self._retire(slots)
        self._wake.set()

    def resume(self) -> None:
        self.inactive = False
        self._wake.set()

    def retire(self) -> list[ExecutionRecord]:
        """Replaced by a new pool: hand back the queue, finish what runs, then stop."""
        self.retired = True
        queued = self.drain_queue()
        for slots in list(self.replicas.values()):
            if not slots.assigned:
                self._retire(slots)
        self._wake.set()
        return queued

    def set_min_replicas(self, minimum: int) -> None:
        """Lower (or raise) the minimum; idle replicas above it stop after the idle timeout."""
        self.spec = self.spec.model_copy(update={"min_replicas": minimum})
        for slots in self.replicas.values():
            if slots.open and not slots.assigned:
                self._arm_idle(slots)
        self._wake.set()

    @property
    def halted(self) -> bool:
        """Whether it may start neither replicas nor executions."""
        return self.paused or self.inactive or self.retired

    @property
    def busy_slots(self) -> int:
        return sum(len(s.assigned) for s in self.replicas.values())

    def in_flight(self) -> Iterable[tuple[Slots, ExecutionRecord]]:
        for slots in self.replicas.values():
            for record in slots.assigned.values():
                yield slots, record

    # -- the pool's own loop --------------------------------------------------------------

    async def run(self, task_group: TaskGroup, *, task_status: TaskStatus[None]) -> None:
        self._task_group = task_group
        task_status.started()
        while not self._stopping:
            if self.retired and not self.busy_slots and not self.starting:
                await self.stop(5.0)
                return
            self._scale()
            self._dispatch()
            deadline = self._idle.next_deadline()
            if deadline is None:  # no idle replica to stop: no cancel scope (one per wake)
                await self._wake.wait()
            else:
                with anyio.move_on_after(max(0.0, deadline - time.monotonic())):
                    await self._wake.wait()
            self._wake = anyio.Event()
            for replica_id in self._idle.pop_expired(time.monotonic()):
                self._stop_idle(str(replica_id))

    async def stop(self, grace: float) -> None:
        """Stop every replica (the engine has already drained or requeued their work)."""
        self._stopping = True
        self._wake.set()
        with anyio.CancelScope(shield=True):
            async with anyio.create_task_group() as tg:
                for slots in list(self.replicas.values()):
                    tg.start_soon(slots.replica.stop, grace)

    def _dispatch(self) -> None:
        if not self.queued or self.halted:
            return
        capacity = self.spec.concurrency
        ready = [s for s in self.replicas.values() if s.open and len(s.assigned) < capacity]
        if not ready:
            return
        sends: dict[Slots, list[tuple[Any, ...]]] = {}
        turns = self._turns
        while self.queued and ready:
            name = self._next_turn()
            if name is None:
                break
            record = self.queues[name].popleft()
            self.queued -= 1
            self.running[name] += 1
            slots = min(ready, key=lambda s: len(s.assigned))  # least loaded first
            slots.assigned[record.id] = record
            self._idle.disarm(slots.replica.id)
            if len(slots.assigned) >= capacity:
                ready.remove(slots)
            self._listener.dispatched(record, slots, self.functions[name])
            sends.setdefault(slots, []).append(
                (protocol.RUN, record.id, record.function, record.input, record.attempts)
            )
            turns.rotate(-1)
        for slots, messages in sends.items():
            for message in messages:
                slots.replica.send(message)

    def _next_turn(self) -> str | None:
        """The next function, in turn, with work queued and under its max_concurrency."""
        for _ in range(len(self._turns)):
            name = self._turns[0]
            cap = self.functions[name].max_concurrency
            if self.queues[name] and (cap is None or self.running[name] < cap):
                return name
            self._turns.rotate(-1)
        return None

    def _scale(self) -> None:
        """Start replicas up to what the queue needs (within min..max)."""
        if self._stopping or self.halted:
            return
        live = self._serving() + self.starting
        if self.state in (ServiceState.ERROR, ServiceState.BUILD_FAILED):
            # After an init failure, try again only when there is work, one replica at a time.
            wanted = 1 if (self.queued and not self.starting and not self.replicas) else 0
        else:
            free = (
                sum(self.spec.concurrency - len(s.assigned) for s in self.replicas.values())
                + self.starting * self.spec.concurrency
            )
            shortfall = math.ceil(max(0, self.queued - free) / self.spec.concurrency)
            wanted = max(
                self.spec.min_replicas - live, min(shortfall, self.spec.max_replicas - live)
            )
        for _ in range(max(0, wanted)):
            self.starting += 1
            assert self._task_group is not None
            self._task_group.start_soon(self._start_replica, name=f"start-{self.spec.name}")

    async def _start_replica(self) -> None:
        assert self._task_group is not None
        try:
            plan = ReplicaPlan(
                service=self.spec,
                functions=self.functions,
                init_payload=self._payload,
                code_paths=self._code_paths,
            )
            await self._runtime.start_replica(plan, self, self._task_group)
        except ImageBuildError as exc:
            self.starting -= 1
            self.state = ServiceState.BUILD_FAILED
            self.error = ("ImageBuildError", str(exc), exc.log)  # the whole log, to be read
            self._listener.init_failed(self, self.error)
            return
        except OSError as exc:
            self.starting -= 1
            self.state = ServiceState.ERROR
            self.error = ("OSError", f"could not start a replica: {exc}", "")
            self._listener.init_failed(self, self.error)
            return
        # The replica counts as starting until it answers READY or INIT_FAILED.

    def _serving(self) -> int:
        return sum(1 for s in self.replicas.values() if not s.retiring)

    def _arm_idle(self, slots: Slots) -> None:
        if self._serving() > self.spec.min_replicas:
            self._idle.arm(slots.replica.id, self.spec.idle_timeout, time.monotonic())

    def _stop_idle(self, replica_id: str) -> None:
        slots = self.replicas.get(replica_id)
        if slots is None or slots.assigned or self._serving() <= self.spec.min_replicas:
            return
        self._retire(slots)

    def _retire(self, slots: Slots) -> None:
        if slots.retiring:
            return
        slots.retiring = True
        self._idle.disarm(slots.replica.id)
        logger.info("replica_idle_stopped", service=self.spec.name, replica_id=slots.replica.id)
        assert self._task_group is not None
        self._task_group.start_soon(slots.replica.stop, 5.0, name=f"stop-{slots.replica.id}")

    # -- what replicas tell us (ReplicaListener) ------------------------------------------

    def replica_messages(self, replica: Replica, messages: list[tuple[Any, ...]]) -> None:
        slots = self.replicas.get(replica.id)
        if slots is None:
            slots = self.replicas[replica.id] = Slots(replica)
        first = messages[0][0]
        if first == protocol.READY and not slots.ready:
            slots.ready = True
            self.starting -= 1
            self.state = ServiceState.ACTIVE
            self.error = None
            if self.inactive or self.retired:  # paused or replaced while it started
                self._retire(slots)
            else:
                self._arm_idle(slots)
            self._wake.set()
            self._listener.replica_ready(self, slots)
            messages = messages[1:]
        elif first == protocol.INIT_FAILED:
            self.starting -= 1
            self._init_reported.add(replica.id)
            self.replicas.pop(replica.id, None)
            self.state = ServiceState.ERROR
            etype, emsg, etb = messages[0][1]
            self.error = (etype, emsg, etb)
            self._listener.init_failed(self, self.error)
            return
        if messages:
            self._listener.replica_messages(self, slots, messages)

    def replica_exited(self, replica: Replica, reason: str) -> None:
        self._idle.disarm(replica.id)
        slots = self.replicas.pop(replica.id, None)
        if slots is None or not slots.ready:
            if replica.id in self._init_reported:
                self._init_reported.discard(replica.id)  # INIT_FAILED already said why
            elif not self._stopping:
                # Died before it was ready and without saying why: that is an init failure too.
                self.starting -= 1
                self.state = ServiceState.ERROR
                self.error = ReplicaDiedError(f"replica {replica.id} {reason}").triple()
                self._listener.init_failed(self, self.error)
            self._wake.set()
            return
        for record in slots.assigned.values():
            self.running[record.function] -= 1
        if not self._stopping and not slots.retiring:
            logger.warning(
                "replica_died", service=self.spec.name, replica_id=replica.id, reason=reason
            )
            self._listener.replica_lost(self, slots, reason)
        self._wake.set()
