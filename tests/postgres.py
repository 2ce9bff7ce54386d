"""A throwaway PostgreSQL server for the tests (``scripts/postgres-up.sh``), started once per
test session and stopped after it, and a new database on it for each test that asks.

``TRIGGERFISH_TEST_POSTGRES`` (a DSN) points the tests at a server of your own instead. Where
no server can be started, the tests that need one skip and say why."""

from __future__ import annotations

import asyncio
import atexit
import functools
import os
import secrets
import subprocess
import tempfile
import urllib.parse
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
VARIABLE = "TRIGGERFISH_TEST_POSTGRES"


@functools.cache
def server() -> tuple[str | None, str | None]:
    """(the DSN of the server's admin database, None) or (None, why there is none)."""
    given = os.environ.get(VARIABLE)
    if given:
        return given, None
    folder = tempfile.mkdtemp(prefix="triggerfish-pg.")
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "postgres-up.sh"), folder],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        subprocess.run(["bash", str(ROOT / "scripts" / "postgres-down.sh"), folder], check=False)
        why = done.stderr.strip().splitlines()
        return None, "no PostgreSQL server could be started: " + " / ".join(why[-3:])
    atexit.register(
        subprocess.run, ["bash", str(ROOT / "scripts" / "postgres-down.sh"), folder], check=False
    )
    return done.stdout.strip().splitlines()[-1], None


def with_database(dsn: str, database: str) -> str:
    parts = urllib.parse.urlsplit(dsn)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{database}"))


def _on_server(admin_dsn: str, statement: str) -> None:
    async def run() -> None:
        connection = await asyncpg.connect(admin_dsn)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(run())


def new_database(admin_dsn: str, prefix: str = "t") -> str:
    """A new, empty database on the server; its DSN."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    _on_server(admin_dsn, f'CREATE DATABASE "{name}"')
    return with_database(admin_dsn, name)


def drop_database(admin_dsn: str, dsn: str) -> None:
    name = urllib.parse.urlsplit(dsn).path.lstrip("/")
    _on_server(admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
