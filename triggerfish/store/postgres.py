"""The store on a PostgreSQL server, through asyncpg: the same contract and group commit as
sqlite, for engines that outgrow one machine's file.

A group commit is one transaction of a few statements whatever its size: every column of the
commit's executions travels as one array, unpacked by ``unnest`` on the server (one round trip,
not one per row). The writer keeps a connection of its own; reads and the rare direct writes
(packages, service versions) take one from a small pool, so a read never waits behind a commit.

One engine at a time is active on a database; others started on it wait as standbys and take
over when it stops or dies (store/leases.py).

The schema is versioned in ``triggerfish_schema``; migrations run in one transaction under an
advisory lock, so engines starting at once apply each step once. A database whose schema is
newer than this triggerfish knows is refused, with both versions.
"""

from __future__ import annotations

import contextlib
import functools
import secrets
import time
import urllib.parse
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar

import anyio
import asyncpg
from anyio.abc import TaskGroup

from ..errors import ConfigurationError, EngineClosedError, StoreUnavailableError
from ..log import logger
from ..models import TERMINAL_STATUSES, UNFINISHED_STATUSES, ExecutionRecord
from . import leases
from ._writer import Batch
from .abc import CommitListener
from .dsn import describe_dsn
from .rows import (
    CHANGING,
    COLUMNS,
    execution_from,
)
from .sql import Direct, SqlStore

__all__ = ["PostgresStore"]

T = TypeVar("T")

#: The schema, as numbered steps (``triggerfish_schema`` records the last one applied). Text
#: that is ordered (ids, names) collates as bytes ("C"), as in sqlite, whatever the database's
#: locale: ``function BETWEEN 'f@0' AND 'f@:'`` must select f's pinned revisions alone.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE executions (
        id TEXT COLLATE "C" PRIMARY KEY,
        function TEXT COLLATE "C" NOT NULL,
        service TEXT NOT NULL,
        status TEXT NOT NULL,
        input BYTEA NOT NULL,
        max_attempts INTEGER NOT NULL,
        attempts INTEGER NOT NULL,
        failed_attempts INTEGER NOT NULL,
        result BYTEA,
        error TEXT,
        progress INTEGER,
        status_log TEXT NOT NULL,
        logs TEXT NOT NULL,
        parent_id TEXT,
        created_at DOUBLE PRECISION NOT NULL,
        started_at DOUBLE PRECISION,
        finished_at DOUBLE PRECISION,
        trigger_id TEXT,
        event TEXT,
        lineage TEXT,
        result_view_kind TEXT,
        result_view TEXT,
        engine_id TEXT
    );
    CREATE INDEX executions_by_function ON executions (function, id);
    CREATE INDEX executions_by_status ON executions (status, function);
    CREATE TABLE fires (
        trigger_id TEXT NOT NULL,
        key TEXT NOT NULL,
        execution_id TEXT NOT NULL,
        fired_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (key, trigger_id)
    );
    CREATE TABLE triggers (
        id TEXT COLLATE "C" PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        spec TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        stats TEXT NOT NULL,
        cursor DOUBLE PRECISION,
        fired BIGINT NOT NULL DEFAULT 0
    );
    CREATE TABLE codebases (
        sha256 TEXT PRIMARY KEY,
        data BYTEA NOT NULL
    );
    CREATE TABLE package_revisions (
        name TEXT COLLATE "C" NOT NULL,
        revision INTEGER NOT NULL,
        package TEXT NOT NULL,
        codebase_sha256 TEXT NOT NULL REFERENCES codebases (sha256),
        codebase_size BIGINT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (name, revision)
    );
    CREATE TABLE service_versions (
        name TEXT COLLATE "C" NOT NULL,
        version INTEGER NOT NULL,
        package TEXT NOT NULL,
        revision INTEGER NOT NULL,
        module TEXT NOT NULL,
        definition TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (name, version)
    );
    CREATE TABLE services (
        name TEXT COLLATE "C" PRIMARY KEY,
        active INTEGER NOT NULL
    );
    """,
    leases.SCHEMA,
    leases.SCHEMA_OWNERS,
)

# Held (for the transaction) by whoever migrates: a second engine starting at once waits, then
# finds the schema current. Any fixed 64-bit number, the same in every engine.
_MIGRATION_LOCK = 0x7472_6967_6765_7266  # "trigger" "f"

# The types of the execution columns, in the order of rows.COLUMNS, for unnest's arrays.
_TYPES = (
    *("text",) * 4,  # id, function, service, status
    *("bytea", "int4", "int4", "int4", "bytea"),  # input, attempts..., result
    *("text", "int4", "text", "text", "text"),  # error, progress, status_log, logs, parent_id
    *("float8",) * 3,  # created_at, started_at, finished_at
    *("text",) * 6,  # trigger_id, event, lineage, result_view_kind, result_view, engine_id
)
_UPSERT = (
    f"INSERT INTO executions ({COLUMNS}) SELECT * FROM unnest("
    + ", ".join(f"${n}::{kind}[]" for n, kind in enumerate(_TYPES, start=1))
    + ") ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{column} = excluded.{column}" for column in CHANGING)
    # An unfinished row changes only by its owner's writes (store/leases.py); a final one may
    # be run again by any engine (a rerun makes it that engine's).
    + " WHERE executions.engine_id IS NOT DISTINCT FROM excluded.engine_id OR executions.status"
    + f" IN ({', '.join(repr(s.value) for s in sorted(TERMINAL_STATUSES))})"
)
_INSERT_FIRES = (
    "INSERT INTO fires (trigger_id, key, execution_id, fired_at) "
    "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[]) "
    "ON CONFLICT DO NOTHING RETURNING execution_id"
)
_FIRE_HOLDERS = (
    "SELECT fires.trigger_id, fires.key, fires.execution_id FROM fires "
    "JOIN unnest($1::text[], $2::text[]) AS k(trigger_id, key) "
    "ON fires.key = k.key AND fires.trigger_id = k.trigger_id"
)
_TRIGGER_UPSERT = (
    "INSERT INTO triggers (id, name, spec, created_at, stats, cursor) "
    "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[], $5::text[], "
    "$6::float8[]) ON CONFLICT (id) DO UPDATE SET name = excluded.name, spec = excluded.spec, "
    "stats = excluded.stats, cursor = excluded.cursor"
)
# A trigger's state (stats and cursor, where ``s``) and its count of firings, for many
# triggers in one statement: a cron trigger that fired and moved its cursor is written once.
_TRIGGER_STATES = (
    "UPDATE triggers SET stats = CASE WHEN v.s THEN v.stats ELSE triggers.stats END, "
    "cursor = CASE WHEN v.s THEN v.cursor ELSE triggers.cursor END, "
    "fired = triggers.fired + v.n "
    "FROM unnest($1::bool[], $2::text[], $3::float8[], $4::int8[], $5::text[]) "
    "AS v(s, stats, cursor, n, id) WHERE triggers.id = v.id"
)

#: The channel on which each commit tells the executions it finished (``finished_notices``).
FINISHED = "triggerfish_finished"
_NOTIFY = f"SELECT pg_notify('{FINISHED}', notice) FROM unnest($1::text[]) AS notice"
_NOTICE_BYTES = 7900  # a notification's payload is below 8000 bytes
_FINAL = frozenset(status.value for status in TERMINAL_STATUSES)

#: What a lost or refused connection raises: retried by reconnecting, never a bad row.
_CONNECTION_ERRORS = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
)


def _columns(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    return [list(column) for column in zip(*rows, strict=True)]


def finished_notices(engine_id: str, execution_ids: Sequence[str]) -> list[str]:
    """The payloads of ``FINISHED`` that tell of ``execution_ids``: the engine's id, then
    the ids, space-separated, each payload within the server's limit."""
    notices: list[str] = []
    notice = engine_id
    for execution_id in execution_ids:
        if len(notice) + 1 + len(execution_id) > _NOTICE_BYTES:
            notices.append(notice)
            notice = engine_id
        notice = f"{notice} {execution_id}"
    if notice != engine_id:
        notices.append(notice)
    return notices


async def _write_batch(
    connection: asyncpg.Connection[Any], batch: Batch, engine_id: str
) -> set[str]:
    """Write a group commit in one transaction; the ids of executions refused by their once
    key. The final statuses it holds are told on ``FINISHED`` (delivered at its commit)."""
    async with connection.transaction():
        refused = await _insert_fires(connection, batch.once) if batch.once else set()
        rows = [row for eid, row in batch.executions if eid not in refused]
        if rows:
            await connection.execute(_UPSERT, *_columns(rows))
            finished = [row[0] for row in rows if row[3] in _FINAL]
            if finished:
                await connection.execute(_NOTIFY, finished_notices(engine_id, finished))
        if batch.triggers:
            await connection.execute(_TRIGGER_UPSERT, *_columns(batch.triggers))
        if batch.trigger_states or batch.fired:
            counts = Counter(t for eid, t in batch.fired.items() if eid not in refused)
            states = [
                (True, stats, cursor, counts.pop(t, 0), t)
                for stats, cursor, t in batch.trigger_states
            ]
            states += [(False, None, None, n, t) for t, n in counts.items()]
            await connection.execute(_TRIGGER_STATES, *_columns(states))
        if batch.deleted_triggers:
            await connection.execute(
                "DELETE FROM triggers WHERE id = ANY($1::text[])", batch.deleted_triggers
            )
    return refused


async def _insert_fires(
    connection: asyncpg.Connection[Any], once: dict[str, tuple[str, str]]
) -> set[str]:
    """Insert fire records; the executions whose key another execution holds are refused
    (one whose record holds it already, written before, is not)."""
    items = list(once.items())
    inserted = await connection.fetch(
        _INSERT_FIRES,
        [tid for _, (tid, _) in items],
        [key for _, (_, key) in items],
        [eid for eid, _ in items],
        [time.time()] * len(items),
    )
    if len(inserted) == len(items):
        return set()
    written = {row[0] for row in inserted}
    others = [(eid, key) for eid, key in items if eid not in written]
    holders = {
        (tid, key): eid
        for tid, key, eid in await connection.fetch(
            _FIRE_HOLDERS, [tid for _, (tid, _) in others], [key for _, (_, key) in others]
        )
    }
    return {eid for eid, key in others if holders.get(key) != eid}


@functools.lru_cache(maxsize=256)
def _numbered(sql: str) -> str:
    """``sql`` with its ``?`` placeholders as PostgreSQL's ``$1``, ``$2``... (the shared
    statements hold no ``?`` of their own)."""
    parts = sql.split("?")
    return "".join(f"{part}${n}" for n, part in enumerate(parts[:-1], start=1)) + parts[-1]


class _Direct:
    """A direct write's statements on a pooled connection in a transaction (see SqlStore)."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection

    async def fetch_one(self, sql: str, *params: Any) -> Sequence[Any] | None:
        row = await self._connection.fetchrow(_numbered(sql), *params)
        return None if row is None else tuple(row)

    async def run(self, sql: str, *params: Any) -> None:
        await self._connection.execute(_numbered(sql), *params)


class PostgresStore(SqlStore):
    """Executions in a PostgreSQL database named by ``dsn``
    (``postgresql://user:password@host:port/database``). ``start`` returns once this engine
    is the active one on the database (a standby waits there); ``lease`` bounds how long a
    silent machine keeps that role, and is renewed every third of it."""

    #: Seconds between attempts to reach a server that went away, doubling up to the last.
    reconnect_delays = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
    #: How long a commit keeps trying to reach the server before it gives up.
    reconnect_for = 30.0

    def __init__(self, dsn: str, *, pool_size: int = 4, lease: float = 10.0) -> None:
        super().__init__()
        if not lease > 0:
            raise ConfigurationError(f"lease must be a positive number of seconds, not {lease!r}")
        self.dsn = dsn
        # This engine's row in ``engines`` while it runs (see leases.py); its id is the
        # engine's (Execution.engine_id).
        self.member = leases.Member.here(secrets.token_hex(6), lease)
        self.engine_id = self.member.id
        self._renewing: anyio.CancelScope | None = None
        self._lock_key = 0  # of this engine's own lock, given at its start
        self._lapsed = anyio.Event()  # set when the lease of another engine was seen lapsed
        self.server = describe_dsn(dsn)  # for messages: no password
        self._pool_size = pool_size
        self._pool: asyncpg.Pool[Any] | None = None
        self._writer: asyncpg.Connection[Any] | None = None
        self._unreachable_since: float | None = None  # when the writer lost the server
        self._fenced = False  # another engine became active while this one was cut off
        self._writer_backend: int | None = None  # the server process of the writer's connection
        self._listening: asyncpg.Connection[Any] | None = None  # hears FINISHED
        self.shared = True

    def __repr__(self) -> str:
        return f"PostgresStore({self.server!r})"

    # -- connections ----------------------------------------------------------------------

    async def _connect(self) -> asyncpg.Connection[Any]:
        try:
            return await self._connect_writer()
        except Exception as exc:
            raise self._unavailable(exc) from None

    async def _connect_writer(self) -> asyncpg.Connection[Any]:
        return await asyncpg.connect(self.dsn, server_settings=leases.keepalives(self.member.lease))

    def _taken_over(self) -> StoreUnavailableError:
        return StoreUnavailableError(
            f"another engine became active on PostgreSQL at {self.server} while this one "
            "was cut off from it: this engine writes nothing more there"
        )

    def _unavailable(self, exc: BaseException) -> StoreUnavailableError:
        why = str(exc) or type(exc).__name__
        if self.dsn and ":" in self.dsn:  # never echo a password, whatever the driver says
            password = urllib.parse.urlsplit(self.dsn).password
            if password:
                why = why.replace(password, "***")
        return StoreUnavailableError(f"cannot use PostgreSQL at {self.server}: {why}")

    async def _open(self) -> None:
        writer = await self._connect()
        try:
            await self._migrate(writer)
            self._lock_key = await leases.become_active(writer, self.member, self.server)
            pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=self._pool_size)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await writer.close()
            raise
        self._writer, self._pool = writer, pool
        self._writer_backend = writer.get_server_pid()
        await self._listen()

    async def _listen(self) -> None:
        """Hear other engines' FINISHED on a connection of its own (it holds nothing, so
        one lost is opened again at the next lease check, telling that some went unheard)."""
        listening = await asyncpg.connect(self.dsn)
        await listening.add_listener(FINISHED, self._heard)
        self._listening = listening

    def _heard(self, connection: Any, pid: int, channel: str, payload: object) -> None:
        if pid == self._writer_backend:  # this engine's own commit: not read at all
            return
        engine_id, *execution_ids = str(payload).split(" ")
        if engine_id != self.member.id and self.finished_elsewhere is not None:
            self.finished_elsewhere(execution_ids)

    async def _listen_again(self) -> None:
        if self._listening is not None and not self._listening.is_closed():
            return
        await self._listen()
        if self.finished_elsewhere is not None:
            self.finished_elsewhere(None)

    async def _migrate(self, connection: asyncpg.Connection[Any]) -> None:
        async with connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await connection.execute(
                "CREATE TABLE IF NOT EXISTS triggerfish_schema (version INTEGER NOT NULL)"
            )
            version = await connection.fetchval("SELECT max(version) FROM triggerfish_schema")
            version = version or 0
            if version > len(MIGRATIONS):
                raise ConfigurationError(
                    f"the database at {self.server} has schema version {version}, newer than "
                    f"this triggerfish knows ({len(MIGRATIONS)}): upgrade triggerfish"
                )
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                await connection.execute(script)
                await connection.execute("INSERT INTO triggerfish_schema VALUES ($1)", number)

    async def start(self, task_group: TaskGroup, listener: CommitListener | None = None) -> None:
        await super().start(task_group, listener)
        self._renewing = anyio.CancelScope()
        task_group.start_soon(self._renew, self._renewing, name="store-lease")

    async def _renew(self, scope: anyio.CancelScope) -> None:
        """Renew the lease every third of it, and look for engines that are gone (``lapsed``
        hears of them); a renewal the server misses is tried at the next (two may fail before
        the lease lapses). A row found gone means another engine adopted this one's work: it
        writes nothing more."""
        with scope:
            while True:
                await anyio.sleep(self.member.lease / 3)
                try:
                    if not await leases.renew(self._reads, self.member):
                        self._fenced = True
                        logger.error("store_taken_over", server=self.server)
                        return
                    if await self._reads.fetchval(leases.LAPSED, self.member.id):
                        self._lapsed.set()
                    await self._listen_again()
                except (*_CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
                    logger.warning("store_lease_not_renewed", server=self.server, error=str(exc))

    async def lapsed(self) -> None:
        await self._lapsed.wait()
        self._lapsed = anyio.Event()

    async def take_unfinished(self) -> list[ExecutionRecord]:
        async with self._reads.acquire() as connection, connection.transaction():
            gone = await leases.adopt_gone(connection, self.member)
            rows = await connection.fetch(
                f"{leases.ADOPT} RETURNING {COLUMNS}",
                self.member.id,
                [status.value for status in UNFINISHED_STATUSES],
            )
        if gone:
            logger.warning("store_engines_gone", server=self.server, engines=gone)
        return sorted(map(execution_from, rows), key=lambda record: record.id)

    async def aclose(self) -> None:
        if self._renewing is not None:
            self._renewing.cancel()
            self._renewing = None
        await super().aclose()

    async def _close(self) -> None:
        writer, pool, listening = self._writer, self._pool, self._listening
        self._writer = self._pool = self._listening = None
        if pool is not None:
            with anyio.CancelScope(shield=True), contextlib.suppress(*_CONNECTION_ERRORS):
                await leases.leave(pool, self.member)
        with anyio.CancelScope(shield=True):
            for connection in (writer, listening):
                if connection is not None:
                    with contextlib.suppress(*_CONNECTION_ERRORS):
                        await connection.close()
            if pool is not None:
                await pool.close()

    @property
    def _reads(self) -> asyncpg.Pool[Any]:
        if self._pool is None:
            raise EngineClosedError("the PostgreSQL store is not open")
        return self._pool

    async def _with_writer(self, work: Callable[[asyncpg.Connection[Any]], Awaitable[T]]) -> T:
        """Run ``work`` on the writer's connection; a connection lost before or during it is
        opened again (with backoff) and ``work`` run again: a transaction cut off by a lost
        connection was rolled back by the server. Once the server has been out of reach for
        ``reconnect_for`` seconds, each call tries once more and then raises, so that the
        commits waiting fail in turn, quickly, and their creators hear of it."""
        delays = iter(self.reconnect_delays)
        while True:
            if self._fenced:
                raise self._taken_over()
            try:
                if self._writer is None or self._writer.is_closed():
                    writer = await self._connect_writer()
                    if not await leases.reclaim(
                        writer, self._writer_backend, self.member, self._lock_key
                    ):
                        self._fenced = True
                        await writer.close()
                        logger.error("store_taken_over", server=self.server)
                        raise self._taken_over()
                    self._writer, self._writer_backend = writer, writer.get_server_pid()
                result = await work(self._writer)
            except StoreUnavailableError:
                raise
            except _CONNECTION_ERRORS as exc:
                if self._writer is not None and not self._writer.is_closed():
                    self._writer.terminate()
                self._writer = None
                if self._unreachable_since is None:
                    self._unreachable_since = anyio.current_time()
                delay = self._next_delay(delays, self._unreachable_since)
                if delay is None:
                    raise self._unavailable(exc) from exc
                logger.warning(
                    "store_reconnecting", server=self.server, error=str(exc), delay=delay
                )
                await anyio.sleep(delay)
            else:
                self._unreachable_since = None
                return result

    # -- the group commit's hooks ---------------------------------------------------------

    async def _write(self, batch: Batch) -> set[str]:
        return await self._with_writer(
            lambda connection: _write_batch(connection, batch, self.member.id)
        )

    def _next_delay(self, delays: Iterator[float], since: float) -> float | None:
        """How long to wait before trying the server again, out of reach ``since``; None
        once that would be past ``reconnect_for``."""
        delay = next(delays, self.reconnect_delays[-1])
        if anyio.current_time() + delay > since + self.reconnect_for:
            return None
        return delay

    async def _read(self, sql: str, *params: Any) -> list[Sequence[Any]]:
        """Every row ``sql`` selects; a connection lost is tried again with backoff, as the
        writer's is (a read changes nothing, so it can always be read again)."""
        delays = iter(self.reconnect_delays)
        since: float | None = None
        while True:
            try:
                return list(await self._reads.fetch(_numbered(sql), *params))
            except _CONNECTION_ERRORS as exc:
                since = anyio.current_time() if since is None else since
                delay = self._next_delay(delays, since)
                if delay is None:
                    raise self._unavailable(exc) from exc
                await anyio.sleep(delay)

    @contextlib.asynccontextmanager
    async def _direct(self) -> AsyncIterator[Direct]:
        try:
            async with self._reads.acquire() as connection, connection.transaction():
                yield _Direct(connection)
        except _CONNECTION_ERRORS as exc:
            raise self._unavailable(exc) from exc

    async def _lock_name(self, db: Direct, kind: int, name: str) -> None:
        await db.run("SELECT pg_advisory_xact_lock(hashtextextended(?, ?))", name, kind)
