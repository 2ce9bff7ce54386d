"""Rows as the SQL stores keep them: an execution as a tuple of its columns and back, a
trigger's row and state, and a query as a WHERE clause. sqlite and PostgreSQL hold the same
columns with the same values, so one conversion serves both."""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import Field, TypeAdapter

from .._json import dumps, loads
from ..models import (
    CronTriggerSpec,
    Deployment,
    EventTriggerSpec,
    ExecutionQuery,
    ExecutionRecord,
    ExecutionStatus,
    PackageDefinition,
    PackageRevision,
    ServiceDefinition,
    TriggerRecord,
)

#: The columns of an execution's row, in the order of ``execution_row``.
COLUMNS = (
    "id, function, service, status, input, max_attempts, attempts, failed_attempts, result, "
    "error, progress, status_log, logs, parent_id, created_at, started_at, finished_at, "
    "trigger_id, event, lineage, result_view_kind, result_view, engine_id"
)
NCOLS = 23
#: The columns a later write of a stored execution changes (the rest are set at creation).
CHANGING = (
    "status",
    "max_attempts",
    "attempts",
    "failed_attempts",
    "result",
    "result_view_kind",
    "result_view",
    "error",
    "progress",
    "status_log",
    "logs",
    "started_at",
    "finished_at",
    "engine_id",
)
#: The indexes of the columns that may be large: input, result, status_log, logs, event and
#: result_view.
BIG_COLUMNS = (4, 8, 11, 12, 18, 21)

SPEC: TypeAdapter[EventTriggerSpec | CronTriggerSpec] = TypeAdapter(
    Annotated[EventTriggerSpec | CronTriggerSpec, Field(discriminator="type")]
)


@functools.lru_cache(maxsize=1024)
def _lineage_text(lineage: tuple[str, ...]) -> str:
    return dumps(lineage)  # the same few chains of triggers, over and over


def execution_row(record: ExecutionRecord) -> tuple[Any, ...]:
    """The execution's row. Made for every write of an execution, on the event loop: each
    part as cheap as it can be (``_value_`` is the enum's own attribute, a quarter of what
    the ``value`` property costs)."""
    return (
        record.id,
        record.function,
        record.service,
        record.status._value_,
        record.input,
        record.max_attempts,
        record.attempts,
        record.failed_attempts,
        record.result,
        None if record.error is None else dumps(record.error),
        record.progress,
        dumps(record.status_log),
        dumps(record.logs) if record.logs else "[]",
        record.parent_id,
        record.created_at,
        record.started_at,
        record.finished_at,
        record.trigger_id,
        None if record.event is None else dumps(record.event),
        _lineage_text(record.lineage) if record.lineage else None,
        *(record.result_view or (None, None)),
        record.engine_id,
    )


def execution_from(values: Any) -> ExecutionRecord:
    """The execution a row (its columns in the order of ``COLUMNS``) holds."""
    error = loads(values[9]) if values[9] is not None else None
    return ExecutionRecord(
        id=values[0],
        function=values[1],
        service=values[2],
        status=ExecutionStatus(values[3]),
        input=values[4],
        max_attempts=values[5],
        attempts=values[6],
        failed_attempts=values[7],
        result=values[8],
        error=(error[0], error[1], error[2]) if error is not None else None,
        progress=values[10],
        status_log=[(t, ExecutionStatus(s), p, m) for t, s, p, m in loads(values[11])],
        logs=[(t, s, x) for t, s, x in loads(values[12])],
        parent_id=values[13],
        created_at=values[14],
        started_at=values[15],
        finished_at=values[16],
        trigger_id=values[17],
        event=loads(values[18]) if values[18] is not None else None,
        lineage=tuple(loads(values[19])) if values[19] is not None else (),
        result_view=(values[20], values[21]) if values[20] is not None else None,
        engine_id=values[22],
    )


def trigger_stats(trigger: TriggerRecord) -> str:
    return dumps(  # "fired" has a column of its own, raised by the commits that fire
        {
            "suppressed": trigger.suppressed,
            "last_suppressed_reason": trigger.last_suppressed_reason,
            "last_suppressed_at": trigger.last_suppressed_at,
            "missed": trigger.missed,
            "last_missed_at": trigger.last_missed_at,
        }
    )


def trigger_row(trigger: TriggerRecord) -> tuple[Any, ...]:
    """A trigger's whole row: (id, name, spec, created_at, stats, cursor)."""
    return (
        trigger.id,
        trigger.spec.name,
        trigger.spec.model_dump_json(),
        trigger.created_at,
        trigger_stats(trigger),
        trigger.cursor,
    )


def trigger_state_row(trigger: TriggerRecord) -> tuple[Any, ...]:
    """What changes of a trigger whose spec is written: (stats, cursor, id)."""
    return (trigger_stats(trigger), trigger.cursor, trigger.id)


def trigger_id_of(snapshot: tuple[Any, ...]) -> str:
    """The id of the trigger a whole row or a state row belongs to."""
    return str(snapshot[0] if len(snapshot) == 6 else snapshot[2])


def trigger_from(
    trigger_id: str, spec: str, created_at: float, stats: str, cursor: float | None, fired: int
) -> TriggerRecord:
    """The trigger a row holds."""
    numbers = loads(stats)
    numbers["fired"] = fired
    return TriggerRecord(
        id=trigger_id,
        spec=SPEC.validate_json(spec),
        created_at=created_at,
        cursor=cursor,
        **numbers,
    )


def revision_from(name: str, values: Any) -> PackageRevision:
    """A package revision from its row: (revision, package, codebase_sha256, codebase_size,
    created_at)."""
    revision, package, sha256, size, created_at = values
    return PackageRevision(
        name=name,
        revision=revision,
        package=PackageDefinition.model_validate_json(package),
        codebase_sha256=sha256,
        codebase_size=size,
        created_at=datetime.fromtimestamp(created_at, UTC),
    )


def deployment_from(values: Any) -> Deployment:
    """A service version from its row: (name, version, package, revision, module, definition,
    created_at)."""
    return Deployment(
        name=values[0],
        version=values[1],
        package=values[2],
        revision=values[3],
        module=values[4],
        definition=ServiceDefinition.model_validate_json(values[5]),
        created_at=datetime.fromtimestamp(values[6], UTC),
    )


def where_clause(query: ExecutionQuery) -> tuple[str, list[Any]]:
    """The WHERE clause (empty if it selects everything, ``?`` placeholders) and its
    parameters."""
    clauses: list[str] = []
    params: list[Any] = []

    def bind(value: Any) -> str:
        params.append(value)
        return "?"

    function = query.function
    if function is not None and "@" in function:
        clauses.append(f"function = {bind(function)}")
    elif function is not None:
        # The function and its pinned revisions (name@1, name@2...): ':' follows the digits.
        clauses.append(
            f"(function = {bind(function)} OR function BETWEEN {bind(f'{function}@0')} "
            f"AND {bind(f'{function}@:')})"
        )
    if query.statuses is not None:
        marks = ", ".join(bind(s) for s in sorted(s.value for s in query.statuses))
        clauses.append(f"status IN ({marks})")
    for column, value in (
        ("id <", query.before),
        ("trigger_id =", query.trigger_id),
        ("created_at >=", query.created_after),
        ("created_at <", query.created_before),
    ):
        if value is not None:
            clauses.append(f"{column} {bind(value)}")
    return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), params


def limit_clause(query: ExecutionQuery) -> str:
    return "" if query.limit is None else f" LIMIT {int(query.limit)}"
