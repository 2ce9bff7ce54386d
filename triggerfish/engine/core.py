"""The engine core: the parts of an engine, composed, behind the one interface the SDK and the
daemon use.

The parts sit in floors, every import pointing down:

* bottom: ``events`` (typed events and the hub) and ``lifecycle`` (every status change);
* middle: ``registry`` (services, functions, aliases, runtimes, pools), ``triggering``
  (triggers, events, cron), ``timeouts`` (deadlines), ``nested`` (calls from inside a
  function) and ``reports`` (what pools report); each uses the lifecycle and none of the
  others;
* top: this facade, which makes them, wires them and starts and stops them in order.

Life of an execution: it is stored PENDING and queued on its service's pool; the pool
dispatches it to a replica (RUNNING); the replica reports DONE and it becomes SUCCEEDED, or a
failed attempt goes back to PENDING after its backoff until ``max_attempts`` is spent (FAILED,
TIMED_OUT). Cancel and timeout ask the replica to stop it; a replica that does not within the
kill grace is killed and replaced, and the other executions it held go back to the queue.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from typing import Any

import anyio
import anyio.abc
from anyio.abc import TaskGroup

from ..errors import StoreUnavailableError
from ..log import logger
from ..models import (
    UNFINISHED_STATUSES,
    ExecutionQuery,
    ExecutionRecord,
    ExecutionStatus,
    FunctionSpec,
    ServiceSpec,
    ServiceStatus,
    TriggerRecord,
    TriggerSpec,
    belongs_to,
)
from ..store.abc import Channel, Store
from . import collector
from .claims import Claims
from .events import EventHub
from .forwarding import Forwarding
from .lifecycle import Lifecycle, Live, Waiter
from .nested import NestedCalls
from .registry import Registry, Service
from .reports import PoolReports
from .runtimes.abc import Runtime
from .runtimes.process import ProcessRuntime
from .timeouts import Timeouts
from .triggering import Triggering

__all__ = ["EngineCore", "Service", "Waiter"]

Hook = Callable[[], Awaitable[None]]
#: A task run while the engine runs: ``await task_group.start(task)``.
Background = Callable[..., Coroutine[Any, Any, None]]
_RERUNNABLE = frozenset({ExecutionStatus.FAILED, ExecutionStatus.TIMED_OUT})


class EngineCore:
    """Runs registered functions' executions on replicas, keeping each one in the store.

    Each service runs on the runtime its spec names: ``runtime`` (default: ProcessRuntime) for
    "process", ``runtimes`` for others; any other registered runtime is made on first use.
    ``engine_id`` names this engine's containers, and must be the same across restarts on the
    same store, so that a new run finds what an earlier one left behind.
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
        self.drain_timeout = drain_timeout
        self.hub = EventHub()
        self.lifecycle = Lifecycle(store, self.hub, self.engine_id)
        given = {"process": runtime or ProcessRuntime(), **(runtimes or {})}
        self.registry = Registry(self.lifecycle, self.engine_id, given)
        self.timeouts = Timeouts(self.lifecycle, kill_grace)
        self.triggering = Triggering(self.lifecycle, self.hub, self.registry, max_lineage_depth)
        self.claims = Claims(self.lifecycle)
        self.forwarding = Forwarding(self.hub, store)
        self.lifecycle.attach(self.registry, self.timeouts, self.triggering, self.claims)
        # What other engines on a shared store tell (a store of one engine tells nothing).
        store.hear(Channel.FINISHED, self.lifecycle.finished_elsewhere, on_demand=True)
        store.hear(Channel.CANCEL, self.lifecycle.cancel_asked)
        store.hear(Channel.WORK, self.claims.heard)
        store.hear(Channel.ENGINES, self.claims.others_changed)
        store.hear(Channel.TRIGGERS, self.triggering.changed_elsewhere)
        self.nested = NestedCalls(self.lifecycle, self.triggering.emit)
        #: Publish an event; returns the ids of the executions it caused, once committed.
        self.emit = self.triggering.emit
        self._reports = PoolReports(self.lifecycle, self.hub, self.nested.receive)
        self._start_hooks: list[Hook] = []
        self._stop_hooks: list[Hook] = []
        self._background: list[Background] = []
        self._abandon: anyio.CancelScope | None = None  # made at start: it needs a loop
        # The tasks that run while the engine does: adoption, claims, what other engines
        # tell, the cron clock's lead (see ``_run_background``).
        self._backgrounds: anyio.CancelScope | None = None
        self._backgrounds_done: anyio.Event | None = None
        self.running = False

    # -- what is registered --------------------------------------------------------------

    def spec_of(self, function: str) -> FunctionSpec:
        """The spec of a function, or of the function an alias stands for now."""
        return self.registry.spec_of(function)

    @property
    def functions(self) -> Mapping[str, FunctionSpec]:
        return self.registry.functions

    @property
    def services(self) -> Mapping[str, Service]:
        return self.registry.services

    @property
    def runtimes(self) -> Mapping[str, Runtime]:
        return self.registry.runtimes

    @property
    def cron_lateness(self) -> Sequence[float]:
        """How late each cron firing of the clock was dispatched, in seconds (the latest
        100,000)."""
        return self.triggering.cron_lateness

    # -- registration and life ------------------------------------------------------------

    def register(self, service: Service) -> None:
        """Add a service and its functions (before or while the engine runs)."""
        self.registry.register(service)

    async def install(self, service: Service) -> None:
        """Add a service, or replace the one of the same name (see ``Registry.install``)."""
        await self.registry.install(service)

    def runtime_for(self, spec: ServiceSpec) -> Runtime:
        return self.registry.runtime_for(spec)

    def on_start(self, hook: Hook) -> None:
        """Run ``hook`` at each start, once the store is open, before pools start and
        unfinished executions are taken back (deployed services are restored there)."""
        self._start_hooks.append(hook)

    def on_stop(self, hook: Hook) -> None:
        """Run ``hook`` at each stop, after the store is closed."""
        self._stop_hooks.append(hook)

    def in_background(self, task: Background) -> None:
        """Run ``task`` from each start, once the engine takes work, until its stop begins
        (it is started with ``await task_group.start(task)``)."""
        self._background.append(task)

    async def start(self, task_group: TaskGroup) -> None:
        await self.store.start(task_group, self.lifecycle.committed)
        for hook in self._start_hooks:
            await hook()
        self._abandon = anyio.CancelScope()
        await task_group.start(self.timeouts.run, name="engine-clock")
        self.nested.start(task_group)
        await self.registry.start(task_group, self._reports)
        await self.triggering.start(task_group)
        await self._recover()
        self.running = self.lifecycle.accepting = self.triggering.running = True
        collector.engine_started()
        self._backgrounds = anyio.CancelScope()
        await task_group.start(self._run_background, self._backgrounds, name="engine-background")
        logger.info(
            "engine_started", engine_id=self.engine_id, services=sorted(self.registry.services)
        )

    async def _run_background(
        self, scope: anyio.CancelScope, *, task_status: anyio.abc.TaskStatus[None]
    ) -> None:
        """What runs while the engine does; on a shared store, what its engines tell each
        other is heard there. The cron clock starts last: ``start`` returns once this engine
        leads it, or waits for the engine that does."""
        done = self._backgrounds_done = anyio.Event()
        try:
            with scope:
                async with anyio.create_task_group() as tg:
                    await tg.start(self.lifecycle.hear_elsewhere, name="engine-remote-results")
                    await tg.start(self.claims.run, name="engine-claims")
                    await tg.start(self.forwarding.run, name="engine-forwarding")
                    await tg.start(self.triggering.hear_changes, name="trigger-changes")
                    await tg.start(self._adopt, name="engine-adoption")
                    for task in self._background:
                        await tg.start(task)
                    await tg.start(self.store.lead, self.triggering.lead_changed, name="cron-lead")
                    task_status.started()
        finally:
            done.set()

    async def _adopt(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Take over the work of engines on the same store that are gone, as the store
        finds them (``Store.lapsed``); a store out of reach is tried at the next."""
        task_status.started()
        while True:
            await self.store.lapsed()
            try:
                await self._recover()
            except StoreUnavailableError as exc:
                logger.warning("engine_adoption_failed", error=str(exc))

    async def _recover(self) -> None:
        """Take over what an earlier run, or a gone engine, left unfinished; remove the
        replicas gone engines left running (containers, Swarm services)."""
        gone = await self.lifecycle.recover()
        if gone:
            await self.registry.remove_left_by(gone)

    def abandon_drain(self) -> None:
        """Stop waiting for running executions (now, or when ``stop`` gets there): they are
        put back to PENDING, as when the drain time runs out."""
        if self._abandon is not None:
            self._abandon.cancel()

    async def stop(self) -> None:
        """Stop taking work, let running executions finish within the drain time, put the rest
        back to PENDING for the next start, stop every replica and close the store."""
        if not self.running:
            return
        self.running = False
        collector.engine_stopped()
        self.lifecycle.accepting = False
        self.triggering.stop()
        with anyio.CancelScope(shield=True):
            if self._backgrounds is not None and self._backgrounds_done is not None:
                self._backgrounds.cancel()  # the cron clock's lead is given up first
                await self._backgrounds_done.wait()
            self.registry.halt()
            assert self._abandon is not None
            await self.lifecycle.drain(self.drain_timeout, self._abandon)
            self.lifecycle.put_back()
            await self.registry.stop(self.timeouts.kill_grace)
            await self.store.aclose()
            for hook in self._stop_hooks:
                await hook()
            self.lifecycle.release_waiters()
            self.hub.close()
        logger.info("engine_stopped")

    def set_min_replicas(self, service: str, minimum: int) -> None:
        self.registry.set_min_replicas(service, minimum)

    def set_inactive(self, services: Iterable[str], inactive: bool) -> None:
        self.registry.set_inactive(services, inactive)

    def service_status(self, name: str) -> ServiceStatus:
        return self.registry.service_status(name, self.running)

    # -- executions -----------------------------------------------------------------------

    def check_running(self) -> None:
        self.lifecycle.check_open()

    async def submit(self, function: str, inputs: Sequence[bytes]) -> list[str]:
        """Store new executions of ``function``, one per pickled input; returns their ids once
        committed. They are queued at once, so they may already run by then."""
        return [live.record.id for live in await self.lifecycle.submit(function, inputs)]

    async def submit_watched(
        self, function: str, inputs: Sequence[bytes]
    ) -> list[tuple[str, Waiter]]:
        """``submit``, with a waiter for each execution registered before any can finish."""
        lives = await self.lifecycle.submit(function, inputs, watch=True)
        return [(live.record.id, self.lifecycle.watch(live)) for live in lives]

    async def record(self, execution_id: str) -> ExecutionRecord:
        """The freshest state of an execution: live if unfinished, else from the store."""
        return await self.lifecycle.record(execution_id)

    async def wait(self, execution_id: str, timeout: float | None = None) -> ExecutionRecord:
        """The record once its final status is committed. TimeoutError after ``timeout``."""
        return await self.lifecycle.wait(execution_id, timeout)

    @staticmethod
    async def wait_for(waiter: Waiter) -> ExecutionRecord:
        return await Lifecycle.wait_for(waiter)

    async def cancel(self, execution_id: str) -> None:
        """Cancel an execution: at once if queued, via CANCELLING if running; no-op if final."""
        self.check_running()
        await self.lifecycle.cancel(execution_id)

    async def rerun(self, function: str, execution_ids: Iterable[str] | None = None) -> list[str]:
        """Run FAILED and TIMED_OUT executions of ``function`` again; returns their ids."""
        self.check_running()
        spec = self.spec_of(function)
        if execution_ids is None:
            records = await self.find(ExecutionQuery(function=function, statuses=_RERUNNABLE))
        else:
            records = [await self.record(i) for i in execution_ids]
            records = [r for r in records if belongs_to(r.function, function)]
        if self.store.shared:  # another engine may rerun the same ones at once
            live = self.lifecycle.live
            wanted = [r.id for r in records if r.status in _RERUNNABLE and r.id not in live]
            claimed = await self.store.claim_reruns(wanted)
            records = [r for r in records if r.id in claimed]
        return self.lifecycle.rerun(records, spec)

    async def list_ids(self, query: ExecutionQuery) -> list[str]:
        """The ids ``query`` selects, newest first, as of everything submitted so far."""
        await self.store.flush()
        return await self.store.list_ids(query)

    async def find(self, query: ExecutionQuery) -> list[ExecutionRecord]:
        """The records ``query`` selects, oldest first, as of everything submitted so far."""
        await self.store.flush()
        return await self.store.find(query)

    async def count_by_status(self, query: ExecutionQuery) -> dict[ExecutionStatus, int]:
        """How many of the executions ``query`` selects are in each status."""
        await self.store.flush()
        return await self.store.count_by_status(query)

    def _unfinished(self, function: str | None) -> list[Live]:
        return [
            live
            for live in self.lifecycle.live.values()
            if function is None or belongs_to(live.record.function, function)
        ]

    def unfinished(self, function: str | None = None) -> list[str]:
        """The ids of the executions (of a function and its revisions) not finished yet."""
        return [live.record.id for live in self._unfinished(function)]

    async def wait_for_completion(self, function: str) -> None:
        """Until no execution of the function (and its revisions) is unfinished: every one
        of them watched at once, so none waits for the commit of the one before it. On a
        shared store, those other engines hold or that wait in the shared queue too."""
        while True:
            self.check_running()
            lives = self._unfinished(function)
            waiters = [self.lifecycle.watch(live) for live in lives]
            if self.store.shared:
                held = {live.record.id for live in lives}
                await self.store.flush()
                query = ExecutionQuery(function=function, statuses=UNFINISHED_STATUSES)
                for execution_id in await self.store.list_ids(query):
                    if execution_id not in held:
                        waiters.append(self.lifecycle.watch_elsewhere(execution_id))
            if not waiters:
                return
            for waiter in waiters:
                await waiter.wait()

    # -- events and triggers --------------------------------------------------------------

    @property
    def trigger_records(self) -> Mapping[str, TriggerRecord]:
        return self.triggering.records

    async def count_firings(self) -> None:
        """On a shared store, bring the triggers' counts (fired, suppressed, missed) up to
        what every engine stored, before they are shown."""
        await self.triggering.refresh_counts()

    def trigger_named(self, name: str) -> TriggerRecord | None:
        return self.triggering.named(name)

    def find_trigger(self, trigger: str) -> TriggerRecord:
        """A trigger by id or by name."""
        return self.triggering.find(trigger)

    async def put_trigger(self, spec: TriggerSpec, trigger_id: str | None = None) -> TriggerRecord:
        """Create a trigger, or replace the spec of ``trigger_id``; stored before returning."""
        self.check_running()
        return await self.triggering.put(spec, trigger_id)

    async def delete_trigger(self, trigger: str) -> None:
        self.check_running()
        await self.triggering.delete(trigger)
