"""Engines on a PostgreSQL database: who runs, their heartbeat leases, who leads the cron
clock, and the adoption of the work of engines that are gone.

Every engine on a database runs: each keeps a row in ``engines``, renewed every third of its
lease on the server's clock (``clock_timestamp()``) and removed when it stops, and holds a
lock of its own (``lock_key`` in its row, from a sequence) for as long as its writer's
connection lives: what tells a running engine from a gone one, on the server, without trusting
any clock. The connection's end frees the lock: at a stop, at kill -9 (the server sees the
socket close), or when a machine goes silent (TCP keepalives set from the lease).

The work of an engine whose lock is free, or that has no row, is adopted by the next engine
that looks (``adopt_gone``, ``ADOPT_WAITING``, ``ADOPT_RUNNING``): in one transaction it
takes each gone engine's lock for itself, removes its row, puts its PENDING executions in the
shared queue (store/sharing.py) and makes its RUNNING ones its own (that attempt is lost). A
gone engine that comes back finds its row gone and writes nothing more (``reclaim``,
``renew``). Every execution row names its owner (``engine_id``), and a row's owner is the only
engine whose writes change it while it is unfinished.

One engine at a time leads the cron clock: it holds ``CRON_LOCK`` on a connection of its own,
and the others wait for that lock on the server (no polling), so the next one leads the moment
the leader's connection ends.
"""

from __future__ import annotations

import math
import os
import socket
from dataclasses import dataclass
from typing import Any

import anyio

__all__ = [
    "ADOPT_RUNNING",
    "ADOPT_WAITING",
    "CRON_LOCK",
    "LAPSED",
    "RUN_ELSEWHERE",
    "Member",
    "adopt_gone",
    "join",
    "keepalives",
    "leave",
    "reclaim",
    "renew",
]

#: The step of the schema that holds the engines' rows (see postgres.MIGRATIONS).
SCHEMA = """
    CREATE TABLE engines (
        id TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        started_at DOUBLE PRECISION NOT NULL,
        renewed_at DOUBLE PRECISION NOT NULL,
        lease DOUBLE PRECISION NOT NULL
    );
"""
#: The step that gives each engine a lock of its own (see the module's docstring).
SCHEMA_OWNERS = """
    ALTER TABLE engines ADD COLUMN lock_key BIGINT;
    CREATE SEQUENCE engine_locks;
    CREATE INDEX executions_unfinished ON executions (engine_id)
        WHERE status IN ('PENDING', 'RUNNING', 'CANCELLING');
"""
_NOW = "extract(epoch FROM clock_timestamp())"
#: Held, on a connection of its own, by the engine that leads the cron clock.
CRON_LOCK = 0x7472_6967_6765_7263  # "trigger" "c"
#: The engines' own locks are this plus a number of the sequence ``engine_locks``: as a lock
#: of one 64-bit key, shown in pg_locks as classid (its high half) and objid (its low half).
_OWN_LOCKS = 0x7472_6967_0000_0000
_HELD = (
    "SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    f"AND l.classid::int8 = {_OWN_LOCKS >> 32} AND l.objid::int8 = e.lock_key - {_OWN_LOCKS} "
    "AND l.objsubid = 1"
)
#: Whether any engine but $1 is gone: its lock is free (its work waits to be adopted).
LAPSED = f"SELECT EXISTS (SELECT 1 FROM engines e WHERE e.id <> $1 AND NOT EXISTS ({_HELD}))"
#: The functions that the running engines but $1 run.
RUN_ELSEWHERE = (
    f"SELECT DISTINCT unnest(e.functions) FROM engines e WHERE e.id <> $1 AND EXISTS ({_HELD})"
)
#: Run after ``adopt_gone``, in its transaction: the PENDING executions of engines that are
#: gone go to the shared queue (their functions are returned, to be told on Channel.WORK).
ADOPT_WAITING = (
    "UPDATE executions SET engine_id = NULL WHERE status = 'PENDING' AND engine_id IS NOT NULL "
    "AND engine_id NOT IN (SELECT id FROM engines) RETURNING function"
)
#: And their RUNNING and CANCELLING ones are made $1's (the caller adds what it returns).
ADOPT_RUNNING = (
    "UPDATE executions SET engine_id = $1 WHERE status IN ('RUNNING', 'CANCELLING') AND "
    "(engine_id IS NULL OR engine_id NOT IN (SELECT id FROM engines))"
)


@dataclass(frozen=True, slots=True)
class Member:
    """An engine as its row tells of it."""

    id: str
    host: str
    pid: int
    lease: float

    @classmethod
    def here(cls, member_id: str, lease: float) -> Member:
        return cls(member_id, socket.gethostname(), os.getpid(), lease)


async def join(connection: Any, member: Member) -> int:
    """Register ``member`` and take its own lock on ``connection``; the lock's key."""
    key = _OWN_LOCKS + int(await connection.fetchval("SELECT nextval('engine_locks')"))
    await connection.execute("SELECT pg_advisory_lock($1)", key)
    await connection.execute(
        "INSERT INTO engines (id, host, pid, started_at, renewed_at, lease, lock_key) "
        f"VALUES ($1, $2, $3, {_NOW}, {_NOW}, $4, $5)",
        member.id,
        member.host,
        member.pid,
        member.lease,
        key,
    )
    return key


async def adopt_gone(connection: Any, member: Member) -> list[str]:
    """In a transaction on ``connection``: the engines other than ``member`` that are gone
    (their lock free), each one's lock taken until the transaction ends and its row removed,
    so that it cannot come back while its executions are adopted (see ``ADOPT``)."""
    gone = []
    for engine_id, key in await connection.fetch(
        "SELECT id, lock_key FROM engines WHERE id <> $1", member.id
    ):
        if key is None or await connection.fetchval("SELECT pg_try_advisory_xact_lock($1)", key):
            gone.append(engine_id)
    if gone:
        await connection.execute("DELETE FROM engines WHERE id = ANY($1::text[])", gone)
    return gone


async def reclaim(connection: Any, lost_backend: int | None, member: Member, key: int) -> bool:
    """On a writer's new connection: take the engine's own lock again; False if its work was
    adopted meanwhile (its row was removed by the adopter). The lost connection's own server
    process may hold the lock still, until the server notices that its client is gone: it is
    ended, and the lock taken once it is free."""
    if not await _take_again(connection, lost_backend, key):
        return False
    return bool(await connection.fetchval("SELECT 1 FROM engines WHERE id = $1", member.id))


async def _take_again(connection: Any, lost_backend: int | None, lock: int) -> bool:
    for _ in range(40):  # the server frees it within milliseconds of ending its holder
        if await connection.fetchval("SELECT pg_try_advisory_lock($1)", lock):
            return True
        holder = await connection.fetchval(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND classid::int8 = $1 AND objid::int8 = $2 AND objsubid = 1",
            lock >> 32,
            lock & 0xFFFF_FFFF,
        )
        if holder is None:
            continue  # freed between the two statements
        if holder != lost_backend:
            return False
        await connection.execute("SELECT pg_terminate_backend($1)", holder)
        await anyio.sleep(0.05)
    return False


def keepalives(lease: float) -> dict[str, str]:
    """Server settings for a connection that holds a lock: the server drops it (and frees
    the lock) within about ``lease`` seconds of its machine going silent."""
    idle = max(1, math.ceil(lease / 2))
    count = max(1, math.ceil(lease / 4))
    return {
        "tcp_keepalives_idle": str(idle),
        "tcp_keepalives_interval": "1",
        "tcp_keepalives_count": str(count),
    }


async def renew(connection: Any, member: Member) -> bool:
    """Renew ``member``'s lease; False if its row is gone (another engine adopted its work)."""
    renewed = await connection.fetchval(
        f"UPDATE engines SET renewed_at = {_NOW} WHERE id = $1 RETURNING 1", member.id
    )
    return renewed is not None


async def leave(connection: Any, member: Member) -> None:
    """Remove ``member``'s row: its lease ends now."""
    await connection.execute("DELETE FROM engines WHERE id = $1", member.id)
