"""Engines on a PostgreSQL database, each with a heartbeat lease: the row an engine keeps in
``engines`` while it runs, renewed every third of its lease, removed when it stops.

A row whose lease has lapsed, or whose process is gone from this very machine (an engine
killed with kill -9 and started again at once), belongs to no running engine. Today one
engine runs on a database at a time: another one that holds a live lease is refused at
start, naming it, since recovery at start would put its running work back. Times are the
server's (``clock_timestamp()``), so that engines on machines whose clocks disagree agree on
what has lapsed.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigurationError

__all__ = ["Member", "join", "leave", "renew"]

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
# Held while an engine joins: two engines starting at once see each other's row.
_JOIN_LOCK = 0x7472_6967_6765_7272


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


def _gone(host: str, pid: int) -> bool:
    """Whether the process of a row is known not to run: it was on this machine, and no
    process has its id now (a process of another machine cannot be seen from here)."""
    if host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


async def join(connection: Any, member: Member, where: str) -> None:
    """Register ``member``, in a transaction of its own; ConfigurationError if another
    engine holds a live lease on the database (``where`` names it in the message). Rows of
    engines that are gone are removed."""
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", _JOIN_LOCK)
        rows = await connection.fetch(
            f"SELECT id, host, pid, renewed_at + lease - {_NOW} FROM engines WHERE id <> $1",
            member.id,
        )
        for other_id, host, pid, left in rows:
            if left > 0 and not _gone(host, pid):
                raise ConfigurationError(
                    f"another engine runs on the database at {where}: {other_id} (process "
                    f"{pid} on {host}, its lease ends in {left:.1f}s unless renewed); "
                    "several engines on one database are not supported yet"
                )
        await connection.execute("DELETE FROM engines WHERE id <> $1", member.id)
        await renew(connection, member)


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
