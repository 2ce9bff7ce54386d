"""The daemon on a PostgreSQL store: ``triggerfish serve --store postgresql://...``."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import anyio
import asyncpg
import pytest

from triggerfish import ExecutionStatus
from triggerfish.sdk.remote import Client

from .helpers import APP, ROOT, Daemon, base_env, start_daemon

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


def _in_thread(work: Callable[[], Daemon]) -> tuple[threading.Thread, list[Daemon]]:
    got: list[Daemon] = []
    thread = threading.Thread(target=lambda: got.append(work()), daemon=True)
    thread.start()
    return thread, got


async def test_a_standby_daemon_serves_once_the_active_one_is_killed_and_finishes_its_work(
    postgres_dsn: str, tmp_path: Path
) -> None:
    store = ("--store", postgres_dsn)
    active = start_daemon(tmp_path / "a", extra_args=store)
    standby: Daemon | None = None
    try:
        async with Client(active.url, active.key) as client:
            slow = client.function("slow")
            ids = [await slow.start(1.0, i) for i in range(12)]
        thread, got = _in_thread(lambda: start_daemon(tmp_path / "b", extra_args=store, timeout=90))
        waiting = tmp_path / "b" / "daemon-0.stderr"
        with anyio.fail_after(60):
            while "store_standby" not in (waiting.read_text() if waiting.exists() else ""):
                await anyio.sleep(0.05)
        await anyio.sleep(0.5)
        assert thread.is_alive() and "serving on" not in waiting.read_text()
        connection = await asyncpg.connect(postgres_dsn)
        try:
            pending = [
                row[0]
                for row in await connection.fetch(
                    "SELECT id FROM executions WHERE status = 'PENDING'"
                )
            ]
        finally:
            await connection.close()
        active.kill()  # kill -9: its connection ends, and the standby's wait with it
        thread.join(timeout=90)
        (standby,) = got
        async with Client(standby.url, standby.key) as client:
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
        # Those still queued when the first one died can only have run on the standby (one
        # of them may have begun on the first in the instant before the kill).
        assert pending and any(
            ended[ids.index(i)].status is ExecutionStatus.SUCCEEDED for i in pending
        )
    finally:
        active.kill()
        if standby is not None:
            assert standby.stop() == 0


def test_a_standby_daemon_stops_at_sigterm_while_it_waits(
    postgres_dsn: str, tmp_path: Path
) -> None:
    active = start_daemon(tmp_path / "a", extra_args=("--store", postgres_dsn))
    stderr = tmp_path / "standby.stderr"
    try:
        with stderr.open("wb") as sink:
            standby = subprocess.Popen(
                [
                    *(sys.executable, "-m", "triggerfish", "serve"),
                    *("--data-dir", str(tmp_path / "b"), "--port", "0"),
                    *("--app", APP, "--store", postgres_dsn),
                ],
                cwd=ROOT,
                env=base_env(tmp_path / "credentials.json"),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=sink,
            )
        deadline = time.monotonic() + 30
        while "store_standby" not in stderr.read_text():
            assert standby.poll() is None, stderr.read_text()
            assert time.monotonic() < deadline, "the second daemon never said it waits"
            time.sleep(0.05)
        standby.send_signal(signal.SIGTERM)
        assert standby.wait(timeout=30) == 0, stderr.read_text()
        assert "serving on" not in stderr.read_text()
    finally:
        assert active.stop() == 0
