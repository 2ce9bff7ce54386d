"""The embedded default store: one sqlite file (or memory) through aiosqlite, WAL, group commit.

WAL with ``synchronous=NORMAL`` keeps every commit across a crash of the engine process (kill -9
included); a power cut may lose the last few commits. ``synchronous=FULL`` trades speed for that.

Checkpoints (copying the WAL back into the database file, with its fsyncs) run on a connection
and a thread of their own, not inside the writer's commits as sqlite does by default: a commit
that happened to checkpoint took ten milliseconds instead of one, and everything waiting for it
(a second's cron firings, say) waited that much longer.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar, cast

import aiosqlite
import anyio
import anyio.to_thread
from anyio.abc import TaskGroup, TaskStatus
from pydantic import Field, TypeAdapter

from .._json import dumps as _dumps
from .._json import loads
from ..errors import EngineClosedError
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
from ._writer import Batch, GroupCommitStore, next_revision, next_version
from .abc import ALL, CommitListener
from .migrations import MIGRATIONS

__all__ = ["SqliteStore"]

T = TypeVar("T")

_COLUMNS = (
    "id, function, service, status, input, max_attempts, attempts, failed_attempts, result, "
    "error, progress, status_log, logs, parent_id, created_at, started_at, finished_at, "
    "trigger_id, event, lineage, result_view_kind, result_view, engine_id"
)
_NCOLS = 23
_UPDATE = (
    "ON CONFLICT (id) DO UPDATE SET status=excluded.status, max_attempts=excluded.max_attempts, "
    "attempts=excluded.attempts, failed_attempts=excluded.failed_attempts, "
    "result=excluded.result, result_view_kind=excluded.result_view_kind, "
    "result_view=excluded.result_view, error=excluded.error, progress=excluded.progress, "
    "status_log=excluded.status_log, logs=excluded.logs, started_at=excluded.started_at, "
    "finished_at=excluded.finished_at, engine_id=excluded.engine_id"
)
_ROW_PARAMS = "(" + ", ".join("?" * _NCOLS) + ")"
# A statement of many rows is one trip through sqlite for all of them, which one statement bound
# again for each row is not: about a tenth slower alone, and far slower beside a busy event
# loop, as the connection's thread gives up the GIL at every step and waits to get it back
# (a commit of 256 emitted events' rows, about 1 KB each, went through the one-row statement).
# But sqlite keeps a prepared statement with the values last bound to it, and the connection
# caches a statement per row count: with large inputs that kept hundreds of MB alive. So a
# commit's rows go in statements of many rows that each bind at most _SMALL_BINDING bytes (the
# cache then holds at most _CACHED_STATEMENTS times that); a row larger than that goes alone.
_ROWS_PER_STATEMENT = 32766 // _NCOLS  # sqlite allows 32766 parameters in a statement
_SMALL_BINDING = 64 * 1024
_CACHED_STATEMENTS = 128
_BIG_COLUMNS = (4, 8, 11, 12, 18, 21)  # input, result, status_log, logs, event, result_view
_FIRES_PER_STATEMENT = 32766 // 4
# The writer's statements hold a commit's rows in one statement each, not one per row (as
# ``executemany`` would): the connection's thread gives up the GIL at every step of a
# statement, and while the event loop is busy each step waits up to the interpreter's switch
# interval (5 ms) to get it back. A commit of 300 firings took 5 to 15 ms of such waits.
_TRIGGER_UPSERT = (
    "INSERT INTO triggers (id, name, spec, created_at, stats, cursor) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (id) DO UPDATE SET name=excluded.name, spec=excluded.spec, "
    "stats=excluded.stats, cursor=excluded.cursor"
)

# Rows written between two checkpoints (about as many WAL pages as sqlite's own default of
# 1,000), and the WAL size past which the writer itself checkpoints and restarts it: a
# checkpoint on the side cannot restart a WAL that commits keep appending to.
_ROWS_PER_CHECKPOINT = 2000
_WAL_RESTART_PAGES = 16_000
_SPEC: TypeAdapter[EventTriggerSpec | CronTriggerSpec] = TypeAdapter(
    Annotated[EventTriggerSpec | CronTriggerSpec, Field(discriminator="type")]
)


@functools.lru_cache(maxsize=_CACHED_STATEMENTS)
def _upsert(rows: int) -> str:
    values = ", ".join([_ROW_PARAMS] * rows)
    return f"INSERT INTO executions ({_COLUMNS}) VALUES {values} {_UPDATE}"


def _bound_size(row: tuple[Any, ...]) -> int:
    return sum(len(row[i]) for i in _BIG_COLUMNS if row[i] is not None)


def _statements_of(rows: list[tuple[Any, ...]]) -> list[list[tuple[Any, ...]]]:
    """The rows, in order, cut into statements of many rows that each bind at most
    _SMALL_BINDING bytes of large values (a row larger than that alone)."""
    statements: list[list[tuple[Any, ...]]] = []
    chunk: list[tuple[Any, ...]] = []
    bound = 0
    for row in rows:
        size = _bound_size(row)
        if chunk and (bound + size > _SMALL_BINDING or len(chunk) == _ROWS_PER_STATEMENT):
            statements.append(chunk)
            chunk, bound = [], 0
        chunk.append(row)
        bound += size
    if chunk:
        statements.append(chunk)
    return statements


@contextlib.contextmanager
def _sync_transaction(connection: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT on the connection's thread; rolled back by any error."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def _upsert_executions(connection: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    """Write execution rows: in the transaction if one is begun, else in one of their own
    (every row whole either way)."""
    statements = _statements_of(rows)
    alone = len(statements) > 1 and not connection.in_transaction
    with _sync_transaction(connection) if alone else contextlib.nullcontext():
        for chunk in statements:
            connection.execute(_upsert(len(chunk)), [v for row in chunk for v in row])


@functools.lru_cache(maxsize=1024)
def _lineage_text(lineage: tuple[str, ...]) -> str:
    return _dumps(lineage)  # the same few chains of triggers, over and over


def _row(record: ExecutionRecord) -> tuple[Any, ...]:
    # Made for every write of an execution, on the event loop: each part as cheap as it can be
    # (``_value_`` is the enum's own attribute, a quarter of what the ``value`` property costs).
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
        None if record.error is None else _dumps(record.error),
        record.progress,
        _dumps(record.status_log),
        _dumps(record.logs) if record.logs else "[]",
        record.parent_id,
        record.created_at,
        record.started_at,
        record.finished_at,
        record.trigger_id,
        None if record.event is None else _dumps(record.event),
        _lineage_text(record.lineage) if record.lineage else None,
        *(record.result_view or (None, None)),
        record.engine_id,
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
        result_view=(row[20], row[21]) if row[20] is not None else None,
        engine_id=row[22],
    )


def _trigger_stats(trigger: TriggerRecord) -> str:
    return _dumps(  # "fired" has a column of its own, raised by the commits that fire
        {
            "suppressed": trigger.suppressed,
            "last_suppressed_reason": trigger.last_suppressed_reason,
            "last_suppressed_at": trigger.last_suppressed_at,
            "missed": trigger.missed,
            "last_missed_at": trigger.last_missed_at,
        }
    )


def _trigger_row(trigger: TriggerRecord) -> tuple[Any, ...]:
    return (
        trigger.id,
        trigger.spec.name,
        trigger.spec.model_dump_json(),
        trigger.created_at,
        _trigger_stats(trigger),
        trigger.cursor,
    )


def _trigger_state_row(trigger: TriggerRecord) -> tuple[Any, ...]:
    return (_trigger_stats(trigger), trigger.cursor, trigger.id)


def _write_batch(connection: sqlite3.Connection, batch: Batch) -> set[str]:
    """Write a group commit; the ids of executions refused by their once key. Runs on the
    connection's thread."""
    if batch.simple:
        # A row holds a whole execution: a crash between two statements leaves every row
        # whole (waiters hear of them after the last one).
        _upsert_executions(connection, [row for _, row in batch.executions])
        return set()
    # Fire records, the executions they allow, and trigger rows: one transaction.
    with _sync_transaction(connection):
        refused = _insert_fires(connection, batch.once)
        _upsert_executions(connection, [r for eid, r in batch.executions if eid not in refused])
        if batch.triggers:
            connection.executemany(_TRIGGER_UPSERT, batch.triggers)
        if batch.trigger_states or batch.fired:
            _update_triggers(connection, batch.trigger_states, batch.fired, refused)
        for trigger_id in batch.deleted_triggers:
            connection.execute("DELETE FROM triggers WHERE id = ?", (trigger_id,))
    return refused


# A few trigger rows are one plain UPDATE each; more, one UPDATE ... FROM VALUES (whose own
# cost, about 40 us, pays off past a handful of rows, and saves a GIL round trip per row).
_FEW_TRIGGER_ROWS = 8
_TRIGGER_ROW_UPDATE = (
    "UPDATE triggers SET stats = IIF(?1, ?2, stats), cursor = IIF(?1, ?3, cursor), "
    "fired = fired + ?4 WHERE id = ?5"
)


def _update_triggers(
    connection: sqlite3.Connection,
    states: list[Any],
    fired: dict[str, str],
    refused: set[str],
) -> None:
    """Trigger states (stats and cursor) and firing counts in one statement, so a cron
    trigger that fired and moved its cursor has its row written once, not twice: a thousand
    triggers due each second made two thousand row writes a second."""
    counts = Counter(t for execution_id, t in fired.items() if execution_id not in refused)
    rows = [(1, stats, cursor, counts.pop(t, 0), t) for stats, cursor, t in states]
    rows += [(0, None, None, count, trigger_id) for trigger_id, count in counts.items()]
    if len(rows) <= _FEW_TRIGGER_ROWS:
        connection.executemany(_TRIGGER_ROW_UPDATE, rows)
        return
    per_statement = 32766 // 5
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        connection.execute(
            "WITH v(s, stats, cursor, n, id) AS (VALUES "
            + ", ".join(["(?, ?, ?, ?, ?)"] * len(chunk))
            + ") UPDATE triggers SET stats = IIF(v.s, v.stats, triggers.stats), "
            "cursor = IIF(v.s, v.cursor, triggers.cursor), fired = triggers.fired + v.n "
            "FROM v WHERE triggers.id = v.id",
            [value for row in chunk for value in row],
        )


def _insert_fires(connection: sqlite3.Connection, once: dict[str, tuple[str, str]]) -> set[str]:
    """Insert fire records; the executions whose key was already there are refused.

    A fire record seldom exists already, so the count of rows inserted tells that each one
    was: only a statement that inserted fewer reads back which executions hold the keys."""
    if not once:
        return set()
    now = time.time()
    items = list(once.items())
    refused: set[str] = set()
    for start in range(0, len(items), _FIRES_PER_STATEMENT):
        chunk = items[start : start + _FIRES_PER_STATEMENT]
        values = ", ".join(["(?, ?, ?, ?)"] * len(chunk))
        params = [v for eid, (tid, key) in chunk for v in (tid, key, eid, now)]
        cursor = connection.execute(
            f"INSERT INTO fires (trigger_id, key, execution_id, fired_at) VALUES {values} "
            "ON CONFLICT DO NOTHING",
            params,
        )
        if cursor.rowcount != len(chunk):
            refused |= _refused_fires(connection, chunk)
    return refused


def _refused_fires(
    connection: sqlite3.Connection, chunk: list[tuple[str, tuple[str, str]]]
) -> set[str]:
    """The executions of ``chunk`` whose fire record holds another execution."""
    holders: dict[tuple[str, str], str] = {}
    for start in range(0, len(chunk), 32766 // 2):
        part = chunk[start : start + 32766 // 2]
        rows = connection.execute(
            "WITH k(trigger_id, key) AS (VALUES "
            + ", ".join(["(?, ?)"] * len(part))
            + ") SELECT fires.trigger_id, fires.key, fires.execution_id FROM fires "
            "JOIN k ON fires.key = k.key AND fires.trigger_id = k.trigger_id",
            [v for _, (tid, key) in part for v in (tid, key)],
        ).fetchall()
        holders.update(((tid, key), eid) for tid, key, eid in rows)
    return {eid for eid, key in chunk if holders.get(key) != eid}


def _where(query: ExecutionQuery) -> tuple[str, list[Any]]:
    """The WHERE clause (empty if it selects everything) and its parameters."""
    clauses: list[str] = []
    params: list[Any] = []
    function = query.function
    if function is not None and "@" in function:
        clauses.append("function = ?")
        params.append(function)
    elif function is not None:
        # The function and its pinned revisions (name@1, name@2...): ':' follows the digits.
        clauses.append("(function = ? OR function BETWEEN ? AND ?)")
        params.extend((function, f"{function}@0", f"{function}@:"))
    if query.statuses is not None:
        clauses.append(f"status IN ({', '.join('?' * len(query.statuses))})")
        params.extend(sorted(s.value for s in query.statuses))
    for clause, value in (
        ("id < ?", query.before),
        ("trigger_id = ?", query.trigger_id),
        ("created_at >= ?", query.created_after),
        ("created_at < ?", query.created_before),
    ):
        if value is not None:
            clauses.append(clause)
            params.append(value)
    return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), params


def _limit(query: ExecutionQuery) -> str:
    return "" if query.limit is None else f" LIMIT {int(query.limit)}"


def _make_private_file(path: Path) -> None:
    """The database file, made readable by its owner alone if it is new: it holds every
    input, result and log. sqlite gives its -wal and -shm files the mode of this file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)


class SqliteStore(GroupCommitStore):
    """Executions in a sqlite file; ``":memory:"`` keeps them in memory for the engine's life."""

    def __init__(self, path: str | Path = ":memory:") -> None:
        super().__init__()
        self.path = str(path)
        self._db: aiosqlite.Connection | None = None
        self._rows_since_checkpoint = 0
        self._checkpoint_due = anyio.Event()
        self._checkpointing = False

    @property
    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise EngineClosedError("the sqlite store is not open")
        return self._db

    async def _open(self) -> None:
        if self.path != ":memory:":
            await anyio.to_thread.run_sync(_make_private_file, Path(self.path))
        db = await aiosqlite.connect(
            self.path, isolation_level=None, cached_statements=_CACHED_STATEMENTS
        )
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=NORMAL")
        if self.path != ":memory:":
            await db.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer's job
        await db.execute("PRAGMA busy_timeout=5000")
        (version,) = await (await db.execute("PRAGMA user_version")).fetchone() or (0,)
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            await db.executescript(f"BEGIN;\n{script}\nPRAGMA user_version={number};\nCOMMIT;")
        self._db = db

    async def start(self, task_group: TaskGroup, listener: CommitListener | None = None) -> None:
        await super().start(task_group, listener)
        if self.path != ":memory:":
            self._checkpointing = True
            await task_group.start(self._run_checkpointer, name="store-checkpointer")

    async def aclose(self) -> None:
        self._checkpointing = False
        self._checkpoint_due.set()
        await super().aclose()

    async def _run_checkpointer(self, *, task_status: TaskStatus[None]) -> None:
        db = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            await db.execute("PRAGMA busy_timeout=5000")
            task_status.started()
            while self._checkpointing:
                await self._checkpoint_due.wait()
                self._checkpoint_due = anyio.Event()
                if not self._checkpointing:
                    break
                # PASSIVE: copies what it can without waiting for, or blocking, the writer.
                (result,) = await db.execute_fetchall("PRAGMA wal_checkpoint(PASSIVE)")
                _, wal_pages, _ = result
                if wal_pages > _WAL_RESTART_PAGES:
                    try:
                        await self._exclusive(self._restart_wal)
                    except EngineClosedError:
                        break
        finally:
            with anyio.CancelScope(shield=True):
                await db.close()

    async def _restart_wal(self) -> None:
        await self._conn.execute_fetchall("PRAGMA wal_checkpoint(RESTART)")

    def _written(self, rows: int) -> None:
        self._rows_since_checkpoint += rows
        if self._rows_since_checkpoint >= _ROWS_PER_CHECKPOINT:
            self._rows_since_checkpoint = 0
            self._checkpoint_due.set()

    async def _close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    def _snapshot(self, record: ExecutionRecord) -> tuple[Any, ...]:
        return _row(record)

    def _snapshot_trigger(self, trigger: TriggerRecord) -> tuple[Any, ...]:
        return _trigger_row(trigger)

    def _snapshot_trigger_state(self, trigger: TriggerRecord) -> tuple[Any, ...]:
        return _trigger_state_row(trigger)

    def _trigger_id_of(self, snapshot: Any) -> str:
        row: tuple[Any, ...] = snapshot  # whole: (id, name, ...); state: (stats, cursor, id)
        return str(row[0] if len(row) == 6 else row[2])

    async def _write(self, batch: Batch) -> set[str]:
        self._written(len(batch.executions) + len(batch.triggers) + len(batch.trigger_states))
        return await self._in_connection_thread(functools.partial(_write_batch, batch=batch))

    async def _in_connection_thread(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` with the sqlite3 connection on the connection's own thread: a whole
        transaction in one trip there and back, not one per statement. Each trip waits for
        the event loop to take its answer, and a busy loop (a thousand firings being
        dispatched) made a five-statement commit several times slower than its statements.
        aiosqlite has no public call for this; ``_execute`` is how its own methods queue work
        on that thread (the tests cover it for every version the project allows).

        Reads fetch all their rows in one call (``execute_fetchall``): a cursor left part-read
        keeps its statement open until the event loop's thread drops it, which could be in
        the middle of a transaction running here."""
        connection = self._conn
        return cast(T, await connection._execute(work, connection._conn))  # type: ignore[no-untyped-call]

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        db = self._conn
        await db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            await db.execute("ROLLBACK")
            raise
        await db.execute("COMMIT")

    async def list_triggers(self) -> list[TriggerRecord]:
        rows = await self._conn.execute_fetchall(
            "SELECT id, spec, created_at, stats, cursor, fired FROM triggers "
            "ORDER BY created_at, id"
        )
        triggers = []
        for trigger_id, spec, created_at, stats, position, fired in rows:
            numbers = loads(stats)
            numbers["fired"] = fired
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
        rows = await self._conn.execute_fetchall(
            f"SELECT {_COLUMNS} FROM executions WHERE id = ?", (execution_id,)
        )
        return _record(next(iter(rows))) if rows else None

    async def list_ids(self, query: ExecutionQuery) -> list[str]:
        where, params = _where(query)
        rows = await self._conn.execute_fetchall(
            f"SELECT id FROM executions {where} ORDER BY id DESC{_limit(query)}", params
        )
        return [row[0] for row in rows]

    async def find(self, query: ExecutionQuery) -> list[ExecutionRecord]:
        where, params = _where(query)
        rows = await self._conn.execute_fetchall(
            f"SELECT {_COLUMNS} FROM executions {where} ORDER BY id{_limit(query)}", params
        )
        return [_record(row) for row in rows]

    # -- packages and deployed services --------------------------------------------------

    async def add_package_revision(
        self, package: PackageDefinition, codebase: bytes | None, created_at: float
    ) -> PackageRevision:
        async def write() -> PackageRevision:
            async with self._transaction() as db:
                cursor = await db.execute(
                    "SELECT revision, codebase_sha256, codebase_size FROM package_revisions "
                    "WHERE name = ? ORDER BY revision DESC LIMIT 1",
                    (package.name,),
                )
                latest = await cursor.fetchone()
                revision = next_revision(
                    package, tuple(latest) if latest else None, codebase, created_at
                )
                if codebase is not None:
                    await db.execute(
                        "INSERT INTO codebases (sha256, data) VALUES (?, ?) ON CONFLICT DO NOTHING",
                        (revision.codebase_sha256, codebase),
                    )
                await db.execute(
                    "INSERT INTO package_revisions (name, revision, package, codebase_sha256, "
                    "codebase_size, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        package.name,
                        revision.revision,
                        package.model_dump_json(by_alias=True),
                        revision.codebase_sha256,
                        revision.codebase_size,
                        created_at,
                    ),
                )
            return revision

        return await self._exclusive(write)

    async def package_revisions(self, name: str) -> list[PackageRevision]:
        rows = await self._conn.execute_fetchall(
            "SELECT revision, package, codebase_sha256, codebase_size, created_at "
            "FROM package_revisions WHERE name = ? ORDER BY revision",
            (name,),
        )
        return [
            PackageRevision(
                name=name,
                revision=revision,
                package=PackageDefinition.model_validate_json(package),
                codebase_sha256=sha256,
                codebase_size=size,
                created_at=datetime.fromtimestamp(created_at, UTC),
            )
            for revision, package, sha256, size, created_at in rows
        ]

    async def package_names(self) -> list[str]:
        rows = await self._conn.execute_fetchall(
            "SELECT DISTINCT name FROM package_revisions ORDER BY name"
        )
        return [row[0] for row in rows]

    async def codebase(self, sha256: str) -> bytes | None:
        rows = await self._conn.execute_fetchall(
            "SELECT data FROM codebases WHERE sha256 = ?", (sha256,)
        )
        return bytes(next(iter(rows))[0]) if rows else None

    async def add_service_version(
        self, definition: ServiceDefinition, module: str, revision: int, created_at: float
    ) -> Deployment:
        async def write() -> Deployment:
            async with self._transaction() as db:
                cursor = await db.execute(
                    "SELECT COALESCE(MAX(version), 0) FROM service_versions WHERE name = ?",
                    (definition.name,),
                )
                (last,) = await cursor.fetchone() or (0,)
                deployment = next_version(definition, module, revision, last, created_at)
                await db.execute(
                    "INSERT INTO service_versions (name, version, package, revision, module, "
                    "definition, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        deployment.name,
                        deployment.version,
                        deployment.package,
                        revision,
                        module,
                        deployment.definition.model_dump_json(by_alias=True),
                        created_at,
                    ),
                )
                await db.execute(
                    "INSERT INTO services (name, active) VALUES (?, 1) ON CONFLICT DO NOTHING",
                    (definition.name,),
                )
            return deployment

        return await self._exclusive(write)

    async def service_versions(self, name: str | None = None) -> list[Deployment]:
        where, params = ("WHERE name = ?", (name,)) if name is not None else ("", ())
        rows = await self._conn.execute_fetchall(
            "SELECT name, version, package, revision, module, definition, created_at "
            f"FROM service_versions {where} ORDER BY name, version",
            params,
        )
        return [
            Deployment(
                name=row[0],
                version=row[1],
                package=row[2],
                revision=row[3],
                module=row[4],
                definition=ServiceDefinition.model_validate_json(row[5]),
                created_at=datetime.fromtimestamp(row[6], UTC),
            )
            for row in rows
        ]

    async def set_service_active(self, name: str, active: bool) -> None:
        async def write() -> None:
            async with self._transaction() as db:
                await db.execute(
                    "INSERT INTO services (name, active) VALUES (?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET active = excluded.active",
                    (name, int(active)),
                )

        await self._exclusive(write)

    async def inactive_services(self) -> set[str]:
        rows = await self._conn.execute_fetchall("SELECT name FROM services WHERE active = 0")
        return {row[0] for row in rows}

    async def count_by_status(self, query: ExecutionQuery = ALL) -> dict[ExecutionStatus, int]:
        where, params = _where(query.replace(limit=None))
        rows = await self._conn.execute_fetchall(
            f"SELECT status, COUNT(*) FROM executions {where} GROUP BY status", params
        )
        counts = dict.fromkeys(ExecutionStatus, 0)
        for status, count in rows:
            counts[ExecutionStatus(status)] = count
        return counts
