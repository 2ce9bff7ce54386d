"""Engines on a PostgreSQL database: which one is active, and its heartbeat lease.

One engine at a time is active on a database: it holds a session advisory lock
(``ACTIVE_LOCK``) on its writer's connection for as long as it runs. Another engine started on
the same database is a standby: it waits for the lock on the server (no polling) and takes
over, recovering what was left unfinished as at a restart, the moment the lock is free: at a
stop, or when the active engine's connection ends (kill -9 closes it at once; a machine that
is gone is noticed by TCP keepalives, within the lease). A writer that loses its connection
takes the lock again on the new one; if another engine has it by then, this one was taken
over from, and it writes nothing more (``reclaim``).

The active engine keeps a row in ``engines``, renewed every third of its lease on the
server's clock (``clock_timestamp()``) and removed when it stops: who is active, shown to a
standby while it waits. Rows other than the active engine's are of engines that are gone.
"""

from __future__ import annotations

import math
import os
import socket
from dataclasses import dataclass
from typing import Any

import anyio

from ..log import logger

__all__ = ["ACTIVE_LOCK", "Member", "become_active", "keepalives", "leave", "reclaim", "renew"]

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
_NOW = "extract(epoch FROM clock_timestamp())"
#: Held, for its whole run, by the active engine's writer connection.
ACTIVE_LOCK = 0x7472_6967_6765_7261


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


async def become_active(connection: Any, member: Member, where: str) -> None:
    """Return once ``member`` is the active engine on the database (see the module's
    docstring), registered; while another one is, wait for it, saying so in the log."""
    if not await connection.fetchval("SELECT pg_try_advisory_lock($1)", ACTIVE_LOCK):
        holders = await connection.fetch(
            f"SELECT id, host, pid, {_NOW} - renewed_at FROM engines WHERE id <> $1", member.id
        )
        logger.warning(
            "store_standby",
            server=where,
            active=[
                f"{i} (process {pid} on {host}, renewed {ago:.1f}s ago)"
                for i, host, pid, ago in holders
            ],
        )
        await connection.execute("SELECT pg_advisory_lock($1)", ACTIVE_LOCK)
        logger.warning("store_active", server=where, engine=member.id)
    await connection.execute("DELETE FROM engines WHERE id <> $1", member.id)  # all gone
    await renew(connection, member)


async def reclaim(connection: Any, lost_backend: int | None) -> bool:
    """On a writer's new connection: take the active lock again; False if another engine
    holds it (this one was taken over from). The lost connection's own server process may
    hold it still, until the server notices that its client is gone: it is ended, and the
    lock taken once it is free."""
    for _ in range(40):  # the server frees it within milliseconds of ending its holder
        if await connection.fetchval("SELECT pg_try_advisory_lock($1)", ACTIVE_LOCK):
            return True
        holder = await connection.fetchval(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND classid = $1 AND objid = $2 AND objsubid = 1",
            ACTIVE_LOCK >> 32,
            ACTIVE_LOCK & 0xFFFF_FFFF,
        )
        if holder is None:
            continue  # freed between the two statements
        if holder != lost_backend:
            return False
        await connection.execute("SELECT pg_terminate_backend($1)", holder)
        await anyio.sleep(0.05)
    return False


def keepalives(lease: float) -> dict[str, str]:
    """Server settings for the active engine's connection: the server drops it (and frees
    the lock) within about ``lease`` seconds of its machine going silent."""
    idle = max(1, math.ceil(lease / 2))
    count = max(1, math.ceil(lease / 4))
    return {
        "tcp_keepalives_idle": str(idle),
        "tcp_keepalives_interval": "1",
        "tcp_keepalives_count": str(count),
    }


async def renew(connection: Any, member: Member) -> None:
    """Renew ``member``'s lease (its row is made again if it went)."""
    await connection.execute(
        "INSERT INTO engines (id, host, pid, started_at, renewed_at, lease) "
        f"VALUES ($1, $2, $3, {_NOW}, {_NOW}, $4) ON CONFLICT (id) DO UPDATE SET "
        "renewed_at = excluded.renewed_at",
        member.id,
        member.host,
        member.pid,
        member.lease,
    )


async def leave(connection: Any, member: Member) -> None:
    """Remove ``member``'s row: its lease ends now."""
    await connection.execute("DELETE FROM engines WHERE id = $1", member.id)
