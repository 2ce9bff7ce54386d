"""Descartes Labs' Batch Compute API on triggerfish: code written for it runs with its import
changed, nothing else.

    from descarteslabs.compute import Function, Job, JobStatus               # before
    from triggerfish.compat.descarteslabs import Function, Job, JobStatus    # after

``Function(fn, requirements=..., include_data=..., image=..., cpus=..., memory=...,
maximum_concurrency=..., timeout=..., retry_count=...)`` is a function each call of which is
a ``Job``; ``map`` submits many in one go, ``results``/``iter_results`` read the successful
ones' results, ``rerun`` runs the failed and timed out ones again, ``wait_for_completion``
waits for all. ``Function.get``, ``Function.list``, ``Job.get`` and ``Job.list`` find them
again. A Function made from a Python function runs on an engine in this program (started the
first time, stopped at exit); with ``TRIGGERFISH_API_URL`` set (and its key, or the saved
login), ``Function.get(name)`` and ``Job.get(id)`` reach the functions a daemon serves.

Nothing here runs work itself: each method is one call of triggerfish's own handles.
"""

from __future__ import annotations

import atexit
import builtins
import contextlib
import enum
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

from ..errors import ConfigurationError, InvocationError
from ..models import Execution, ExecutionStatus, ServiceState
from ..sdk.blocking import BlockingFunctionHandle
from ..sdk.engine import AsyncEngine
from ..sdk.remote import Client
from ._embedded import Embedded

__all__ = ["Function", "FunctionStatus", "Job", "JobStatus"]


class JobStatus(enum.StrEnum):
    """The status of a Job, as Descartes Labs names them."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    FAILURE = "failure"
    TIMEOUT = "timeout"


_JOB_STATUS = {
    ExecutionStatus.PENDING: JobStatus.PENDING,
    ExecutionStatus.RUNNING: JobStatus.RUNNING,
    ExecutionStatus.CANCELLING: JobStatus.RUNNING,
    ExecutionStatus.SUCCEEDED: JobStatus.SUCCESS,
    ExecutionStatus.FAILED: JobStatus.FAILURE,
    ExecutionStatus.CANCELLED: JobStatus.FAILURE,
    ExecutionStatus.TIMED_OUT: JobStatus.TIMEOUT,
}


class FunctionStatus(enum.StrEnum):
    """The status of a Function, as Descartes Labs names them."""

    AWAITING_BUNDLE = "awaiting_bundle"
    BUILDING = "building"
    BUILD_FAILED = "build_failed"
    FAILURE = "failure"
    RUNNING = "running"
    SUCCESS = "success"


_FUNCTION_STATUS = {
    ServiceState.INITIALIZING: FunctionStatus.BUILDING,
    ServiceState.ACTIVE: FunctionStatus.SUCCESS,
    ServiceState.ERROR: FunctionStatus.FAILURE,
    ServiceState.BUILD_FAILED: FunctionStatus.BUILD_FAILED,
    ServiceState.INACTIVE: FunctionStatus.AWAITING_BUNDLE,
}


class _Where:
    """Where Functions run: the engine in this program (Functions made from Python
    functions register there), or a daemon (``TRIGGERFISH_API_URL``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._made: dict[str, Function] = {}
        self.embedded = Embedded(self._setup)
        self._clients: dict[tuple[str | None, str | None], Any] = {}

    def _setup(self, engine: AsyncEngine) -> None:
        for function in self._made.values():
            function.register(engine)

    def add(self, function: Function) -> None:
        """A Function of this program: registered on the engine, now or when it starts."""
        with self._lock:
            if function.id in self._made:
                raise ConfigurationError(f"a Function named {function.id!r} exists already")
            self._made[function.id] = function
        self.embedded.apply(function.register)

    def made(self, name: str) -> Function | None:
        return self._made.get(name)

    def names(self) -> builtins.list[str]:
        """The names of this program's Functions, then of the daemon's."""
        names = builtins.list(self._made)
        if not self.local():
            served = self.daemon().request("GET", "/functions").json()
            names += [f["name"] for f in served if f["name"] not in self._made]
        return names

    def handle(self, name: str) -> BlockingFunctionHandle:
        if name in self._made or self.local():
            return self.embedded.running().handle(name)
        return self.daemon().function(name)  # type: ignore[no-any-return]

    def logs(self, function: str, job_id: str) -> builtins.list[tuple[datetime, str]]:
        """What a Job printed: (time, text) of each piece."""
        if function in self._made or self.local():
            execution = self.handle(function).get(job_id)
            return [(entry.time, entry.text) for entry in execution.logs]
        answer = self.daemon().request("GET", f"/executions/{job_id}/logs").json()
        return [(datetime.fromisoformat(e["time"]), e["text"]) for e in answer["logs"]]

    def daemon(self) -> Any:
        """The connection to the daemon at ``TRIGGERFISH_API_URL`` (one a URL and key)."""
        where = (os.environ.get("TRIGGERFISH_API_URL"), os.environ.get("TRIGGERFISH_API_KEY"))
        with self._lock:
            client = self._clients.get(where)
            if client is None:
                made = Client(*where)
                client = self._clients[where] = made.__enter__()
                atexit.register(made.__exit__, None, None, None)
            return client

    @staticmethod
    def local() -> bool:
        return not os.environ.get("TRIGGERFISH_API_URL")


_where = _Where()


class Job:
    """A single invocation of a Function: ``id``, ``function_id``, ``args``, ``kwargs``,
    ``status``, ``result()``, ``log()``."""

    def __init__(self, function_id: str, job_id: str, args: Any = None, kwargs: Any = None):
        self.function_id = function_id
        self.id = job_id
        self.args = list(args) if args is not None else None
        self.kwargs = dict(kwargs) if kwargs is not None else None
        self._execution: Execution | None = None

    def __repr__(self) -> str:
        return f'Job {self.id}: "{self.status}"'

    @property
    def _handle(self) -> BlockingFunctionHandle:
        return _where.handle(self.function_id)

    def refresh(self) -> None:
        """Read the Job as it stands now."""
        self._execution = self._handle.get(self.id)

    @property
    def status(self) -> JobStatus:
        self.refresh()
        assert self._execution is not None
        return _JOB_STATUS[self._execution.status]

    @property
    def runtime(self) -> float | None:
        self.refresh()
        return self._execution.duration if self._execution else None

    @property
    def function(self) -> Function:
        return Function.get(self.function_id)

    def wait_for_completion(self, timeout: float | None = None, interval: float = 10) -> None:
        """Until the Job is done (``interval`` is not needed: the engine tells when)."""
        with contextlib.suppress(InvocationError):  # done without success: see its status
            self._handle.await_result(self.id, timeout)

    def result(self, cast_type: Any = None) -> Any:
        """The Job's result (None if it did not succeed); ``cast_type``: made into it."""
        self.refresh()
        assert self._execution is not None
        value = self._execution.result
        if self._execution.status is not ExecutionStatus.SUCCEEDED:
            return None
        if cast_type is not None and hasattr(cast_type, "deserialize"):
            return cast_type.deserialize(value)
        return value

    def log(self, timestamps: bool = True) -> str:
        """What the Job printed, a line each (with the time of each, in local time)."""
        lines = []
        for when, text in _where.logs(self.function_id, self.id):
            local = when.astimezone().isoformat(sep=" ", timespec="seconds")
            lines.append(f"{local} {text.rstrip()}" if timestamps else text.rstrip())
        return "\n".join(lines)

    @classmethod
    def get(cls, id: str) -> Job:
        """The Job with this id (of any Function of this program, or of the daemon)."""
        for name in _where.names():
            try:
                execution = _where.handle(name).get(id)
            except LookupError:
                continue
            return cls._of(execution)
        raise LookupError(f"no Job has the id {id!r}")

    @classmethod
    def _of(cls, execution: Execution) -> Job:
        job = cls(execution.function.rpartition("@")[0] or execution.function, execution.id)
        job._execution = execution
        return job

    @classmethod
    def list(cls, function_id: str | None = None, page_size: int = 100) -> builtins.list[Job]:
        """The Jobs of a Function (of every Function of this program, without one), newest
        first."""
        names = [function_id] if function_id is not None else _where.names()
        jobs = []
        for name in names:
            handle = _where.handle(name)
            offset = None
            while True:
                page = handle.list(offset=offset, limit=page_size)
                jobs += [cls(name, job_id) for job_id in page.execution_ids]
                if page.offset is None:
                    break
                offset = page.offset
        return jobs


class Function:
    """A function each call of which is a Job (see the module's docstring). ``memory`` is in
    megabytes, as Descartes Labs counts it."""

    def __init__(
        self,
        function: Callable[..., Any] | None = None,
        requirements: builtins.list[str] | None = None,
        include_data: builtins.list[str] | None = None,
        include_modules: builtins.list[str] | None = None,
        name: str | None = None,
        image: str | None = None,
        cpus: float | None = None,
        memory: float | None = None,
        maximum_concurrency: int | None = None,
        timeout: int | None = None,
        retry_count: int | None = None,
        **extra: Any,
    ) -> None:
        self.name = name or (function.__name__ if function is not None else None)
        if self.name is None:
            raise ConfigurationError("a Function needs a function or a name")
        self.id = self.name
        self.image, self.cpus, self.memory = image, cpus, memory
        self.maximum_concurrency, self.timeout, self.retry_count = (
            maximum_concurrency,
            timeout,
            retry_count,
        )
        self.requirements, self.include_data = requirements or [], include_data or []
        self._function = function
        self._extra = extra
        if function is not None:
            self.save()

    def __repr__(self) -> str:
        return (
            f'<Function name="{self.name}" image={self.image} cpus={self.cpus} '
            f"memory={self.memory} maximum_concurrency={self.maximum_concurrency} "
            f"timeout={self.timeout} retries={self.retry_count}>"
        )

    def _options(self) -> dict[str, Any]:
        most = self.maximum_concurrency or 1
        options: dict[str, Any] = {"replicas": (1, most), "concurrency": 1, **self._extra}
        for option, value in (
            ("cpu", self.cpus),
            ("memory", self.memory / 1024 if self.memory else None),
            ("image", self.image),
            ("timeout", self.timeout),
            ("max_attempts", None if self.retry_count is None else self.retry_count + 1),
        ):
            if value is not None:
                options[option] = value
        if self.requirements:
            options["requirements"] = tuple(self.requirements)
        if self.include_data:
            options["include_data"] = tuple(self.include_data)
        return options

    def save(self) -> None:
        """Make the Function runnable (done when it is made from a Python function)."""
        if self._function is not None and _where.made(self.id) is not self:
            _where.add(self)

    def register(self, engine: AsyncEngine) -> None:
        """Register it on ``engine`` (the engine in this program)."""
        assert self._function is not None
        engine.function(name=self.id, **self._options())(self._function)

    @property
    def _handle(self) -> BlockingFunctionHandle:
        return _where.handle(self.id)

    def __call__(self, *args: Any, **kwargs: Any) -> Job:
        return Job(self.id, self._handle.start(*args, **kwargs), args, kwargs)

    def map(
        self, args: Iterable[Any], iterargs: Iterable[Iterable[Any]] | None = None
    ) -> builtins.list[Job]:
        """One Job per element of ``args`` (its first argument), with the elements of
        ``iterargs`` as the next ones, submitted together."""
        columns = [args, *(iterargs or ())]
        calls: builtins.list[tuple[tuple[Any, ...], dict[str, Any]]] = [
            (tuple(row), {}) for row in zip(*columns, strict=False)
        ]
        ids = self._handle.start_many(calls)
        return [Job(self.id, i, call[0], {}) for i, call in zip(ids, calls, strict=True)]

    def results(self, cast_type: Any = None) -> builtins.list[Any]:
        """The results of every successful Job, oldest first."""
        return builtins.list(self.iter_results(cast_type))

    def iter_results(self, cast_type: Any = None) -> Iterator[Any]:
        for value in self._handle.iter_results():
            yield cast_type.deserialize(value) if cast_type is not None else value

    def rerun(self) -> builtins.list[Job]:
        """Run the failed and timed out Jobs again."""
        return [Job(self.id, i) for i in self._handle.rerun()]

    def wait_for_completion(self, timeout: float | None = None, interval: float = 10) -> None:
        """Until every Job is done (``interval`` is not needed: the engine tells when)."""
        self._handle.wait_for_completion(timeout)

    @property
    def jobs(self) -> builtins.list[Job]:
        return Job.list(self.id)

    @property
    def job_statistics(self) -> dict[str, int]:
        counts = self._handle.statistics()
        found: dict[str, int] = {}
        for status, count in counts.items():
            key = _JOB_STATUS[status].value
            found[key] = found.get(key, 0) + count
        return found

    @property
    def status(self) -> FunctionStatus:
        if not _where.local():
            return FunctionStatus.SUCCESS
        state = _where.embedded.running().service_status(self.id).state
        return _FUNCTION_STATUS[state]

    @classmethod
    def get(cls, id: str, **params: Any) -> Function:
        """The Function named ``id``: one of this program, or one the daemon serves."""
        made = _where.made(id)
        if made is not None:
            return made
        _where.handle(id)  # one that exists, or UnknownFunctionError naming those that do
        return cls(name=id)

    @classmethod
    def list(cls, page_size: int = 100, **params: Any) -> builtins.list[Function]:
        """Every Function: this program's, or the daemon's."""
        return [cls.get(name) for name in _where.names()]
