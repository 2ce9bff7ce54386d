"""The embedded default store: one sqlite file (or memory) through aiosqlite, WAL, group commit.

WAL with ``synchronous=NORMAL`` keeps every commit across a crash of the engine process (kill -9
included); a power cut may lose the last few commits. ``synchronous=FULL`` trades speed for that.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Collection
from pathlib import Path
from typing import Annotated, Any

import aiosqlite
from pydantic import Field, TypeAdapter

from .._json import dumps as _dumps
from .._json import loads
from ..errors import EngineClosedError
from ..models import (
    CronTriggerSpec,
    EventTriggerSpec,
    ExecutionRecord,
    ExecutionStatus,
    TriggerRecord,
)
from ._writer import Batch, GroupCommitStore
from .migrations import MIGRATIONS

__all__ = ["SqliteStore"]

_COLUMNS = (
    "id, function, service, status, input, max_attempts, attempts, failed_attempts, result, "
    "error, progress, status_log, logs, parent_id, created_at, started_at, finished_at, "
    "trigger_id, event, lineage"
)
_NCOLS = 20
_UPDATE = (
    "ON CONFLICT (id) DO UPDATE SET status=excluded.status, max_attempts=excluded.max_attempts, "
    "attempts=excluded.attempts, failed_attempts=excluded.failed_attempts, "
    "result=excluded.result, error=excluded.error, progress=excluded.progress, "
    "status_log=excluded.status_log, logs=excluded.logs, started_at=excluded.started_at, "
    "finished_at=excluded.finished_at"
)
_ROW_PARAMS = "(" + ", ".join("?" * _NCOLS) + ")"
# One statement is one implicit transaction and one trip to aiosqlite's thread: about a third
# of BEGIN + executemany + COMMIT. sqlite allows 32766 parameters in a statement.
_ROWS_PER_STATEMENT = 32766 // _NCOLS
_FIRES_PER_STATEMENT = 32766 // 4
_TRIGGER_UPSERT = (
    "INSERT INTO triggers (id, name, spec, created_at, stats, cursor) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (id) DO UPDATE SET name=excluded.name, spec=excluded.spec, "
    "stats=excluded.stats, cursor=excluded.cursor"
)
_SPEC: TypeAdapter[EventTriggerSpec | CronTriggerSpec] = TypeAdapter(
    Annotated[EventTriggerSpec | CronTriggerSpec, Field(discriminator="type")]
)


@functools.lru_cache(maxsize=64)
def _upsert(rows: int) -> str:
    values = ", ".join([_ROW_PARAMS] * rows)
    return f"INSERT INTO executions ({_COLUMNS}) VALUES {values} {_UPDATE}"


def _row(record: ExecutionRecord) -> tuple[Any, ...]:
    return (
        record.id,
        record.function,
        record.service,
        record.status.value,
        record.input,
        record.max_attempts,
        record.attempts,
        record.failed_attempts,
        record.result,
        None if record.error is None else _dumps(record.error),
        record.progress,
        _dumps(record.status_log),
        _dumps(record.logs),
        record.parent_id,
        record.created_at,
        record.started_at,
        record.finished_at,
        record.trigger_id,
        None if record.event is None else _dumps(record.event),
        _dumps(record.lineage) if record.lineage else None,
    )


def _record(row: Any) -> ExecutionRecord:
    error = loads(row[9]) if row[9] is not None else None
    return ExecutionRecord(
        id=row[0],
        function=row[1],
        service=row[2],
        status=ExecutionStatus(row[3]),
        input=row[4],
        max_attempts=row[5],
        attempts=row[6],
        failed_attempts=row[7],
        result=row[8],
        error=(error[0], error[1], error[2]) if error is not None else None,
        progress=row[10],
        status_log=[(t, ExecutionStatus(s), p, m) for t, s, p, m in loads(row[11])],
        logs=[(t, s, x) for t, s, x in loads(row[12])],
        parent_id=row[13],
        created_at=row[14],
        started_at=row[15],
        finished_at=row[16],
        trigger_id=row[17],
        event=loads(row[18]) if row[18] is not None else None,
        lineage=tuple(loads(row[19])) if row[19] is not None else (),
    )


def _trigger_row(trigger: TriggerRecord) -> tuple[Any, ...]:
    stats = {
        "fired": trigger.fired,
        "suppressed": trigger.suppressed,
        "last_suppressed_reason": trigger.last_suppressed_reason,
        "last_suppressed_at": trigger.last_suppressed_at,
        "missed": trigger.missed,
        "last_missed_at": trigger.last_missed_at,
    }
    return (
        trigger.id,
        trigger.spec.name,
        trigger.spec.model_dump_json(),
        trigger.created_at,
        _dumps(stats),
        trigger.cursor,
    )


def _where(
    function: str | None, statuses: Collection[ExecutionStatus] | None
) -> tuple[list[str], list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if function is not None:
        clauses.append("function = ?")
        params.append(function)
    if statuses is not None:
        clauses.append(f"status IN ({', '.join('?' * len(statuses))})")
        params.extend(ExecutionStatus(s).value for s in statuses)
    return clauses, params


class SqliteStore(GroupCommitStore):
    """Executions in a sqlite file; ``":memory:"`` keeps them in memory for the engine's life."""

    def __init__(self, path: str | Path = ":memory:") -> None:
        super().__init__()
        self.path = str(path)
        self._db: aiosqlite.Connection | None = None

    @property
    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise EngineClosedError("the sqlite store is not open")
        return self._db

    async def _open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(self.path, isolation_level=None)
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=NORMAL")
        await db.execute("PRAGMA busy_timeout=5000")
        (version,) = await (await db.execute("PRAGMA user_version")).fetchone() or (0,)
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            await db.executescript(f"BEGIN;\n{script}\nPRAGMA user_version={number};\nCOMMIT;")
        self._db = db

    async def _close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    def _snapshot(self, record: ExecutionRecord) -> tuple[Any, ...]:
        return _row(record)

    def _snapshot_trigger(self, trigger: TriggerRecord) -> tuple[Any, ...]:
        return _trigger_row(trigger)

    async def _write(self, batch: Batch) -> set[str]:
        db = self._conn
        if batch.simple:
            # Each statement commits on its own; a row holds a whole execution, so a crash
            # between two statements leaves every row whole (waiters hear after the last one).
            await self._upsert_executions([row for _, row in batch.executions])
            return set()
        # Fire records, the executions they allow, and trigger rows: one transaction.
        await db.execute("BEGIN IMMEDIATE")
        try:
            refused = await self._insert_fires(batch.once)
            rows = [row for eid, row in batch.executions if eid not in refused]
            await self._upsert_executions(rows)
            if batch.triggers:
                await db.executemany(_TRIGGER_UPSERT, batch.triggers)
            for trigger_id in batch.deleted_triggers:
                await db.execute("DELETE FROM triggers WHERE id = ?", (trigger_id,))
        except BaseException:
            await db.execute("ROLLBACK")
            raise
        await db.execute("COMMIT")
        return refused

    async def _upsert_executions(self, rows: list[Any]) -> None:
        for start in range(0, len(rows), _ROWS_PER_STATEMENT):
            chunk = rows[start : start + _ROWS_PER_STATEMENT]
            await self._conn.execute(_upsert(len(chunk)), [v for row in chunk for v in row])

    async def _insert_fires(self, once: dict[str, tuple[str, str]]) -> set[str]:
        """Insert fire records; the executions whose key was already there are refused."""
        if not once:
            return set()
        now = time.time()
        items = list(once.items())
        accepted: set[str] = set()
        for start in range(0, len(items), _FIRES_PER_STATEMENT):
            chunk = items[start : start + _FIRES_PER_STATEMENT]
            values = ", ".join(["(?, ?, ?, ?)"] * len(chunk))
            params = [v for eid, (tid, key) in chunk for v in (tid, key, eid, now)]
            cursor = await self._conn.execute(
                f"INSERT INTO fires (trigger_id, key, execution_id, fired_at) VALUES {values} "
                "ON CONFLICT DO NOTHING RETURNING execution_id",
                params,
            )
            accepted.update(row[0] for row in await cursor.fetchall())
        return {eid for eid in once if eid not in accepted}

    async def list_triggers(self) -> list[TriggerRecord]:
        cursor = await self._conn.execute(
            "SELECT id, spec, created_at, stats, cursor FROM triggers ORDER BY created_at, id"
        )
        triggers = []
        for trigger_id, spec, created_at, stats, position in await cursor.fetchall():
            numbers = loads(stats)
            triggers.append(
                TriggerRecord(
                    id=trigger_id,
                    spec=_SPEC.validate_json(spec),
                    created_at=created_at,
                    cursor=position,
                    **numbers,
                )
            )
        return triggers

    async def get(self, execution_id: str) -> ExecutionRecord | None:
        cursor = await self._conn.execute(
            f"SELECT {_COLUMNS} FROM executions WHERE id = ?", (execution_id,)
        )
        row = await cursor.fetchone()
        return None if row is None else _record(row)

    async def list_ids(
        self,
        *,
        function: str | None = None,
        statuses: Collection[ExecutionStatus] | None = None,
        before: str | None = None,
        limit: int = 50,
        trigger_id: str | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
    ) -> list[str]:
        clauses, params = _where(function, statuses)
        for clause, value in (
            ("id < ?", before),
            ("trigger_id = ?", trigger_id),
            ("created_at >= ?", created_after),
            ("created_at < ?", created_before),
        ):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        cursor = await self._conn.execute(
            f"SELECT id FROM executions {where} ORDER BY id DESC LIMIT ?", (*params, limit)
        )
        return [row[0] for row in await cursor.fetchall()]

    async def find(
        self, *, function: str | None = None, statuses: Collection[ExecutionStatus] | None = None
    ) -> list[ExecutionRecord]:
        clauses, params = _where(function, statuses)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        cursor = await self._conn.execute(
            f"SELECT {_COLUMNS} FROM executions {where} ORDER BY id", params
        )
        return [_record(row) for row in await cursor.fetchall()]

    async def count_by_status(self, *, function: str | None = None) -> dict[ExecutionStatus, int]:
        clauses, params = _where(function, None)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        cursor = await self._conn.execute(
            f"SELECT status, COUNT(*) FROM executions {where} GROUP BY status", params
        )
        counts = dict.fromkeys(ExecutionStatus, 0)
        for status, count in await cursor.fetchall():
            counts[ExecutionStatus(status)] = count
        return counts
