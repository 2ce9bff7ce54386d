"""The daemon on a PostgreSQL store: ``triggerfish serve --store postgresql://...``."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import asyncpg
import pytest

from triggerfish.sdk.remote import Client

from .helpers import start_daemon

pytestmark = pytest.mark.anyio


async def test_the_daemon_keeps_its_executions_on_postgresql_and_never_shows_the_password(
    postgres_dsn: str, tmp_path: Path
) -> None:
    daemon = start_daemon(tmp_path, extra_args=("--store", postgres_dsn))
    try:
        async with Client(daemon.url, daemon.key) as client:
            add = client.function("add")
            execution_id = await add.start(40, b=2)
            assert await add.await_result(execution_id, timeout=20) == 42
    finally:
        daemon.stop()
    printed = daemon.stderr_path.read_text()
    parts = urllib.parse.urlsplit(postgres_dsn)
    assert f"(store {parts.username}@{parts.hostname}:{parts.port}" in printed
    assert parts.password and parts.password not in printed
    connection = await asyncpg.connect(postgres_dsn)
    try:
        status = await connection.fetchval(
            "SELECT status FROM executions WHERE id = $1", execution_id
        )
    finally:
        await connection.close()
    assert status == "SUCCEEDED"
