"""Value objects shared by every layer: what an execution, a function and a service are.

The public objects are frozen, keyword-only pydantic models that go to and from JSON.
``ExecutionRecord`` is the one mutable shape: the engine's live state of an execution and the row
the store keeps. It is a slotted dataclass rather than a model because the engine changes it
several times per execution on its hot path; ``Execution.from_record`` makes the public view.
"""

from __future__ import annotations

import enum
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ConfigurationError

__all__ = [
    "TERMINAL_STATUSES",
    "CronTriggerSpec",
    "ErrorInfo",
    "Event",
    "EventTriggerSpec",
    "Execution",
    "ExecutionPage",
    "ExecutionRecord",
    "ExecutionStatus",
    "FunctionSpec",
    "LogEntry",
    "ServiceSpec",
    "ServiceState",
    "ServiceStatus",
    "StatusChange",
    "Trigger",
    "TriggerRecord",
    "TriggerSpec",
    "TriggerStats",
    "allowed_modes",
    "new_execution_id",
]


class ExecutionStatus(enum.StrEnum):
    """Where an execution is in its life. The last four are final."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    CANCELLING = "CANCELLING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"


TERMINAL_STATUSES = frozenset(
    {
        ExecutionStatus.SUCCEEDED,
        ExecutionStatus.FAILED,
        ExecutionStatus.CANCELLED,
        ExecutionStatus.TIMED_OUT,
    }
)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class StatusChange(_Frozen):
    """One entry of an execution's status log."""

    time: datetime
    status: ExecutionStatus
    progress: int | None = None
    message: str = ""


class ErrorInfo(_Frozen):
    """Why an execution did not succeed: the remote exception's type, message and traceback."""

    type: str
    message: str
    traceback: str = ""


class LogEntry(_Frozen):
    """A piece of output written by the function: ``stream`` is stdout, stderr or logging."""

    time: datetime
    stream: Literal["stdout", "stderr", "logging"]
    text: str


class Execution(_Frozen):
    """A run of a function, as stored: status, history, result or error.

    ``result`` is the return value once SUCCEEDED; for a generator function it is the latest
    yielded value while it runs. ``terminated`` is true once the status is final.
    ``trigger_id`` and ``event`` name the trigger and event that caused it, and ``lineage`` the
    chain of triggers behind it (what loop protection reads).
    """

    id: str
    function: str
    service: str
    status: ExecutionStatus
    result: Any = None
    error: ErrorInfo | None = None
    attempts: int = 0
    max_attempts: int = 1
    num_failed_attempts: int = 0
    progress: int | None = None
    status_log: tuple[StatusChange, ...] = ()
    logs: tuple[LogEntry, ...] = ()
    parent_id: str | None = None
    trigger_id: str | None = None
    event: dict[str, Any] | None = None
    lineage: tuple[str, ...] = ()
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def terminated(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def duration(self) -> float | None:
        """Seconds from the first start to the end (or to now while it runs)."""
        if self.started_at is None:
            return None
        end = self.finished_at or datetime.now(UTC)
        return (end - self.started_at).total_seconds()

    @classmethod
    def from_record(cls, record: ExecutionRecord, result: Any = None) -> Execution:
        """The public view of a record; ``result`` is the already unpickled result."""
        error = None
        if record.error is not None:
            etype, emsg, etb = record.error
            error = ErrorInfo(type=etype, message=emsg, traceback=etb)
        return cls(
            id=record.id,
            function=record.function,
            service=record.service,
            status=record.status,
            result=result,
            error=error,
            attempts=record.attempts,
            max_attempts=record.max_attempts,
            num_failed_attempts=record.failed_attempts,
            progress=record.progress,
            status_log=tuple(
                StatusChange(time=_utc(t), status=s, progress=p, message=m)
                for t, s, p, m in record.status_log
            ),
            logs=tuple(LogEntry(time=_utc(t), stream=s, text=x) for t, s, x in record.logs),  # type: ignore[arg-type]
            parent_id=record.parent_id,
            trigger_id=record.trigger_id,
            event=record.event,
            lineage=record.lineage,
            created_at=_utc(record.created_at),
            started_at=_utc(record.started_at) if record.started_at else None,
            finished_at=_utc(record.finished_at) if record.finished_at else None,
        )


class ExecutionPage(_Frozen):
    """One page of ``list()``: ids newest first, and the offset of the next page (None at the
    end)."""

    execution_ids: tuple[str, ...]
    offset: str | None = None


_id_lock = threading.Lock()
_last_id_ns = 0


def new_execution_id() -> str:
    """A new id that sorts by creation time within one engine (so ids double as page offsets)."""
    return new_execution_ids(1)[0]


def new_execution_ids(count: int) -> list[str]:
    """``count`` new ids at once, in creation order: one clock read and one lock for all."""
    global _last_id_ns
    with _id_lock:
        first = max(time.time_ns(), _last_id_ns + 1)
        _last_id_ns = first + count - 1
    return execution_ids_from(first, count)


def execution_ids_from(first_ns: int, count: int) -> list[str]:
    """Ids for ``count`` executions made one after another from ``first_ns`` (nanoseconds
    since the epoch) on. Made ahead of time, they are taken into use by
    ``claim_execution_ids``; ``new_execution_id`` is what to use otherwise."""
    salt = secrets.token_hex(3 * count)
    return [f"exe-{first_ns + i:016x}{salt[6 * i : 6 * i + 6]}" for i in range(count)]


def claim_execution_ids(first_ns: int, last_ns: int) -> bool:
    """Take into use ids made ahead with ``execution_ids_from`` for ``first_ns`` to ``last_ns``:
    refused (False) if an id at or after ``first_ns`` was made since, for then they would not
    sort by creation (nor surely be unique). Ids made later sort after them."""
    global _last_id_ns
    with _id_lock:
        if _last_id_ns >= first_ns:
            return False
        _last_id_ns = last_ns
        return True


@dataclass(slots=True, eq=False)
class ExecutionRecord:
    """The engine's live, mutable state of one execution, and the row the store keeps.

    ``input`` and ``result`` are pickled bytes; ``error`` is (type, message, traceback);
    ``status_log`` holds (time, status, progress, message) and ``logs`` (time, stream, text).
    Times are seconds since the epoch.
    """

    id: str
    function: str
    service: str
    input: bytes
    max_attempts: int
    created_at: float
    status: ExecutionStatus = ExecutionStatus.PENDING
    attempts: int = 0
    failed_attempts: int = 0
    result: bytes | None = None
    error: tuple[str, str, str] | None = None
    progress: int | None = None
    status_log: list[tuple[float, ExecutionStatus, int | None, str]] = field(default_factory=list)
    logs: list[tuple[float, str, str]] = field(default_factory=list)
    parent_id: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    trigger_id: str | None = None
    event: dict[str, Any] | None = None
    lineage: tuple[str, ...] = ()

    @property
    def terminated(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def change(self, status: ExecutionStatus, message: str = "", now: float | None = None) -> None:
        """Move to ``status`` and append the change to the status log."""
        self.status = status
        self.status_log.append((now or time.time(), status, self.progress, message))


class ServiceState(enum.StrEnum):
    """How a service's replicas are doing (Dataloop's service status)."""

    INITIALIZING = "Initializing"
    ACTIVE = "Active"
    ERROR = "Error"
    INACTIVE = "Inactive"


class ServiceStatus(_Frozen):
    """A service's state, replica counts, and the init error that put it in Error."""

    name: str
    state: ServiceState
    replicas: int
    busy_slots: int
    queued: int
    error: ErrorInfo | None = None


def _spec_error(kind: str, exc: ValidationError) -> ConfigurationError:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or kind
    return ConfigurationError(f"invalid {kind} field {where!r}: {first['msg']}")


class FunctionSpec(_Frozen):
    """How a function runs: limits, retries, resources and description.

    ``timeout`` is in seconds and progress updates restart it; a failed attempt is retried after
    ``backoff * 2**(attempt-1)`` seconds (at most ``max_backoff``) until ``max_attempts``.
    ``max_concurrency`` caps running executions of this function across all replicas.
    ``cpu``, ``memory`` (GiB), ``ephemeral_disk`` (GiB), ``gpu`` and ``image`` apply to container
    runtimes; process replicas get ``env`` and ``secrets`` as environment variables.
    """

    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z_][\w.\-]*$")
    service: str
    timeout: float = Field(default=300.0, gt=0, le=172800)
    max_attempts: int = Field(default=1, ge=1, le=100)
    backoff: float = Field(default=1.0, ge=0)
    max_backoff: float = Field(default=60.0, ge=0)
    max_concurrency: int | None = Field(default=None, ge=1)
    cpu: float = Field(default=1.0, gt=0)
    memory: float = Field(default=1.0, gt=0)
    ephemeral_disk: float = Field(default=2.0, gt=0)
    gpu: str | None = None
    image: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    secrets: dict[str, str] = Field(default_factory=dict, repr=False)
    requirements: tuple[str, ...] = ()
    description: str = ""
    input_serializer: Literal["json", "pickle"] = "pickle"
    output_serializer: Literal["json", "pickle"] = "pickle"

    @classmethod
    def build(cls, **fields: Any) -> FunctionSpec:
        """Validate ``fields``; a bad one raises ConfigurationError naming it."""
        try:
            return cls(**fields)
        except ValidationError as exc:
            raise _spec_error("function spec", exc) from None

    def backoff_for(self, attempt: int) -> float:
        """Seconds to wait before the attempt after failed attempt number ``attempt``."""
        return float(min(self.max_backoff, self.backoff * 2 ** max(0, attempt - 1)))


class ServiceSpec(_Frozen):
    """A deployment of functions on replicas: between ``min_replicas`` and ``max_replicas``,
    each running up to ``concurrency`` executions at once. An idle replica above the minimum
    is stopped after ``idle_timeout`` seconds, down to zero if the minimum is zero.
    """

    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z_][\w.\-]*$")
    runtime: Literal["process"] = "process"
    min_replicas: int = Field(default=1, ge=0, le=1000)
    max_replicas: int = Field(default=1, ge=1, le=1000)
    concurrency: int = Field(default=1, ge=1, le=10000)
    idle_timeout: float = Field(default=300.0, gt=0)
    init_params: dict[str, Any] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)
    secrets: dict[str, str] = Field(default_factory=dict, repr=False)

    @field_validator("max_replicas")
    @classmethod
    def _max_at_least_min(cls, value: int, info: Any) -> int:
        low = info.data.get("min_replicas", 0)
        if value < low:
            raise ValueError(f"max_replicas ({value}) is below min_replicas ({low})")
        return value

    @classmethod
    def build(cls, **fields: Any) -> ServiceSpec:
        """Validate ``fields``; a bad one raises ConfigurationError naming it."""
        try:
            return cls(**fields)
        except ValidationError as exc:
            raise _spec_error("service spec", exc) from None

    def environment(self) -> dict[str, str]:
        """The replica's environment: ours, then the service's env and secrets."""
        return {**os.environ, **self.env, **self.secrets}


# -- triggers ---------------------------------------------------------------------------------

#: Dataloop's resource kinds; any other kind an app names is accepted too.
KNOWN_RESOURCES = (
    "Item",
    "Dataset",
    "Annotation",
    "Task",
    "Assignment",
    "Model",
    "ItemStatus",
    "Execution",
)

#: Which execution modes each known action allows (Dataloop's table). Always is refused for
#: Updated and statusChanged on Task and Assignment; actions an app names allow both.
_ONCE_ONLY = frozenset({"Created", "Deleted", "Clone"})
_NO_ALWAYS_RESOURCES = frozenset({"Task", "Assignment"})


def allowed_modes(resource: str, action: str) -> frozenset[str]:
    """The execution modes a trigger on (resource, action) may use."""
    if action in _ONCE_ONLY:
        return frozenset({"Once"})
    if action in ("Updated", "statusChanged") and resource in _NO_ALWAYS_RESOURCES:
        return frozenset({"Once"})
    return frozenset({"Once", "Always"})


class EventTriggerSpec(_Frozen):
    """Run ``function`` when an event on ``resource`` with one of ``actions`` matches ``filter``.

    The function is called with the resource's JSON body (and ``input`` as keyword arguments).
    ``execution_mode`` Once runs it at most once per resource id, ever; Always on every match.
    ``loop_limit`` is how many times this trigger may fire on events its own executions caused
    (directly or down a chain); past it the firing is suppressed and recorded.
    """

    type: Literal["event"] = "event"
    name: str = Field(min_length=1, max_length=200)
    function: str = Field(min_length=1)
    resource: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z_][\w.\-]*$")
    actions: tuple[str, ...] = Field(min_length=1)
    filter: dict[str, Any] | None = None
    execution_mode: Literal["Once", "Always"] = "Once"
    input: dict[str, Any] = Field(default_factory=dict)
    loop_limit: int = Field(default=0, ge=0, le=100)
    active: bool = True

    @field_validator("actions")
    @classmethod
    def _actions_are_names(cls, actions: tuple[str, ...]) -> tuple[str, ...]:
        for action in actions:
            if not action or not action.replace("_", "").isalnum():
                raise ValueError(f"action {action!r} is not a name")
        return actions


class CronTriggerSpec(_Frozen):
    """Run ``function`` with ``input`` as keyword arguments on a cron schedule.

    After the engine was down, ``misfire`` decides what happens to the fire times it missed:
    ``skip`` them, ``run_once`` (the latest one), or ``catch_up`` every one within
    ``misfire_grace`` seconds of now. Missed runs that do not run are counted on the trigger.
    """

    type: Literal["cron"] = "cron"
    name: str = Field(min_length=1, max_length=200)
    function: str = Field(min_length=1)
    cron: str = Field(min_length=1)
    timezone: str = "UTC"
    start_at: datetime | None = None
    end_at: datetime | None = None
    input: dict[str, Any] = Field(default_factory=dict)
    misfire: Literal["skip", "run_once", "catch_up"] = "run_once"
    misfire_grace: float = Field(default=3600.0, ge=0)
    active: bool = True


TriggerSpec = EventTriggerSpec | CronTriggerSpec


class TriggerStats(_Frozen):
    """What a trigger has done: firings, suppressed firings (loop protection) with the last
    reason, and cron fire times missed while the engine was down."""

    fired: int = 0
    suppressed: int = 0
    last_suppressed_reason: str | None = None
    last_suppressed_at: datetime | None = None
    missed: int = 0
    last_missed_at: datetime | None = None


class Trigger(_Frozen):
    """A stored trigger: its id, its spec and its statistics."""

    id: str
    spec: EventTriggerSpec | CronTriggerSpec = Field(discriminator="type")
    stats: TriggerStats = Field(default_factory=TriggerStats)
    created_at: datetime

    @property
    def name(self) -> str:
        return self.spec.name


class Event(_Frozen):
    """Something that happened to a resource. ``lineage`` lists the triggers whose executions
    led to it (oldest first); it is how loops are recognised."""

    id: str
    resource: str
    action: str
    resource_id: str | None = None
    body: Any = None
    lineage: tuple[str, ...] = ()
    time: datetime


@dataclass(slots=True, eq=False)
class TriggerRecord:
    """A trigger as the engine keeps it: its spec, counters, and for cron the cursor (the last
    scheduled time handled, fired or missed, in seconds since the epoch)."""

    id: str
    spec: EventTriggerSpec | CronTriggerSpec
    created_at: float
    fired: int = 0
    suppressed: int = 0
    last_suppressed_reason: str | None = None
    last_suppressed_at: float | None = None
    missed: int = 0
    last_missed_at: float | None = None
    cursor: float | None = None

    def public(self) -> Trigger:
        return Trigger(
            id=self.id,
            spec=self.spec,
            created_at=_utc(self.created_at),
            stats=TriggerStats(
                fired=self.fired,
                suppressed=self.suppressed,
                last_suppressed_reason=self.last_suppressed_reason,
                last_suppressed_at=_utc(self.last_suppressed_at)
                if self.last_suppressed_at
                else None,
                missed=self.missed,
                last_missed_at=_utc(self.last_missed_at) if self.last_missed_at else None,
            ),
        )
