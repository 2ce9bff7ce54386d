"""When the engine's task group fails, the daemon exits at once and non-zero, never half
alive; a restart on the same data dir loses nothing that was accepted."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import httpx
import pytest

from .helpers import start_daemon, wait_finished

pytestmark = pytest.mark.slow

APP = "tests.daemon.failing_app:setup"


def test_a_failed_engine_takes_the_daemon_down_at_once_under_load(tmp_path: Path) -> None:
    daemon = start_daemon(tmp_path, app=APP)
    try:
        with daemon.http() as http:
            started = http.post(
                "/functions/linger/executions/batch",
                json={"inputs": [{"args": [3]} for _ in range(40)]},
            )
            assert started.status_code == 201, started.text
            accepted = started.json()["execution_ids"]
            http.post("/functions/explode/call", json={}, params={"timeout": 0})
        began = time.monotonic()
        code = daemon.process.wait(timeout=20)
        took = time.monotonic() - began
    finally:
        daemon.kill()
    assert code != 0
    assert took < 10, f"the daemon took {took:.1f} s to exit"
    assert "daemon_engine_failed" in daemon.stderr
    assert "a fault planted in the engine" in daemon.stderr
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{daemon.url}/health", timeout=2)
    # Nothing accepted is lost: the restart runs what was running or queued.
    restarted = start_daemon(tmp_path, app=APP, key=daemon.key)
    try:
        outcomes = [wait_finished(restarted, i, timeout=60) for i in accepted]
        assert all(
            o["status"] == "SUCCEEDED"
            or (o["status"] == "FAILED" and o["error"]["type"] == "EngineStoppedError")
            for o in outcomes
        ), outcomes
        assert restarted.process.poll() is None
    finally:
        restarted.stop()


def test_the_data_dir_is_its_owners_alone(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)  # as an older version left it: narrowed at start
    data_dir.chmod(0o755)
    daemon = start_daemon(tmp_path, data_dir=data_dir)
    try:
        with daemon.http() as http:
            assert http.post("/functions/add/call", json={"args": [1, 2]}).json()["result"] == 3
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
        files = [
            data_dir / "triggerfish.db",
            data_dir / "triggerfish.db-wal",
            data_dir / "api-keys",
        ]
        assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in files} == {
            f.name: 0o600 for f in files
        }
    finally:
        daemon.stop()
