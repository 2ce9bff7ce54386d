"""Multinode's function API on triggerfish: code written for Multinode runs with its import
changed, nothing else.

    from multinode import Multinode, get_deployed_function                   # before
    from triggerfish.compat.multinode import Multinode, get_deployed_function  # after

``@mn.function(cpu=..., memory=...)`` leaves the function a plain function and gives it
Multinode's methods: ``start``, ``get``, ``cancel``, ``list`` (pages of ids with an offset),
``await_result``, ``call_remote``, ``map`` and ``starmap``, with Multinode's names for what
they return (``Invocation``, ``InvocationIdsList``) and raise (``InvocationFailedError``,
``InvocationCancelledError``, ``InvocationTimedOutError``). Called inside a running function,
they start and look at nested executions, each in replicas of its own function. Outside one,
they run on an engine embedded in this process (an in-memory store and process replicas),
started the first time one is invoked and stopped when the program exits.

``triggerfish serve --app tasks.main:mn`` serves the functions of ``mn`` from a daemon (what
``multinode deploy`` does), and ``get_deployed_function(project_name, function_name)`` reaches
one there, at ``MULTINODE_API_URL`` with ``MULTINODE_API_KEY`` (or triggerfish's own
``TRIGGERFISH_API_URL``, key, and saved login).

Nothing here runs work itself: each method is one call of triggerfish's own handles.
"""

from __future__ import annotations

import atexit
import functools
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from ..engine.replica.context import current_context
from ..errors import (
    ConfigurationError,
    InvocationCancelledError,
    InvocationFailedError,
    InvocationTimedOutError,
)
from ..models import Execution, ExecutionPage, ExecutionStatus
from ..sdk.blocking import BlockingFunctionHandle
from ..sdk.engine import AsyncEngine
from ..sdk.remote import Client
from ._embedded import Embedded

__all__ = [
    "Invocation",
    "InvocationCancelledError",
    "InvocationFailedError",
    "InvocationIdsList",
    "InvocationStatus",
    "InvocationTimedOutError",
    "Multinode",
    "get_deployed_function",
]

F = TypeVar("F", bound=Callable[..., Any])

#: Multinode's statuses are triggerfish's, by the same names.
InvocationStatus = ExecutionStatus
_TERMINAL = frozenset(
    {
        ExecutionStatus.SUCCEEDED,
        ExecutionStatus.FAILED,
        ExecutionStatus.CANCELLED,
        ExecutionStatus.TIMED_OUT,
    }
)
#: Multinode's methods on a decorated function.
_VERBS = ("start", "get", "cancel", "list", "await_result", "call_remote", "map", "starmap")


@dataclass(frozen=True)
class Invocation:
    """An invocation as ``.get`` gives it: ``status``, ``result`` (None until there is one;
    a generator's latest value while it runs), ``error`` (the message, if it failed),
    ``terminated`` and ``num_failed_attempts``."""

    invocation_id: str
    status: ExecutionStatus
    result: Any
    error: str | None
    terminated: bool
    num_failed_attempts: int

    @classmethod
    def of(cls, execution: Execution) -> Invocation:
        error = execution.error
        return cls(
            invocation_id=execution.id,
            status=execution.status,
            result=execution.result,
            error=f"{error.type}: {error.message}" if error else None,
            terminated=execution.terminated,
            num_failed_attempts=execution.num_failed_attempts,
        )

    @classmethod
    def nested(cls, state: dict[str, Any]) -> Invocation:
        """From a running function's ``current_context().get`` (see replica/context.py)."""
        status = ExecutionStatus(state["status"])
        error = state["error"]
        return cls(
            invocation_id=state["id"],
            status=status,
            result=state["result"],
            error=f"{error[0]}: {error[1]}" if error else None,
            terminated=status in _TERMINAL,
            num_failed_attempts=state["failed_attempts"],
        )


@dataclass(frozen=True)
class InvocationIdsList:
    """A page of invocation ids, newest first; ``offset`` gives the next page to ``.list``
    (None on the last one)."""

    invocation_ids: tuple[str, ...]
    offset: str | None

    @property
    def invocations_ids(self) -> tuple[str, ...]:
        """The same ids, by the name Multinode's own paging example reads."""
        return self.invocation_ids

    @classmethod
    def of(cls, page: ExecutionPage) -> InvocationIdsList:
        return cls(invocation_ids=tuple(page.execution_ids), offset=page.offset)


class _Methods:
    """Multinode's methods on one function: on the engine it runs on, or, inside a running
    function, as nested invocations. Picklable by its name alone: a function pickled by
    value (defined in ``__main__``) takes its methods into its replica."""

    def __init__(self, name: str, handle: Callable[[], BlockingFunctionHandle]) -> None:
        self.name = name
        self._handle = handle

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Methods, (self.name, functools.partial(_refuse, self.name)))

    def _nested(self) -> Any:
        context = current_context()
        return context if context.execution_id is not None else None

    def start(self, *args: Any, **kwargs: Any) -> str:
        nested = self._nested()
        if nested is not None:
            return str(nested.start(self.name, *args, **kwargs))
        return self._handle().start(*args, **kwargs)

    def get(self, invocation_id: str) -> Invocation:
        nested = self._nested()
        if nested is not None:
            return Invocation.nested(nested.get(invocation_id))
        return Invocation.of(self._handle().get(invocation_id))

    def cancel(self, invocation_id: str) -> None:
        nested = self._nested()
        if nested is not None:
            nested.cancel(invocation_id)
        else:
            self._handle().cancel(invocation_id)

    def list(self, offset: str | None = None, limit: int = 50) -> InvocationIdsList:
        nested = self._nested()
        if nested is not None:
            ids, after = nested.list(self.name, offset, limit)
            return InvocationIdsList(invocation_ids=tuple(ids), offset=after)
        return InvocationIdsList.of(self._handle().list(offset=offset, limit=limit))

    def await_result(self, invocation_id: str, timeout: float | None = None) -> Any:
        nested = self._nested()
        if nested is not None:
            return nested.await_result(invocation_id, timeout)
        return self._handle().await_result(invocation_id, timeout)

    def call_remote(self, *args: Any, **kwargs: Any) -> Any:
        nested = self._nested()
        if nested is not None:
            return nested.call_remote(self.name, *args, **kwargs)
        return self._handle().call_remote(*args, **kwargs)

    def starmap(self, arguments: Iterable[Iterable[Any]]) -> Iterator[Any]:
        """Results in the order of the argument tuples, each as soon as it (and those before
        it) are ready; every invocation is started first."""
        nested = self._nested()
        if nested is None:
            return self._handle().starmap(arguments)
        ids = [nested.start(self.name, *args) for args in arguments]
        return (nested.await_result(i) for i in ids)

    def map(self, arguments: Iterable[Any]) -> Iterator[Any]:
        return self.starmap((argument,) for argument in arguments)


def _refuse(name: str) -> BlockingFunctionHandle:
    raise ConfigurationError(
        f"{name}: outside a running function, invoke it through the Multinode object that "
        "registered it (or get_deployed_function, for one a daemon serves)"
    )


class Multinode:
    """The functions ``@mn.function()`` registers (see the module's docstring). They run on
    an engine of its own, started the first time one of them is invoked outside a running
    function, and stopped when the program exits; or on a daemon's (``--app``)."""

    def __init__(self) -> None:
        self._functions: dict[str, tuple[Callable[..., Any], dict[str, Any]]] = {}
        self._embedded = Embedded(self)

    def function(
        self,
        cpu: float | None = None,
        memory: str | float | None = None,
        gpu: str | None = None,
        docker_image: str | None = None,
        max_retries: int = 0,
        max_concurrency: int | None = None,
        timeout: float | None = None,
        **engine_options: Any,
    ) -> Callable[[F], F]:
        """Register a function: ``cpu`` (cores), ``memory`` ("16 GiB", "512 MiB", or GiB as a
        number), ``gpu``, ``docker_image`` (its replicas run in containers of that image),
        ``max_retries`` (attempts after the first), ``max_concurrency`` (running at once)
        and ``timeout`` (seconds); any other option is triggerfish's own (``replicas``,
        ``concurrency``...). The function is returned as it was, with Multinode's methods."""
        options: dict[str, Any] = {"max_attempts": max_retries + 1, **engine_options}
        for option, value in (
            ("cpu", cpu),
            ("memory", None if memory is None else _gib(memory)),
            ("gpu", gpu),
            ("image", docker_image),
            ("max_concurrency", max_concurrency),
            ("timeout", timeout),
        ):
            if value is not None:
                options[option] = value
        if docker_image is not None:
            options.setdefault("runtime", "docker")

        def register(fn: F) -> F:
            name = fn.__name__
            methods = _Methods(name, functools.partial(self._handle, name))
            for verb in _VERBS:
                setattr(fn, verb, getattr(methods, verb))
            self._functions[name] = (fn, options)
            return fn

        return register

    def __call__(self, engine: AsyncEngine) -> None:
        """Register every function on ``engine``: ``triggerfish serve --app tasks.main:mn``
        serves them from a daemon (what ``multinode deploy`` does)."""
        for name, (fn, options) in self._functions.items():
            engine.function(name=name, **options)(fn)

    def _handle(self, name: str) -> BlockingFunctionHandle:
        return self._embedded.running().handle(name)


class _DeployedFunction(_Methods):
    """A function a daemon serves (``get_deployed_function``)."""


_clients: dict[tuple[str | None, str | None], Any] = {}  # one connection per daemon
_clients_lock = threading.Lock()


def get_deployed_function(
    project_name: str, function_name: str, version_id: str | int | None = None
) -> _DeployedFunction:
    """A function a triggerfish daemon serves, with Multinode's methods. The daemon is at
    ``MULTINODE_API_URL`` (or ``TRIGGERFISH_API_URL``), its key in ``MULTINODE_API_KEY``
    (or ``TRIGGERFISH_API_KEY``, or the saved login). ``project_name`` names nothing here
    (a daemon serves one project); ``version_id`` is a package revision of a deployed
    service's function (a number, or ``"ver-N"``)."""
    url = os.environ.get("MULTINODE_API_URL") or os.environ.get("TRIGGERFISH_API_URL")
    key = os.environ.get("MULTINODE_API_KEY") or os.environ.get("TRIGGERFISH_API_KEY")
    revision = _revision(version_id)
    with _clients_lock:
        connected = _clients.get((url, key))
        if connected is None:
            client = Client(url, key)
            connected = _clients[url, key] = client.__enter__()
            atexit.register(client.__exit__, None, None, None)
    remote = connected.function(function_name, revision=revision)
    return _DeployedFunction(function_name, lambda: remote)


def _revision(version_id: str | int | None) -> int | None:
    if version_id is None or isinstance(version_id, int):
        return version_id
    found = re.fullmatch(r"(?:ver-)?(\d+)", version_id)
    if found is None:
        raise ConfigurationError(
            f"version_id: {version_id!r} is no package revision (a number, or 'ver-N')"
        )
    return int(found.group(1))


_UNITS = {"": 1.0, "gib": 1.0, "gb": 1e9 / 2**30, "mib": 1 / 1024, "mb": 1e6 / 2**30}


def _gib(memory: str | float) -> float:
    """Memory as Multinode writes it ("16 GiB", "512 MiB", "2 GB") in GiB."""
    if not isinstance(memory, str):
        return float(memory)
    found = re.fullmatch(r"\s*([\d.]+)\s*([A-Za-z]*)\s*", memory)
    unit = found.group(2).lower() if found else None
    if found is None or unit not in _UNITS:
        raise ConfigurationError(f"memory: {memory!r} is not an amount such as '16 GiB'")
    return float(found.group(1)) * _UNITS[unit]
