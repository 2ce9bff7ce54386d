"""The daemon on a PostgreSQL store: ``triggerfish serve --store postgresql://...``."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import anyio
import asyncpg
import pytest

from triggerfish import ExecutionStatus
from triggerfish.sdk.remote import Client

from .helpers import Daemon, start_daemon

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


async def test_two_daemons_share_the_work_and_one_finishes_what_a_killed_one_left(
    postgres_dsn: str, tmp_path: Path
) -> None:
    """Two daemons on one database, behind no load balancer: what is started through one
    runs on both; when one is killed (kill -9), the other finishes its work."""
    store = ("--store", postgres_dsn)
    first = start_daemon(tmp_path / "a", extra_args=store)
    second: Daemon | None = None
    try:
        second = start_daemon(tmp_path / "b", extra_args=store)
        async with Client(first.url, first.key) as client:
            slow = client.function("slow")
            ids = await slow.start_many([((0.3, i), {}) for i in range(80)])
        connection = await asyncpg.connect(postgres_dsn)
        try:
            with anyio.fail_after(60):  # both run some: a commit tells which engine runs one
                while True:
                    owners = await connection.fetch(
                        "SELECT DISTINCT engine_id FROM executions WHERE status = 'SUCCEEDED'"
                    )
                    if len(owners) == 2:
                        break
                    await anyio.sleep(0.05)
        finally:
            await connection.close()
        first.kill()  # kill -9: the second adopts what it held
        async with Client(second.url, second.key) as client:
            slow = client.function("slow")
            await slow.wait_for_completion(timeout=60)
            ended = [await slow.get(i) for i in ids]
        # None is lost: each succeeded on one of the two, or lost its only attempt as the
        # first one died while it ran (at least once, one attempt each here).
        for i, execution in enumerate(ended):
            if execution.status is ExecutionStatus.SUCCEEDED:
                assert execution.result == i
            else:
                assert execution.error is not None, execution
                assert execution.error.type == "EngineStoppedError", execution
        assert sum(e.status is ExecutionStatus.SUCCEEDED for e in ended) >= 70
    finally:
        first.kill()
        if second is not None:
            assert second.stop() == 0
