"""The embedded default store: one sqlite file (or memory) through aiosqlite, WAL, group commit.

WAL with ``synchronous=NORMAL`` keeps every commit across a crash of the engine process (kill -9
included); a power cut may lose the last few commits. ``synchronous=FULL`` trades speed for that.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Collection
from pathlib import Path
from typing import Any

import aiosqlite

from ..errors import EngineClosedError
from ..models import ExecutionRecord, ExecutionStatus
from ._writer import GroupCommitStore
from .migrations import MIGRATIONS

__all__ = ["SqliteStore"]

_COLUMNS = (
    "id, function, service, status, input, max_attempts, attempts, failed_attempts, result, "
    "error, progress, status_log, logs, parent_id, created_at, started_at, finished_at"
)
_UPDATE = (
    "ON CONFLICT (id) DO UPDATE SET status=excluded.status, max_attempts=excluded.max_attempts, "
    "attempts=excluded.attempts, failed_attempts=excluded.failed_attempts, "
    "result=excluded.result, error=excluded.error, progress=excluded.progress, "
    "status_log=excluded.status_log, logs=excluded.logs, started_at=excluded.started_at, "
    "finished_at=excluded.finished_at"
)
_ROW_PARAMS = "(" + ", ".join("?" * 17) + ")"
# One statement is one implicit transaction and one trip to aiosqlite's thread: about a third
# of BEGIN + executemany + COMMIT. sqlite allows 32766 parameters in a statement.
_ROWS_PER_STATEMENT = 32766 // 17


@functools.lru_cache(maxsize=64)
def _upsert(rows: int) -> str:
    values = ", ".join([_ROW_PARAMS] * rows)
    return f"INSERT INTO executions ({_COLUMNS}) VALUES {values} {_UPDATE}"


_dumps = json.JSONEncoder(separators=(",", ":")).encode


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
    )


def _record(row: Any) -> ExecutionRecord:
    error = json.loads(row[9]) if row[9] is not None else None
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
        status_log=[(t, ExecutionStatus(s), p, m) for t, s, p, m in json.loads(row[11])],
        logs=[(t, s, x) for t, s, x in json.loads(row[12])],
        parent_id=row[13],
        created_at=row[14],
        started_at=row[15],
        finished_at=row[16],
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

    async def _write(self, snapshots: list[Any]) -> None:
        # Each statement commits on its own; a row holds a whole execution, so a crash between
        # two statements leaves every row whole (the waiters are told only after the last one).
        db = self._conn
        for start in range(0, len(snapshots), _ROWS_PER_STATEMENT):
            chunk = snapshots[start : start + _ROWS_PER_STATEMENT]
            await db.execute(_upsert(len(chunk)), [value for row in chunk for value in row])

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
    ) -> list[str]:
        clauses, params = _where(function, statuses)
        if before is not None:
            clauses.append("id < ?")
            params.append(before)
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
