"""Value objects shared by every layer: what an execution, a function and a service are.

The public objects are frozen, keyword-only pydantic models that go to and from JSON.
``ExecutionRecord`` is the one mutable shape: the engine's live state of an execution and the row
the store keeps. It is a slotted dataclass rather than a model because the engine changes it
several times per execution on its hot path; ``Execution.from_record`` makes the public view.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import random
import re
import secrets
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from . import _json
from ._fields import sort_fields, warn_ignored
from .errors import ConfigurationError, DefinitionError, InvalidInputError

__all__ = [
    "TERMINAL_STATUSES",
    "UNFINISHED_STATUSES",
    "AutoscalerDefinition",
    "CronTriggerSpec",
    "Deployment",
    "ErrorInfo",
    "EventTriggerSpec",
    "Execution",
    "ExecutionPage",
    "ExecutionQuery",
    "ExecutionRecord",
    "ExecutionStatus",
    "FunctionOptions",
    "FunctionSpec",
    "LogEntry",
    "ModuleDefinition",
    "PackageDefinition",
    "PackageFunction",
    "PackageIO",
    "PackageRevision",
    "RuntimeDefinition",
    "ServiceDefinition",
    "ServiceSpec",
    "ServiceState",
    "ServiceStatus",
    "StatusChange",
    "Trigger",
    "TriggerRecord",
    "TriggerSpec",
    "TriggerStats",
    "allowed_modes",
    "belongs_to",
    "new_execution_id",
    "revision_of",
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


#: The final statuses: an execution in one of them never changes again (but for a rerun).
TERMINAL_STATUSES = frozenset(
    {
        ExecutionStatus.SUCCEEDED,
        ExecutionStatus.FAILED,
        ExecutionStatus.CANCELLED,
        ExecutionStatus.TIMED_OUT,
    }
)
#: The statuses of an execution that has not finished: what an engine takes back at start.
UNFINISHED_STATUSES = frozenset(ExecutionStatus) - TERMINAL_STATUSES


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
    chain of triggers behind it (what loop protection reads). For a function of a deployed
    service, ``function`` is the name pinned to the package revision that ran it
    (``resizer.resize@2``) and ``revision`` is that revision (None for other functions).
    ``engine_id`` names the engine that owns it: the one that made it, took it over from an
    engine that is gone, or ran it again; the one that ran its latest attempt.
    """

    id: str
    function: str
    service: str
    revision: int | None = None
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
    engine_id: str | None = None

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
            revision=revision_of(record.function),
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
            engine_id=record.engine_id,
        )


@dataclass(frozen=True, slots=True)
class ExecutionQuery:
    """Which executions a listing selects; every filter that is not None must hold.

    ``function`` names a function, and selects its pinned revisions too (see ``belongs_to``);
    ``statuses`` is a set of statuses; ``trigger_id`` the trigger that fired them;
    ``created_after`` and ``created_before`` bound the creation time, [after, before), in unix
    seconds; ``before`` is an execution id (a page's offset): only older ones; ``limit`` caps
    how many (None: every one).
    """

    function: str | None = None
    statuses: frozenset[ExecutionStatus] | None = None
    trigger_id: str | None = None
    created_after: float | None = None
    created_before: float | None = None
    before: str | None = None
    limit: int | None = None

    @classmethod
    def build(
        cls,
        *,
        function: str | None = None,
        status: ExecutionStatus | str | Iterable[ExecutionStatus | str] | None = None,
        trigger_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        offset: str | None = None,
        limit: int | None = None,
    ) -> ExecutionQuery:
        """A query from what a caller gives (statuses by value or by member, times as
        datetimes), refusing a status or a limit that cannot be, by name."""
        if limit is not None and limit < 1:
            raise ConfigurationError(f"limit must be at least 1, got {limit}")
        return cls(
            function=function,
            statuses=_statuses(status),
            trigger_id=trigger_id,
            created_after=None if since is None else since.timestamp(),
            created_before=None if until is None else until.timestamp(),
            before=offset,
            limit=limit,
        )

    def replace(self, **fields: Any) -> ExecutionQuery:
        return dataclasses.replace(self, **fields)

    def matches(self, record: ExecutionRecord) -> bool:
        """Whether a record is selected (``limit`` aside)."""
        return (
            (self.function is None or belongs_to(record.function, self.function))
            and (self.statuses is None or record.status in self.statuses)
            and (self.trigger_id is None or record.trigger_id == self.trigger_id)
            and (self.created_after is None or record.created_at >= self.created_after)
            and (self.created_before is None or record.created_at < self.created_before)
            and (self.before is None or record.id < self.before)
        )


def _statuses(
    status: ExecutionStatus | str | Iterable[ExecutionStatus | str] | None,
) -> frozenset[ExecutionStatus] | None:
    if status is None:
        return None
    try:
        if isinstance(status, str):
            return frozenset((ExecutionStatus(status),))
        return frozenset(ExecutionStatus(s) for s in status)
    except ValueError as exc:
        known = ", ".join(s.value for s in ExecutionStatus)
        raise ConfigurationError(f"status: {exc} (known: {known})") from None


class ExecutionPage(_Frozen):
    """One page of ``list()``: ids newest first, and the offset of the next page (None at the
    end)."""

    execution_ids: tuple[str, ...]
    offset: str | None = None


def revision_of(function: str) -> int | None:
    """The package revision a pinned function name carries (``resizer.resize@2`` -> 2)."""
    _, at, revision = function.rpartition("@")
    return int(revision) if at and revision.isdigit() else None


def belongs_to(function: str, name: str) -> bool:
    """Whether executions of ``function`` count as executions of ``name``: the same name, or
    a pinned revision of it (``resizer.resize@2`` belongs to ``resizer.resize``)."""
    return function == name or ("@" not in name and function.startswith(name + "@"))


_id_lock = threading.Lock()
_last_id_ns = 0


def new_execution_id() -> str:
    """A new id that sorts by creation time within one engine (so ids double as page offsets)."""
    global _last_id_ns
    with _id_lock:  # one id per firing of a trigger: made here without a list around it
        ns = _last_id_ns = max(time.time_ns(), _last_id_ns + 1)
    return f"exe-{ns:016x}{_salt.getrandbits(24):06x}"


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
    salt = _salt.getrandbits
    return [f"exe-{first_ns + i:016x}{salt(24):06x}" for i in range(count)]


# Ids are unique by their time part within one engine; the salt keeps apart engines sharing a
# store. It needs no secrecy, so a generator seeded once by the OS spares a system call per id.
_salt = random.Random(secrets.randbits(128))


def id_salt() -> str:
    """Six random hex digits, the tail of an id."""
    return f"{_salt.getrandbits(24):06x}"


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

    ``input`` and ``result`` are pickled bytes, and ``result_view`` is the result's JSON view
    as its replica made it, (kind, text) (see ``engine/replica/views.py``); ``error`` is (type,
    message, traceback);
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
    result_view: tuple[str, str] | None = None
    error: tuple[str, str, str] | None = None
    progress: int | None = None
    status_log: list[tuple[float, ExecutionStatus, int | None, str]] = field(default_factory=list)
    # A tuple until the first piece of output: most executions print nothing, and an empty
    # list per queued execution adds up (7 MB for 100,000).
    logs: Sequence[tuple[float, str, str]] = ()
    parent_id: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    trigger_id: str | None = None
    event: dict[str, Any] | None = None
    lineage: tuple[str, ...] = ()
    engine_id: str | None = None  # the engine that owns it (made, adopted or ran it)
    # Another engine on a shared store asked its owner to cancel it (never stored as such).
    cancel_requested: bool = False

    @property
    def terminated(self) -> bool:
        return self.status in TERMINAL_STATUSES


class ServiceState(enum.StrEnum):
    """How a service's replicas are doing (Dataloop's service status)."""

    INITIALIZING = "Initializing"
    ACTIVE = "Active"
    ERROR = "Error"
    BUILD_FAILED = "BuildFailed"  # its image (requirements, include_data) failed to build
    INACTIVE = "Inactive"


class ServiceStatus(_Frozen):
    """A service's state, replica counts, and the init error that put it in Error."""

    name: str
    state: ServiceState
    replicas: int
    busy_slots: int
    queued: int
    error: ErrorInfo | None = None


#: Function and service names; ``@N`` at the end pins a deployed service's package revision.
NAME_PATTERN = r"^[A-Za-z_][\w.\-]*(@[1-9][0-9]*)?$"


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
    ``requirements`` (pip requirement strings) and ``include_data`` (files, folders or glob
    patterns, relative to the working directory or a package's codebase) make container
    replicas run in an image derived from ``image`` with them, built once per distinct set.
    ``application`` gives the function its own HTTP entry point on the daemon
    (``POST /applications/{name}``, the request body its one argument), read with
    ``input_serializer`` and answered with ``output_serializer`` (json or pickle).
    """

    name: str = Field(min_length=1, max_length=200, pattern=NAME_PATTERN)
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
    include_data: tuple[str, ...] = ()
    description: str = ""
    application: bool = False
    input_serializer: Literal["json", "pickle"] = "json"
    output_serializer: Literal["json", "pickle"] = "json"

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


def _max_at_least_min(value: int, info: ValidationInfo) -> int:
    low = info.data.get("min_replicas", 0)
    if value < low:
        raise ValueError(f"max_replicas ({value}) is below min_replicas ({low})")
    return value


class ServiceSpec(_Frozen):
    """A deployment of functions on replicas: between ``min_replicas`` and ``max_replicas``,
    each running up to ``concurrency`` executions at once. An idle replica above the minimum
    is stopped after ``idle_timeout`` seconds, down to zero if the minimum is zero.

    ``runtime`` names where replicas run: local processes ("process"), or containers of
    ``image`` (or of the image its functions name; they must agree) on the local Docker
    engine ("docker") or as tasks of a Docker Swarm ("swarm"); or a runtime registered under
    another name (see ``engine/runtimes/registry.py``). An engine refuses a service whose
    runtime it does not know, naming those it knows.
    """

    name: str = Field(min_length=1, max_length=200, pattern=NAME_PATTERN)
    runtime: str = Field(default="process", max_length=100, pattern=r"^[A-Za-z_]\w*$")
    image: str | None = None
    min_replicas: int = Field(default=1, ge=0, le=1000)
    max_replicas: int = Field(default=1, ge=1, le=1000)
    concurrency: int = Field(default=1, ge=1, le=10000)
    idle_timeout: float = Field(default=300.0, gt=0)
    init_params: dict[str, Any] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)
    secrets: dict[str, str] = Field(default_factory=dict, repr=False)

    _max_at_least_min = field_validator("max_replicas")(_max_at_least_min)

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


def _plain_json(value: Any, info: ValidationInfo) -> Any:
    """A field that is stored and shown as JSON: held to the boundary's rules (depth,
    unicode, finite numbers), so the store and the views can always take it."""
    try:
        _json.check(value, info.field_name or "value")
    except InvalidInputError as exc:
        raise ValueError(str(exc)) from None
    return value


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

    _plain = field_validator("name", "function", "filter", "input")(_plain_json)

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

    _plain = field_validator("name", "function", "cron", "timezone", "input")(_plain_json)


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


# -- packages and deployed services (Dataloop's JSON shapes) ----------------------------------

_IDENTIFIER = r"^[A-Za-z_]\w*$"
_PACKAGE_NAME = r"^[A-Za-z0-9][\w\-]*$"
#: A deployed service's name: no dots, because its functions are named ``<service>.<function>``.
DEPLOYED_NAME = r"^[A-Za-z_][\w\-]*$"


def definition_error(where: str, exc: ValidationError) -> DefinitionError:
    """The first problem of ``exc`` as an error naming the field's path (``modules[0].name``)."""
    first = exc.errors()[0]
    for part in first["loc"]:
        where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
    return DefinitionError(where or "definition", first["msg"])


def load_document(document: Any, where: str) -> Any:
    """A JSON document given as a dict (kept) or as JSON text (parsed), held to the
    boundary's rules either way (depth, unicode, finite numbers: see ``_json``)."""
    if isinstance(document, str | bytes):
        return _json.parse(document, where)
    _json.check(document, where)
    return document


def _unique(kind: str, names: list[str]) -> None:
    seen = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{kind} {name!r} appears twice")
        seen.add(name)


class _Dataloop(BaseModel):
    # Field names follow Dataloop's camelCase JSON; Python code may use the snake_case names.
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)
    _document: ClassVar[str] = "definition"

    @classmethod
    def parse(cls, document: Any, where: str = "") -> Self:
        """Validate a dict or JSON text; a bad field raises DefinitionError naming its path.
        Fields only Dataloop uses are left out, and named once in the log (see _fields)."""
        document = load_document(document, where or cls._document)
        ignored: list[str] = []
        document = sort_fields(document, cls, where, ignored)
        try:
            parsed = cls.model_validate(document)
        except ValidationError as exc:
            raise definition_error(where, exc) from None
        warn_ignored(where or cls._document, ignored)
        return parsed

    def to_json(self) -> dict[str, Any]:
        """The Dataloop JSON form (camelCase names)."""
        return self.model_dump(mode="json", by_alias=True)


class PackageIO(_Dataloop):
    """An input or output of a function (or an init input of a module): a name and a type."""

    name: str = Field(pattern=_IDENTIFIER, max_length=100)
    type: str = Field(default="Json", min_length=1, max_length=100)
    description: str = ""
    default_value: Any = Field(default=None, alias="defaultValue")


class PackageFunction(_Dataloop):
    """A function of a module: a method of its class, or a function of its entry point."""

    name: str = Field(pattern=_IDENTIFIER, max_length=100)
    description: str = ""
    display_name: str = Field(default="", alias="displayName")
    display_icon: str = Field(default="", alias="displayIcon")
    input: tuple[PackageIO, ...] = ()
    output: tuple[PackageIO, ...] = ()


class ModuleDefinition(_Dataloop):
    """Which code of the codebase to load: the ``entry_point`` file, and in it ``class_name``
    (instantiated once per replica with the service's init params) or, without a class name,
    the module's plain functions."""

    name: str = Field(default="default_module", pattern=_PACKAGE_NAME, max_length=100)
    entry_point: str = Field(default="main.py", alias="entryPoint", max_length=500)
    class_name: str | None = Field(default=None, alias="className", pattern=_IDENTIFIER)
    init_inputs: tuple[PackageIO, ...] = Field(default=(), alias="initInputs")
    functions: tuple[PackageFunction, ...] = Field(min_length=1)

    @field_validator("entry_point")
    @classmethod
    def _importable_path(cls, value: str) -> str:
        # The replica imports the file as a module named after its path, so every part of it
        # must be a Python name; this also keeps it inside the codebase.
        parts = value.split("/")
        if not value.endswith(".py") or not all(
            re.match(_IDENTIFIER, p)
            for p in [
                *parts[:-1],
                parts[-1][:-3],
            ]
        ):
            raise ValueError(
                f"{value!r} is not a relative path to a .py file made of Python names "
                "(such as 'main.py' or 'src/app.py')"
            )
        return value

    @field_validator("functions")
    @classmethod
    def _unique_functions(cls, value: tuple[PackageFunction, ...]) -> tuple[PackageFunction, ...]:
        _unique("function", [f.name for f in value])
        return value

    @field_validator("init_inputs")
    @classmethod
    def _unique_inputs(cls, value: tuple[PackageIO, ...]) -> tuple[PackageIO, ...]:
        _unique("init input", [i.name for i in value])
        return value


class PackageDefinition(_Dataloop):
    """A package.json: the package's name and its modules."""

    _document: ClassVar[str] = "package.json"

    name: str = Field(pattern=_PACKAGE_NAME, max_length=100)
    version: str | None = None
    description: str = ""
    modules: tuple[ModuleDefinition, ...] = Field(min_length=1)

    @field_validator("modules")
    @classmethod
    def _unique_modules(cls, value: tuple[ModuleDefinition, ...]) -> tuple[ModuleDefinition, ...]:
        _unique("module", [m.name for m in value])
        return value

    def module(self, name: str | None) -> ModuleDefinition:
        """The module of that name; with None, the only module (or ``default_module``)."""
        if name is None and len(self.modules) == 1:
            return self.modules[0]
        wanted = name or "default_module"
        for module in self.modules:
            if module.name == wanted:
                return module
        known = ", ".join(m.name for m in self.modules)
        raise ConfigurationError(
            f"moduleName: package {self.name!r} has no module {wanted!r} (modules: {known})"
        )


class PackageRevision(_Frozen):
    """One immutable revision of a package: its definition and the sha256 of its codebase
    (a zip). Revisions of a package are numbered 1, 2, 3... in the order they were stored."""

    name: str
    revision: int
    package: PackageDefinition
    codebase_sha256: str
    codebase_size: int
    created_at: datetime


class AutoscalerDefinition(_Dataloop):
    """Between ``minReplicas`` and ``maxReplicas`` replicas; an idle one above the minimum
    stops after ``cooldownPeriod`` seconds. ``type`` and ``queueLength`` are accepted and
    ignored (replicas start when executions wait, whatever the queue length)."""

    type: str = "rabbitmq"
    min_replicas: int = Field(default=1, alias="minReplicas", ge=0, le=1000)
    max_replicas: int = Field(default=1, alias="maxReplicas", ge=1, le=1000)
    queue_length: int | None = Field(default=None, alias="queueLength")
    cooldown_period: float = Field(default=300.0, alias="cooldownPeriod", gt=0)

    _max_at_least_min = field_validator("max_replicas")(_max_at_least_min)


class RuntimeDefinition(_Dataloop):
    """Where and how wide a service runs. With a ``runnerImage``, replicas are containers of
    that image on the local Docker engine; without, local processes with the engine's own
    interpreter. ``gpu`` and ``podType`` are accepted and kept. ``replicas`` (Dataloop's
    fixed count) stands for an autoscaler of that many, at least one, when none is given."""

    concurrency: int = Field(default=1, ge=1, le=10000)
    autoscaler: AutoscalerDefinition = Field(default_factory=AutoscalerDefinition)
    runner_image: str = Field(default="", alias="runnerImage")
    gpu: bool = False
    pod_type: str | None = Field(default=None, alias="podType")
    replicas: int | None = Field(default=None, ge=0, le=1000)

    @model_validator(mode="before")
    @classmethod
    def _replicas_as_autoscaler(cls, data: Any) -> Any:
        count = data.get("replicas") if isinstance(data, dict) else None
        if type(count) is int and "autoscaler" not in data:
            data = {**data, "autoscaler": {"minReplicas": count, "maxReplicas": max(count, 1)}}
        return data


class FunctionOptions(_Dataloop):
    """Per-function settings of a deployed service (unset: the service's, then the defaults)."""

    timeout: float | None = Field(default=None, gt=0, le=172800)
    max_attempts: int | None = Field(default=None, alias="maxAttempts", ge=1, le=100)
    max_concurrency: int | None = Field(default=None, alias="maxConcurrency", ge=1)


class ServiceDefinition(_Dataloop):
    """A service JSON: deploy module ``moduleName`` of package ``packageName`` at
    ``packageRevision`` (a number, or ``"latest"``: the newest at deploy time, then pinned),
    with ``initParams`` for the module's class, its ``runtime``, and ``triggers`` (Dataloop
    trigger JSON whose ``function`` names a function of the module).
    ``executionTimeout`` and ``maxAttempts`` apply to every function unless ``functions``
    says otherwise for one."""

    _document: ClassVar[str] = "service"

    name: str = Field(pattern=DEPLOYED_NAME, max_length=100)
    package_name: str = Field(alias="packageName", pattern=_PACKAGE_NAME, max_length=100)
    package_revision: int | Literal["latest"] = Field(default="latest", alias="packageRevision")
    module_name: str | None = Field(default=None, alias="moduleName")
    init_params: dict[str, Any] = Field(default_factory=dict, alias="initParams")
    runtime: RuntimeDefinition = Field(default_factory=RuntimeDefinition)
    execution_timeout: float | None = Field(default=None, alias="executionTimeout", gt=0, le=172800)
    max_attempts: int | None = Field(default=None, alias="maxAttempts", ge=1, le=100)
    functions: dict[str, FunctionOptions] = Field(default_factory=dict)
    triggers: tuple[dict[str, Any], ...] = ()

    @field_validator("package_revision")
    @classmethod
    def _positive(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("a revision is a number from 1, or 'latest'")
        return value


class Deployment(_Frozen):
    """One version of a deployed service: the service JSON as deployed, with the package
    revision it pinned. Each deploy of a service makes the next version (1, 2, 3...)."""

    name: str
    version: int
    package: str
    revision: int
    module: str
    definition: ServiceDefinition
    created_at: datetime
