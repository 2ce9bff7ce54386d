"""AsyncEngine: the embedded engine's whole interface, async. ``triggerfish.Engine`` is this
and the blocking form (``with Engine() as engine``, see ``entry.py``)."""

from __future__ import annotations

import hashlib
import inspect
import secrets
from collections.abc import Callable, Iterable, Mapping
from contextlib import AsyncExitStack
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar, overload

import anyio
import cloudpickle

from ..engine.core import EngineCore, Service
from ..engine.deployments import DeploymentManager, pinned
from ..engine.events import EngineEvent, Subscription
from ..engine.runtimes.abc import Runtime
from ..errors import ConfigurationError, EngineClosedError, UnknownFunctionError
from ..models import (
    Execution,
    ExecutionPage,
    ExecutionQuery,
    ExecutionStatus,
    FunctionSpec,
    ServiceSpec,
    ServiceStatus,
    TriggerSpec,
)
from ..store.abc import Store
from ..store.dsn import is_postgres_dsn
from ..store.sqlite import SqliteStore
from .handle import FunctionHandle, list_page, to_execution
from .marks import METHOD_MARK
from .packages import Deployments, Packages
from .triggers import Triggers, to_spec

F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C", bound=type)

_SERVICE_FIELDS = ("min_replicas", "max_replicas", "concurrency", "idle_timeout", "runtime")


def _replica_fields(replicas: int | tuple[int, int] | None, fields: dict[str, Any]) -> None:
    if replicas is None:
        return
    if isinstance(replicas, int):
        fields["min_replicas"] = fields["max_replicas"] = replicas
    else:
        fields["min_replicas"], fields["max_replicas"] = replicas


def _codebase_dir(store: Store, given: str | Path | None) -> Path | None:
    """Beside a sqlite file, codebases outlive the engine; else a temporary directory."""
    if given is not None:
        return Path(given)
    if isinstance(store, SqliteStore) and store.path != ":memory:":
        return Path(store.path).parent / "codebases"
    return None


def _engine_id(store: Store) -> str:
    """Stable across restarts on the same sqlite file (it names the engine's containers, so a
    new run finds those an earlier one left); on PostgreSQL, the id of its row in ``engines``;
    a store in memory gets a new one each time."""
    if store.engine_id is not None:
        return store.engine_id
    if isinstance(store, SqliteStore) and store.path != ":memory:":
        return hashlib.sha256(str(Path(store.path).absolute()).encode()).hexdigest()[:12]
    return secrets.token_hex(6)


def _store_from(store: Store | str | Path | None) -> Store:
    if store is None:
        return SqliteStore(":memory:")
    if is_postgres_dsn(store):
        from ..store.postgres import PostgresStore  # asyncpg, loaded only when asked for

        return PostgresStore(str(store))
    if isinstance(store, str | Path):
        return SqliteStore(store)
    if isinstance(store, Store):
        return store
    raise ConfigurationError(
        "store must be a Store, a sqlite file path, a PostgreSQL URL (postgresql://...) or "
        f"None, not {store!r}"
    )


class AsyncEngine:
    """An embedded triggerfish engine.

    ``store`` is a sqlite file path (executions survive restarts), a PostgreSQL URL
    (``postgresql://user:password@host/database``), a ``Store``, or None for an in-memory
    sqlite. Register functions with ``@engine.function(...)`` and classes with
    ``@engine.service(...)``, then run it with ``async with engine:`` (or ``with engine as e:``
    for the blocking form). Leaving the block lets running executions finish within
    ``drain_timeout`` seconds, puts the rest back to PENDING for the next start, and stops
    every replica. ``max_lineage_depth`` caps how long a chain of triggered executions may
    grow (loop protection); ``engine.triggers`` manages triggers while it runs.

    ``engine.packages`` and ``engine.deployments`` push package revisions and deploy services
    from them. Codebases are extracted to ``codebase_dir``: by default a ``codebases``
    directory beside the sqlite file, or a temporary one for a store in memory.

    A service runs on the runtime its ``runtime`` option names: ``"process"`` (the default;
    ``runtime`` replaces its ProcessRuntime) or ``"docker"`` (a DockerRuntime made on first
    use unless ``runtimes={"docker": ...}`` gives one).
    """

    def __init__(
        self,
        store: Store | str | Path | None = None,
        *,
        runtime: Runtime | None = None,
        runtimes: Mapping[str, Runtime] | None = None,
        kill_grace: float = 5.0,
        drain_timeout: float = 10.0,
        max_lineage_depth: int = 10,
        codebase_dir: str | Path | None = None,
    ) -> None:
        chosen = _store_from(store)
        self._core = EngineCore(
            chosen,
            runtime,
            runtimes=runtimes,
            engine_id=_engine_id(chosen),
            kill_grace=kill_grace,
            drain_timeout=drain_timeout,
            max_lineage_depth=max_lineage_depth,
        )
        self._names: dict[Any, str] = {}
        self._initial_triggers: list[TriggerSpec] = []
        self.triggers = Triggers(self._core)
        manager = DeploymentManager(self._core, _codebase_dir(chosen, codebase_dir))
        self.packages = Packages(manager)
        self.deployments = Deployments(manager, self.triggers)
        self._stack: AsyncExitStack | None = None

    # -- registration ---------------------------------------------------------------------

    @overload
    def function(self, fn: F, /) -> F: ...

    @overload
    def function(self, fn: None = None, /, **options: Any) -> Callable[[F], F]: ...

    def function(self, fn: F | None = None, /, **options: Any) -> Any:
        """Register a function, in its own service. Options: ``name``, the FunctionSpec fields
        (timeout, max_attempts, backoff, max_concurrency, cpu, memory, env, secrets,
        description...) and the service's: ``replicas`` (a number, or (min, max) to autoscale),
        ``concurrency`` per replica, ``idle_timeout``. The function is returned unchanged."""

        def register(target: F) -> F:
            if inspect.isclass(target):
                raise ConfigurationError("use @engine.service for a class, not @engine.function")
            name = options.pop("name", None) or target.__name__
            service_fields = {k: options.pop(k) for k in _SERVICE_FIELDS if k in options}
            _replica_fields(options.pop("replicas", None), service_fields)
            service = ServiceSpec.build(
                name=name,
                env=options.get("env", {}),
                secrets=options.get("secrets", {}),
                **service_fields,
            )
            spec = FunctionSpec.build(name=name, service=name, **options)
            payload = {"kind": "function", "functions": {name: target}}
            self._register(service, {name: spec}, payload)
            self._names[target] = name
            return target

        return register(fn) if fn is not None else register

    @overload
    def application(self, fn: F, /) -> F: ...

    @overload
    def application(self, fn: None = None, /, **options: Any) -> Callable[[F], F]: ...

    def application(self, fn: F | None = None, /, **options: Any) -> Any:
        """Register a function as an application: like ``function``, and the daemon serves it
        at ``POST /applications/{name}`` with the request body as its one argument (read with
        ``input_serializer``, answered with ``output_serializer``: "json", the default, or
        "pickle")."""
        register = self.function(application=True, **options)
        return register(fn) if fn is not None else register

    @overload
    def service(self, cls: C, /) -> C: ...

    @overload
    def service(self, cls: None = None, /, **options: Any) -> Callable[[C], C]: ...

    def service(self, cls: C | None = None, /, **options: Any) -> Any:
        """Register a class as a service: its ``__init__`` runs once per replica with
        ``init_params``, and its methods marked with ``@triggerfish.method`` are functions named
        ``Class.method``. Options: ``name``, ``init_params``, ``replicas``, ``concurrency``,
        ``idle_timeout``, ``env``, ``secrets``. The class is returned unchanged."""

        def register(target: C) -> C:
            if not inspect.isclass(target):
                raise ConfigurationError("@engine.service takes a class")
            name = options.pop("name", None) or target.__name__
            _replica_fields(options.pop("replicas", None), options)
            service = ServiceSpec.build(name=name, **options)
            functions: dict[str, FunctionSpec] = {}
            methods: dict[str, str] = {}
            for attr, member in inspect.getmembers(target, inspect.isfunction):
                marked = getattr(member, METHOD_MARK, None)
                if marked is None:
                    continue
                fname = f"{name}.{attr}"
                functions[fname] = FunctionSpec.build(name=fname, service=name, **marked)
                methods[fname] = attr
                self._names[member] = fname
            if not functions:
                raise ConfigurationError(
                    f"service {name!r} has no methods marked with @triggerfish.method"
                )
            payload = {
                "kind": "class",
                "target": target,
                "init_params": dict(service.init_params),
                "methods": methods,
            }
            self._register(service, functions, payload)
            return target

        return register(cls) if cls is not None else register

    def _register(
        self, service: ServiceSpec, functions: dict[str, FunctionSpec], payload: dict[str, Any]
    ) -> None:
        payload["concurrency"] = service.concurrency
        # An application that answers JSON answers with its result's view: made whole.
        payload["whole_views"] = [
            name
            for name, spec in functions.items()
            if spec.application and spec.output_serializer == "json"
        ]
        try:
            blob = bytes(cloudpickle.dumps(payload))
        except Exception as exc:
            raise ConfigurationError(
                f"service {service.name!r} cannot be sent to a replica (pickling failed): {exc}"
            ) from exc
        if service.name in self._core.services:
            raise ConfigurationError(f"a service named {service.name!r} is already registered")
        self._core.register(Service(service, functions, blob))

    def add_trigger(self, definition: TriggerSpec | dict[str, Any] | str) -> None:
        """A trigger to apply when the engine starts (created, or updated by name). It is
        checked now, so a bad definition fails here and not at start."""
        self._initial_triggers.append(to_spec(definition))

    async def emit(
        self, resource: str, action: str, body: Any = None, resource_id: str | None = None
    ) -> list[str]:
        """Publish an event (``"Item", "Created", {...}``). Returns once the executions it
        caused are stored, with their ids. ``resource_id`` defaults to ``body["id"]``."""
        return await self._core.emit(resource, action, body, resource_id)

    # -- handles --------------------------------------------------------------------------

    def handle(
        self, function: Callable[..., Any] | str, *, revision: int | None = None
    ) -> FunctionHandle:
        """The handle of a registered function, by the function itself or by its name.

        A deployed service's function is named ``"<service>.<function>"``: each start runs
        the revision its current version pins. ``revision=1`` (or the name
        ``"<service>.<function>@1"``) runs package revision 1, which a version of the service
        must have deployed."""
        name = function if isinstance(function, str) else self._names.get(function)
        if name is None:
            raise UnknownFunctionError(f"{function!r} is not registered with this engine")
        if revision is not None:
            name = pinned(name, revision)
        self._core.spec_of(name)
        return FunctionHandle(self._core, name)

    get_function = handle

    @property
    def function_names(self) -> list[str]:
        return sorted(self._core.functions)

    @property
    def engine_id(self) -> str:
        """What names this engine's containers (the ``triggerfish.engine`` label): the same
        across restarts on the same sqlite file."""
        return self._core.engine_id

    @property
    def core(self) -> EngineCore:
        """The engine's core: for the daemon and tools built on the engine, not for apps."""
        return self._core

    async def list_executions(
        self,
        *,
        function: str | None = None,
        status: ExecutionStatus | str | Iterable[ExecutionStatus | str] | None = None,
        trigger: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        offset: str | None = None,
        limit: int = 50,
    ) -> ExecutionPage:
        """Execution ids of every function (or one), newest first, ``limit`` at a time, by
        status, by the trigger (id or name) that fired them, created in [since, until)."""
        trigger_id = None if trigger is None else self._core.find_trigger(trigger).id
        query = ExecutionQuery.build(
            function=function,
            status=status,
            trigger_id=trigger_id,
            since=since,
            until=until,
            offset=offset,
            limit=limit,
        )
        return await list_page(self._core, query)

    async def get(self, execution_id: str) -> Execution:
        """Any execution by id."""
        return to_execution(await self._core.record(execution_id))

    def service_status(self, name: str) -> ServiceStatus:
        """A service's state (Initializing, Active, Error with its init error) and load."""
        return self._core.service_status(name)

    def subscribe(
        self, kinds: Iterable[type[EngineEvent] | str] | None = None, **filters: Any
    ) -> Subscription:
        """The engine's events from now on, as an async iterator (``async with
        engine.subscribe() as events: async for event in events``): every kind, or those
        named (``"ExecutionStatusChanged"`` or the class). ``function=`` (its revisions too)
        and ``execution_id=`` keep only the events that name them; ``buffer=`` (1000) is how
        many may wait to be read: past that they are dropped and counted, and the subscriber
        reads a ``SubscriberLagged(missed=N)``, so a slow reader never slows the engine. It
        ends when the engine stops."""
        return self._core.hub.subscribe(kinds, **filters)

    # -- running --------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._stack is not None:
            raise EngineClosedError("this engine is already running")
        stack = AsyncExitStack()
        task_group = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(task_group.cancel_scope.cancel)
        stack.push_async_callback(self._core.stop)
        try:
            await self._core.start(task_group)
            for spec in self._initial_triggers:
                await self.triggers.apply(spec)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.__aexit__(exc_type, exc, tb)
