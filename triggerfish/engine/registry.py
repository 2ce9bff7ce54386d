"""What an engine can run: its services, their functions, the aliases that stand for them,
the runtimes their replicas run on, and the pool that runs each service.

It is the lifecycle's ``Dispatch``: it resolves a function's name to its spec and queues an
execution on its service's pool. A service is checked when it is registered (its runtime
must be known and able to run it), so a bad one is refused at once, not at its first run.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from operator import attrgetter

import anyio
from anyio.abc import TaskGroup

from ..errors import (
    ConfigurationError,
    FunctionMissingError,
    TriggerfishError,
    UnknownFunctionError,
)
from ..models import (
    ErrorInfo,
    ExecutionRecord,
    FunctionSpec,
    ServiceSpec,
    ServiceState,
    ServiceStatus,
)
from .lifecycle import Lifecycle
from .runtimes.abc import ReplicaPlan, Runtime
from .runtimes.registry import make_runtime, runtime_names
from .scheduler import PoolListener, ServicePool

_service_of = attrgetter("service")  # groups a batch of records by their pool


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


class Registry:
    """Services, functions, aliases, runtimes and pools of one engine.

    ``runtimes`` are runtimes given by name (``"process"`` among them, if given); any other
    name a service uses is made from the runtime registry on first use, with ``engine_id``.
    """

    def __init__(
        self,
        lifecycle: Lifecycle,
        engine_id: str,
        runtimes: Mapping[str, Runtime] | None = None,
    ) -> None:
        self._lifecycle = lifecycle
        self._listener: PoolListener | None = None
        self.engine_id = engine_id
        self.runtimes: dict[str, Runtime] = dict(runtimes or {})
        self._started_runtimes: list[Runtime] = []
        self._runtime_lock = anyio.Lock()
        self.services: dict[str, Service] = {}
        self.functions: dict[str, FunctionSpec] = {}
        # A name that stands for another at submit time: a deployed service's plain function
        # name (resizer.resize) for the one pinned to its current revision (resizer.resize@2).
        self.aliases: dict[str, str] = {}
        self.pools: dict[str, ServicePool] = {}
        self._retired_pools: set[ServicePool] = set()
        self.inactive: set[str] = set()  # paused services: their pools start Inactive
        self._task_group: TaskGroup | None = None

    # -- Dispatch, for the lifecycle ------------------------------------------------------

    def spec_of(self, function: str) -> FunctionSpec:
        try:
            return self.functions[self.aliases.get(function, function)]
        except KeyError:
            known = ", ".join(sorted({*self.functions, *self.aliases})) or "none"
            raise UnknownFunctionError(
                f"no function named {function!r} is registered (registered: {known})"
            ) from None

    def spec_for(self, function: str) -> FunctionSpec | None:
        return self.functions.get(self.aliases.get(function, function))

    def paused(self, service: str) -> bool:
        return service in self.inactive

    def enqueue(self, record: ExecutionRecord, *, front: bool = False) -> bool:
        pool = self.pools.get(record.service)
        if pool is None:
            return False
        if front:
            pool.enqueue_front(record)
        else:
            pool.enqueue(record)
        return True

    def enqueue_all(self, records: Iterable[ExecutionRecord]) -> list[ExecutionRecord]:
        # Run by run of one service, streamed: no list of a big batch is made.
        waiting: list[ExecutionRecord] = []
        for service, run in itertools.groupby(records, key=_service_of):
            pool = self.pools.get(service)
            if pool is None:
                waiting += run
            else:
                pool.enqueue_all(run)
        return waiting

    def withdraw(self, record: ExecutionRecord) -> None:
        pool = self.pools.get(record.service)
        if pool is not None:
            pool.remove(record)

    def room(self, service: str) -> int:
        pool = self.pools.get(service)
        if pool is None or pool.halted:
            return 0
        return pool.room()

    def unqueue(self, service: str, count: int) -> list[ExecutionRecord]:
        pool = self.pools.get(service)
        return pool.unqueue(count) if pool is not None else []

    def functions_of(self, service: str | None) -> Collection[str]:
        if service is None:
            return list(self.functions)
        registered = self.services.get(service)
        return list(registered.functions) if registered is not None else []

    def watch_room(self, service: str, room_opened: Callable[[str], None] | None) -> None:
        pool = self.pools.get(service)
        if pool is not None:
            pool.on_room = room_opened

    # -- registering ----------------------------------------------------------------------

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
        """The runtime that runs ``spec``'s replicas (made on first use); ConfigurationError
        naming the known runtimes if there is none of that name."""
        runtime = self.runtimes.get(spec.runtime)
        if runtime is None:
            if spec.runtime not in runtime_names():
                known = ", ".join(runtime_names(self.runtimes))
                raise ConfigurationError(
                    f"service {spec.name!r}: no runtime named {spec.runtime!r} (known: {known})"
                )
            runtime = self.runtimes[spec.runtime] = make_runtime(spec.runtime, self.engine_id)
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

    def point(self, aliases: Mapping[str, str], *, prefix: str) -> None:
        """Make the aliases starting with ``prefix`` exactly ``aliases`` (name -> function)."""
        for alias in [a for a in self.aliases if a.startswith(prefix)]:
            del self.aliases[alias]
        self.aliases.update(aliases)

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
                if not inactive:
                    self._lifecycle.work_wanted(pool.functions)

    # -- pools ----------------------------------------------------------------------------

    async def start(self, task_group: TaskGroup, listener: PoolListener) -> None:
        """Start a pool for every registered service (and, from now on, for new ones), each
        reporting to ``listener``."""
        self._task_group = task_group
        self._listener = listener
        for service in list(self.services.values()):
            await self._start_pool(service)

    async def _started_runtime(self, spec: ServiceSpec) -> Runtime:
        runtime = self.runtime_for(spec)
        async with self._runtime_lock:
            if runtime not in self._started_runtimes:
                assert self._task_group is not None
                await runtime.start(self._task_group)
                self._started_runtimes.append(runtime)
        return runtime

    async def _start_pool(self, service: Service) -> None:
        assert self._task_group is not None and self._listener is not None
        name = service.spec.name
        runtime = await self._started_runtime(service.spec)
        pool = ServicePool(
            service.spec,
            service.functions,
            service.init_payload,
            runtime,
            self._listener,
            code_paths=service.code_paths,
        )
        pool.inactive = name in self.inactive
        old = self.pools.get(name)
        self.pools[name] = pool  # from now on, new executions queue here
        if old is not None:
            self._retired_pools.add(old)
            waiting = old.retire()
        else:  # executions that waited for this service to have a pool
            waiting = self._lifecycle.waiting(service.functions)
        now = time.time()
        for record in waiting:
            if record.function in service.functions:
                pool.enqueue(record)
            else:
                missing = FunctionMissingError(f"{name} has no {record.function}")
                self._lifecycle.fail_queued(record, missing, now)
        await self._task_group.start(pool.run, self._task_group, name=f"pool-{name}")
        self._lifecycle.work_wanted(service.functions, started=True)

    async def remove_left_by(self, engine_ids: Collection[str]) -> None:
        """Remove the replicas that engines now gone left running, on every runtime started
        here (one that no service here uses was not started, and is not asked)."""
        for runtime in list(self._started_runtimes):
            await runtime.remove_left_by(engine_ids)

    def halt(self) -> None:
        """The engine stops: no pool starts anything more."""
        for pool in self.pools.values():
            pool.paused = True

    async def stop(self, grace: float) -> None:
        """Stop every replica of every pool, then release the runtimes."""
        async with anyio.create_task_group() as tg:
            for pool in [*self.pools.values(), *self._retired_pools]:
                tg.start_soon(pool.stop, grace)
        for runtime in self._started_runtimes:
            await runtime.aclose()
        self._started_runtimes.clear()
        self._task_group = None

    def service_status(self, name: str, running: bool) -> ServiceStatus:
        pool = self.pools.get(name)
        if pool is None:
            raise UnknownFunctionError(f"no service named {name!r}")
        error = None
        if pool.error is not None:
            error = ErrorInfo(type=pool.error[0], message=pool.error[1], traceback=pool.error[2])
        state = pool.state
        if not running or pool.inactive:
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
