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
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar, cast

import aiosqlite
import anyio
import anyio.to_thread
from anyio.abc import TaskGroup, TaskStatus

from ..errors import ConfigurationError, EngineClosedError
from ._writer import Batch
from .abc import CommitListener
from .migrations import MIGRATIONS
from .rows import (
    BIG_COLUMNS,
    CHANGING,
    COLUMNS,
    NCOLS,
)
from .sql import Direct, SqlStore

__all__ = ["SqliteStore"]

T = TypeVar("T")

_UPDATE = "ON CONFLICT (id) DO UPDATE SET " + ", ".join(f"{c}=excluded.{c}" for c in CHANGING)
_ROW_PARAMS = "(" + ", ".join("?" * NCOLS) + ")"
# A statement of many rows is one trip through sqlite for all of them, which one statement bound
# again for each row is not: about a tenth slower alone, and far slower beside a busy event
# loop, as the connection's thread gives up the GIL at every step and waits to get it back
# (a commit of 256 emitted events' rows, about 1 KB each, went through the one-row statement).
# But sqlite keeps a prepared statement with the values last bound to it, and the connection
# caches a statement per row count: with large inputs that kept hundreds of MB alive. So a
# commit's rows go in statements of many rows that each bind at most _SMALL_BINDING bytes (the
# cache then holds at most _CACHED_STATEMENTS times that); a row larger than that goes alone.
_ROWS_PER_STATEMENT = 32766 // NCOLS  # sqlite allows 32766 parameters in a statement
_SMALL_BINDING = 64 * 1024
_CACHED_STATEMENTS = 128
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


@functools.lru_cache(maxsize=_CACHED_STATEMENTS)
def _upsert(rows: int) -> str:
    values = ", ".join([_ROW_PARAMS] * rows)
    return f"INSERT INTO executions ({COLUMNS}) VALUES {values} {_UPDATE}"


def _bound_size(row: tuple[Any, ...]) -> int:
    return sum(len(row[i]) for i in BIG_COLUMNS if row[i] is not None)


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


def _make_private_file(path: Path) -> None:
    """The database file, made readable by its owner alone if it is new: it holds every
    input, result and log. sqlite gives its -wal and -shm files the mode of this file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)


class _Direct:
    """A direct write's statements on the store's connection (see SqlStore)."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def fetch_one(self, sql: str, *params: Any) -> Sequence[Any] | None:
        cursor = await self._db.execute(sql, params)
        row = await cursor.fetchone()
        await cursor.close()
        return None if row is None else tuple(row)

    async def run(self, sql: str, *params: Any) -> None:
        await self._db.execute(sql, params)


class SqliteStore(SqlStore):
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
        if version > len(MIGRATIONS):
            await db.close()
            raise ConfigurationError(
                f"the sqlite file {self.path} has schema version {version}, newer than this "
                f"triggerfish knows ({len(MIGRATIONS)}): upgrade triggerfish"
            )
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

    async def _read(self, sql: str, *params: Any) -> list[Sequence[Any]]:
        return list(await self._conn.execute_fetchall(sql, params))

    @asynccontextmanager
    async def _direct(self) -> AsyncIterator[Direct]:
        db = self._conn
        await db.execute("BEGIN IMMEDIATE")
        try:
            yield _Direct(db)
        except BaseException:
            await db.execute("ROLLBACK")
            raise
        await db.execute("COMMIT")
