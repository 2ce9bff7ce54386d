"""The store on a PostgreSQL server, through asyncpg: the same contract and group commit as
sqlite, for engines that outgrow one machine's file.

A group commit is one transaction of a few statements whatever its size: every column of the
commit's executions travels as one array, unpacked by ``unnest`` on the server (one round trip,
not one per row). The writer keeps a connection of its own; reads and the rare direct writes
(packages, service versions) take one from a small pool, so a read never waits behind a commit.

Several engines may share a database: each owns the executions it runs, work none has room
for waits in a shared queue that any of them claims from, the engines tell each other what
changed on NOTIFY channels, and one of them leads the cron clock (store/leases.py,
store/sharing.py).

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
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator, Sequence
from typing import Any, TypeVar

import anyio
import asyncpg
from anyio.abc import TaskGroup, TaskStatus

from ..errors import ConfigurationError, EngineClosedError, StoreUnavailableError
from ..log import logger
from ..models import TERMINAL_STATUSES, UNFINISHED_STATUSES, ExecutionRecord
from . import leases, sharing
from ._writer import Batch
from .abc import Adopted, Channel, CommitListener, Heard, LeadChanged
from .dsn import describe_dsn
from .leases import CRON_LOCK
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
    sharing.SCHEMA,
    sharing.SCHEMA_FUNCTIONS,
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
_FINAL_LIST = ", ".join(repr(s.value) for s in sorted(TERMINAL_STATUSES))
_UPSERT = (
    f"INSERT INTO executions ({COLUMNS}) SELECT * FROM unnest("
    + ", ".join(f"${n}::{kind}[]" for n, kind in enumerate(_TYPES, start=1))
    + ") ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{column} = excluded.{column}" for column in CHANGING)
    # A row changes only by its owner's writes ($24: the writer's engine), which may give it
    # up to the shared queue; an engine that runs a final one again (a rerun) claims it first
    # (claim_reruns).
    + f" WHERE executions.engine_id = ${len(_TYPES) + 1}"
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
    "stats = excluded.stats, cursor = GREATEST(triggers.cursor, excluded.cursor)"
)
# A trigger's state (stats and cursor, where ``s``) and its count of firings, for many
# triggers in one statement: a cron trigger that fired and moved its cursor is written once.
# A cursor never goes back: an engine that is not the cron clock's leader may write a
# trigger's state from an older copy.
_TRIGGER_STATES = (
    "UPDATE triggers SET stats = CASE WHEN v.s THEN v.stats ELSE triggers.stats END, "
    "cursor = CASE WHEN v.s THEN GREATEST(triggers.cursor, v.cursor) ELSE triggers.cursor END, "
    "fired = triggers.fired + v.n "
    "FROM unnest($1::bool[], $2::text[], $3::float8[], $4::int8[], $5::text[]) "
    "AS v(s, stats, cursor, n, id) WHERE triggers.id = v.id"
)

_NOTIFY = "SELECT pg_notify($1, notice) FROM unnest($2::text[]) AS notice"
_FINAL = frozenset(status.value for status in TERMINAL_STATUSES)
_PENDING = "PENDING"
#: The channels the listening connection hears whatever the engine registered.
_FINISHED, _WORK, _TRIGGERS, _ENGINES = (
    sharing.channel_name(c)
    for c in (Channel.FINISHED, Channel.WORK, Channel.TRIGGERS, Channel.ENGINES)
)

#: What a lost or refused connection raises: retried by reconnecting, never a bad row.
_CONNECTION_ERRORS = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
)


def _columns(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    return [list(column) for column in zip(*rows, strict=True)]


async def _notify(connection: Any, channel: str, engine_id: str, messages: Sequence[str]) -> None:
    """Tell ``messages`` on ``channel`` in the transaction under way (delivered at its commit)."""
    await connection.execute(_NOTIFY, channel, sharing.payloads(engine_id, messages))


async def _write_batch(
    connection: asyncpg.Connection[Any], batch: Batch, engine_id: str
) -> set[str]:
    """Write a group commit in one transaction; the ids of executions refused by their once
    key. What it changes that other engines act on is told in it (delivered at its commit):
    the final statuses (``Channel.FINISHED``), the functions of executions put in the shared
    queue (``WORK``), and the triggers created, changed or deleted (``TRIGGERS``)."""
    async with connection.transaction():
        refused = await _insert_fires(connection, batch.once) if batch.once else set()
        rows = [row for eid, row in batch.executions if eid not in refused]
        if rows:
            await connection.execute(_UPSERT, *_columns(rows), engine_id)
            finished = [row[0] for row in rows if row[3] in _FINAL]
            if finished:
                await _notify(connection, _FINISHED, engine_id, finished)
            shared = {row[1] for row in rows if row[22] is None and row[3] == _PENDING}
            if shared:
                await _notify(connection, _WORK, engine_id, sorted(shared))
        if batch.triggers:
            await connection.execute(_TRIGGER_UPSERT, *_columns(batch.triggers))
        if batch.trigger_states or batch.fired:
            counts = Counter(t for eid, t in batch.fired.items() if eid not in refused)
            states = [
                (True, stats, cursor, counts.pop(t, 0), t)
                for stats, cursor, t in batch.trigger_states
            ]
            states += [(False, None, None, n, t) for t, n in counts.items()]
            if states:  # none when every firing of the commit was refused by its once key
                await connection.execute(_TRIGGER_STATES, *_columns(states))
        if batch.deleted_triggers:
            await connection.execute(
                "DELETE FROM triggers WHERE id = ANY($1::text[])", batch.deleted_triggers
            )
        changed = [row[0] for row in batch.triggers] + batch.deleted_triggers
        if changed:
            await _notify(connection, _TRIGGERS, engine_id, changed)
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
    (``postgresql://user:password@host:port/database``), which several engines may share (see
    the module's docstring). ``lease`` bounds how long the work of an engine whose machine
    went silent waits before another engine adopts it; it is renewed every third of it."""

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
        self._running: anyio.CancelScope | None = None  # the lease's and the teller's tasks
        self._lock_key = 0  # of this engine's own lock, given at its start
        self._lapsed = anyio.Event()  # set when the lease of another engine was seen lapsed
        self.server = describe_dsn(dsn)  # for messages: no password
        self._pool_size = pool_size
        self._pool: asyncpg.Pool[Any] | None = None
        self._writer: asyncpg.Connection[Any] | None = None
        self._unreachable_since: float | None = None  # when the writer lost the server
        self._fenced = False  # another engine adopted this one's work while it was cut off
        self._writer_backend: int | None = None  # the server process of the writer's connection
        # What other engines tell (see Channel), heard on a connection of its own.
        self._listening: asyncpg.Connection[Any] | None = None
        self._handlers: dict[str, list[Heard]] = {}  # by NOTIFY channel
        self._on_demand: set[str] = set()  # channels heard only while asked (hear_now)
        self._asked: set[str] = set()  # of those, the ones asked for now
        # One LISTEN or UNLISTEN at a time on the listening connection, never while it is
        # opened again: it then listens to what is asked when it is done.
        self._listen_lock = anyio.Lock()
        self._telling: list[tuple[str, list[str]]] = []  # (channel, messages) to tell soon
        self._told = anyio.Event()  # set when there is something to tell
        self._leading: asyncpg.Connection[Any] | None = None  # holds the cron clock's lock
        # What the other running engines run (see runs_elsewhere), read again when they say
        # they changed (Channel.ENGINES) and at each lease check.
        self._elsewhere: frozenset[str] = frozenset()
        self._peers_changed: anyio.Event | None = None
        # A claim's answer was lost with its connection: the next claim looks for what this
        # engine owns and may not know of.
        self._claims_unsure = False
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
        """A connection that holds a lock: the server ends it within about a lease of its
        machine going silent (TCP keepalives), freeing the lock."""
        return await asyncpg.connect(self.dsn, server_settings=leases.keepalives(self.member.lease))

    def _taken_over(self) -> StoreUnavailableError:
        return StoreUnavailableError(
            f"another engine adopted this engine's work on PostgreSQL at {self.server} while "
            "this one was cut off from it: this engine writes nothing more there"
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
            self._lock_key = await leases.join(writer, self.member)
            pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=self._pool_size)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await writer.close()
            raise
        self._writer, self._pool = writer, pool
        self._writer_backend = writer.get_server_pid()
        self._handlers.setdefault(_ENGINES, [])  # heard whether the engine listens or not
        try:
            with self._as_unavailable():
                await self._listen()
                await self._read_peers()
        except BaseException:
            await self._close()  # its row, lock and connections: nothing is left behind
            raise

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
        self._running = anyio.CancelScope()
        task_group.start_soon(self._run, self._running, name="store-lease")

    async def _run(self, scope: anyio.CancelScope) -> None:
        with scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._renew, name="store-renew")
                tg.start_soon(self._teller, name="store-teller")
                tg.start_soon(self._follow_peers, name="store-peers")

    async def aclose(self) -> None:
        if self._running is not None:
            self._running.cancel()
            self._running = None
        await super().aclose()

    async def _close(self) -> None:
        writer, pool, listening = self._writer, self._pool, self._listening
        self._writer = self._pool = self._listening = None
        if pool is not None:
            with anyio.CancelScope(shield=True), contextlib.suppress(*_CONNECTION_ERRORS):
                await self._leave(pool)
        with anyio.CancelScope(shield=True):
            for connection in (writer, listening):
                if connection is not None:
                    with contextlib.suppress(*_CONNECTION_ERRORS):
                        await connection.close()
            if pool is not None:
                await pool.close()

    async def _leave(self, pool: asyncpg.Pool[Any]) -> None:
        """Remove this engine's row, and give to the shared queue whatever PENDING work it
        still owns without knowing it (a claim whose answer was lost or cut off as the
        engine stopped); tell the others."""
        async with pool.acquire() as connection, connection.transaction():
            freed = await connection.fetch(
                "UPDATE executions SET engine_id = NULL WHERE engine_id = $1 AND "
                "status = 'PENDING' RETURNING function",
                self.member.id,
            )
            await leases.leave(connection, self.member)
            await _notify(connection, _ENGINES, self.member.id, ["left"])
            if freed:
                await _notify(connection, _WORK, self.member.id, sorted({r[0] for r in freed}))

    @contextlib.contextmanager
    def _as_unavailable(self) -> Iterator[None]:
        """What the server refuses or a lost connection raises, as StoreUnavailableError."""
        try:
            yield
        except (*_CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
            raise self._unavailable(exc) from exc

    @property
    def _reads(self) -> asyncpg.Pool[Any]:
        if self._pool is None:
            raise EngineClosedError("the PostgreSQL store is not open")
        return self._pool

    # -- the lease, and engines that are gone ----------------------------------------------

    async def _renew(self) -> None:
        """Renew the lease every third of it, and look for engines that are gone (``lapsed``
        hears of them); a renewal the server misses is tried at the next (two may fail before
        the lease lapses). A row found gone means another engine adopted this one's work: it
        writes nothing more. The cron clock's lock is checked too: a connection that no
        longer answers gives up the lead (see ``lead``)."""
        while True:
            await anyio.sleep(self.member.lease / 3)
            await self._check_lead()
            try:
                if not await leases.renew(self._reads, self.member):
                    self._fenced = True
                    logger.error("store_taken_over", server=self.server)
                    if self._leading is not None:
                        self._leading.terminate()
                    return
                if await self._reads.fetchval(leases.LAPSED, self.member.id):
                    self._lapsed.set()
                self._peers_stirred()  # an engine that is gone runs nothing any more
                await self._listen_again()
            except (*_CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
                logger.warning("store_lease_not_renewed", server=self.server, error=str(exc))

    async def lapsed(self) -> None:
        await self._lapsed.wait()
        self._lapsed = anyio.Event()

    async def take_unfinished(self) -> Adopted:
        with self._as_unavailable():
            async with self._reads.acquire() as connection, connection.transaction():
                gone = await leases.adopt_gone(connection, self.member)
                waiting = sorted({row[0] for row in await connection.fetch(leases.ADOPT_WAITING)})
                if waiting:  # for the others to claim; this engine claims without being told
                    await _notify(connection, _WORK, self.member.id, waiting)
                if gone:
                    await _notify(connection, _ENGINES, self.member.id, ["gone"])
                rows = await connection.fetch(
                    f"{leases.ADOPT_RUNNING} RETURNING {COLUMNS}, cancel_requested", self.member.id
                )
            if gone:
                logger.warning("store_engines_gone", server=self.server, engines=gone)
            return Adopted(sorted(map(_claimed, rows), key=lambda r: r.id), tuple(gone))

    # -- the shared queue -----------------------------------------------------------------

    async def claim(self, functions: Collection[str], limit: int) -> list[ExecutionRecord]:
        return await self._claim(sharing.CLAIM, self.member.id, list(functions), limit)

    async def claim_ids(self, execution_ids: Collection[str]) -> list[ExecutionRecord]:
        return await self._claim(sharing.CLAIM_IDS, self.member.id, list(execution_ids))

    async def _claim(self, sql: str, *params: Any) -> list[ExecutionRecord]:
        """Run a claim; a lost connection is opened again with backoff, and as the claim may
        have been made without its answer coming back, the executions this engine owns and
        has not run are read with the next (the engine skips those it holds)."""
        delays = iter(self.reconnect_delays)
        since: float | None = None
        while True:
            try:
                async with self._reads.acquire() as connection:
                    rows = list(await connection.fetch(sql, *params))
                    if self._claims_unsure:
                        rows += await connection.fetch(sharing.OWNED_WAITING, self.member.id)
                        self._claims_unsure = False
                break
            except BaseException as exc:  # made, maybe, with no answer (cut off, cancelled)
                self._claims_unsure = True
                if not isinstance(exc, _CONNECTION_ERRORS):
                    raise
                since = anyio.current_time() if since is None else since
                delay = self._next_delay(delays, since)
                if delay is None:
                    raise self._unavailable(exc) from exc
                await anyio.sleep(delay)
        claimed = {row[0]: _claimed(row) for row in rows}
        return sorted(claimed.values(), key=lambda record: record.id)

    async def claim_reruns(self, execution_ids: Collection[str]) -> set[str]:
        with self._as_unavailable():
            rows = await self._reads.fetch(
                "UPDATE executions SET engine_id = $1, status = 'PENDING', "
                "cancel_requested = false WHERE id = ANY($2::text[]) AND "
                "status IN ('FAILED', 'TIMED_OUT') RETURNING id",
                self.member.id,
                list(execution_ids),
            )
        return {row[0] for row in rows}

    async def ask_to_cancel(self, execution_id: str) -> str | None:
        with self._as_unavailable():
            async with self._reads.acquire() as connection, connection.transaction():
                owner = await connection.fetchval(
                    "UPDATE executions SET cancel_requested = true WHERE id = $1 AND "
                    "status = ANY($2::text[]) AND engine_id <> $3 RETURNING engine_id",
                    execution_id,
                    [status.value for status in UNFINISHED_STATUSES],
                    self.member.id,
                )
                if owner is not None:
                    message = f"{owner} {execution_id}"
                    cancel = sharing.channel_name(Channel.CANCEL)
                    await _notify(connection, cancel, self.member.id, [message])
            return owner  # type: ignore[no-any-return]

    async def asked_to_cancel(self) -> list[str]:
        """The executions this engine owns that another engine asked it to cancel: those
        whose ``Channel.CANCEL`` may have gone unheard."""
        rows = await self._read(
            "SELECT id FROM executions WHERE engine_id = ? AND cancel_requested AND "
            "status = ANY(?::text[])",
            self.member.id,
            [status.value for status in UNFINISHED_STATUSES],
        )
        return [row[0] for row in rows]

    # -- what engines tell each other ------------------------------------------------------

    def hear(self, channel: str, handler: Heard, *, on_demand: bool = False) -> None:
        name = sharing.channel_name(channel)
        self._handlers.setdefault(name, []).append(handler)
        if on_demand:
            self._on_demand.add(name)

    async def hear_now(self, channel: str, hearing: bool) -> None:
        name = sharing.channel_name(channel)
        async with self._listen_lock:
            if hearing == (name in self._asked):
                return
            if hearing:
                self._asked.add(name)
            else:
                self._asked.discard(name)
            listening = self._listening
            if listening is None or listening.is_closed():
                return  # listened again, as asked, at the next lease check
            try:
                if hearing:
                    await listening.add_listener(name, self._heard)
                else:
                    await listening.remove_listener(name, self._heard)
            except _CONNECTION_ERRORS as exc:
                listening.terminate()  # opened again, as asked, at the next lease check
                if hearing:  # what was told meanwhile is read again then (handlers hear None)
                    raise self._unavailable(exc) from exc

    async def _listen(self) -> None:
        """Hear the channels the engine listens to on a connection of its own (it holds
        nothing, so one lost is opened again at the next lease check, telling each handler
        that some may have gone unheard)."""
        async with self._listen_lock:
            listening = await asyncpg.connect(self.dsn)
            for channel in self._handlers:
                if channel not in self._on_demand or channel in self._asked:
                    await listening.add_listener(channel, self._heard)
            self._listening = listening

    def _heard(self, connection: Any, pid: int, channel: str, payload: object) -> None:
        if pid == self._writer_backend:  # this engine's own commit: not read at all
            return
        sender, messages = sharing.read_payload(str(payload))
        if sender == self.member.id:
            return
        if channel == _ENGINES:  # its handlers hear of it once it is read (_follow_peers)
            self._peers_stirred()
            return
        for handler in self._handlers.get(channel, ()):
            try:
                handler(messages)
            except Exception:  # a part's bug must not stop the others from hearing it
                logger.exception("store_notice_failed", channel=channel)

    async def _listen_again(self) -> None:
        """Open the listening connection again if it was lost, or no longer answers within a
        third of the lease (a half-open connection would hear nothing, silently)."""
        listening = self._listening
        if listening is not None and not listening.is_closed():
            try:
                async with self._listen_lock:
                    with anyio.fail_after(self.member.lease / 3):
                        await listening.fetchval("SELECT 1")
                return
            except (TimeoutError, *_CONNECTION_ERRORS, asyncpg.PostgresError):
                listening.terminate()
        await self._listen()
        for handlers in self._handlers.values():
            for handler in handlers:
                handler(None)

    # -- what the other engines run ------------------------------------------------------

    def runs_elsewhere(self, function: str) -> bool:
        return function in self._elsewhere

    async def set_functions(self, functions: Collection[str]) -> None:
        with self._as_unavailable():
            async with self._reads.acquire() as connection, connection.transaction():
                await connection.execute(
                    "UPDATE engines SET functions = $2 WHERE id = $1",
                    self.member.id,
                    sorted(functions),
                )
                await _notify(connection, _ENGINES, self.member.id, ["functions"])

    def _peers_stirred(self) -> None:
        if self._peers_changed is not None:
            self._peers_changed.set()

    async def _follow_peers(self) -> None:
        """Read what the other engines run whenever one says it changed, or a lease check
        may have found one gone; tell the engine's handlers when it did change."""
        self._peers_changed = anyio.Event()
        while True:
            await self._peers_changed.wait()
            self._peers_changed = anyio.Event()  # a change told during the read: read again
            before = self._elsewhere
            try:
                await self._read_peers()
            except (*_CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
                logger.warning("store_engines_unread", server=self.server, error=str(exc))
                continue
            if self._elsewhere != before:
                for handler in self._handlers.get(_ENGINES, ()):
                    handler(None)

    async def _read_peers(self) -> None:
        rows = await self._reads.fetch(leases.RUN_ELSEWHERE, self.member.id)
        self._elsewhere = frozenset(row[0] for row in rows)

    def tell(self, channel: str, messages: Sequence[str]) -> None:
        if messages:
            self._telling.append((sharing.channel_name(channel), list(messages)))
            self._told.set()

    async def _teller(self) -> None:
        """Tell what waits to be told, a channel's messages in as few notifications as fit;
        what the server refuses or cannot be reached for is logged and dropped (events for
        subscribers: a subscriber may miss some, never the engine's own work)."""
        while True:
            await self._told.wait()
            self._told = anyio.Event()
            telling, self._telling = self._telling, []
            by_channel: dict[str, list[str]] = {}
            for channel, messages in telling:
                by_channel.setdefault(channel, []).extend(messages)
            for channel, messages in by_channel.items():
                try:
                    await _notify(self._reads, channel, self.member.id, messages)
                except (*_CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
                    logger.warning(
                        "store_tell_failed", channel=channel, messages=len(messages), error=str(exc)
                    )

    async def set_watching(self, kinds: Collection[str]) -> None:
        with self._as_unavailable():
            async with self._reads.acquire() as connection, connection.transaction():
                await connection.execute(
                    "UPDATE engines SET watching = $2 WHERE id = $1", self.member.id, sorted(kinds)
                )
                channel = sharing.channel_name(Channel.WATCHING)
                await _notify(connection, channel, self.member.id, [" ".join(sorted(kinds))])

    async def watched(self) -> set[str]:
        rows = await self._read(
            "SELECT DISTINCT unnest(watching) FROM engines WHERE id <> ?", self.member.id
        )
        return {row[0] for row in rows}

    # -- the cron clock's leader ----------------------------------------------------------

    async def lead(self, changed: LeadChanged, *, task_status: TaskStatus[None]) -> None:
        """Lead the cron clock while a connection of this engine's holds ``CRON_LOCK``;
        wait for the lock on the server while another engine holds it. A connection lost (or
        found silent by ``_check_lead``) gives up the lead, and the lock is waited for
        again; an engine whose work was adopted leads nothing more."""
        told = False
        delays = iter(self.reconnect_delays)
        while not self._fenced:
            connection: asyncpg.Connection[Any] | None = None
            leading = False
            try:
                connection = await self._connect_writer()
                if not await connection.fetchval("SELECT pg_try_advisory_lock($1)", CRON_LOCK):
                    if not told:
                        task_status.started()
                        told = True
                    await connection.execute("SELECT pg_advisory_lock($1)", CRON_LOCK)
                if not await connection.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM engines WHERE id = $1)", self.member.id
                ):
                    self._fenced = True  # adopted while it waited
                    break
                lost = anyio.Event()
                connection.add_termination_listener(lambda _, ended=lost: ended.set())
                self._leading, leading = connection, True
                logger.info("cron_leading", server=self.server, engine=self.member.id)
                await changed(True)
                if not told:
                    task_status.started()
                    told = True
                delays = iter(self.reconnect_delays)
                await lost.wait()
            except _CONNECTION_ERRORS as exc:
                logger.warning("cron_lead_lost", server=self.server, error=str(exc))
            finally:
                self._leading = None
                with anyio.CancelScope(shield=True):
                    if leading:
                        await changed(False)
                    if connection is not None:
                        connection.terminate()  # frees the lock at once
            if not told:
                task_status.started()
                told = True
            await anyio.sleep(next(delays, self.reconnect_delays[-1]))
        if not told:
            task_status.started()
        await anyio.sleep_forever()

    async def _check_lead(self) -> None:
        """Whether the connection that holds the cron clock's lock still answers, within a
        third of the lease; one that does not is ended, which gives up the lead."""
        connection = self._leading
        if connection is None:
            return
        try:
            with anyio.fail_after(self.member.lease / 3):
                await connection.fetchval("SELECT 1")
        except (TimeoutError, *_CONNECTION_ERRORS, asyncpg.PostgresError):
            connection.terminate()

    # -- writing --------------------------------------------------------------------------

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

    async def _tell_in(self, db: Direct, channel: str, messages: Sequence[str]) -> None:
        for payload in sharing.payloads(self.member.id, messages):
            await db.run("SELECT pg_notify(?, ?)", sharing.channel_name(channel), payload)


def _claimed(row: Sequence[Any]) -> ExecutionRecord:
    """An execution from its columns and its ``cancel_requested`` mark."""
    record = execution_from(row)
    record.cancel_requested = bool(row[-1])
    return record
