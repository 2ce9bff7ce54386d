"""Stopping the daemon: SIGTERM drains, kill -9 loses nothing; a restart on the same data dir
runs what was left. The daemon serves ``drain_setup``: ``slow`` with two slots, two attempts."""

from __future__ import annotations

import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from ..integration.helpers import alive
from .helpers import Daemon, poll, start_daemon, wait_finished

pytestmark = pytest.mark.slow
APP = "tests.daemon.daemon_app:drain_setup"


def _start_many(daemon: Daemon, calls: list[list[Any]]) -> list[str]:
    with daemon.http() as http:
        answer = http.post(
            "/functions/slow/executions/batch", json={"inputs": [{"args": a} for a in calls]}
        )
    assert answer.status_code == 201, answer.text
    ids: list[str] = answer.json()["execution_ids"]
    return ids


def _statuses(daemon: Daemon, ids: list[str]) -> dict[str, str]:
    with daemon.http() as http:
        return {i: http.get(f"/executions/{i}").json()["status"] for i in ids}


def _stored(data_dir: Path) -> dict[str, tuple[str, int]]:
    """Status and attempts of every execution, read from the sqlite file itself."""
    with sqlite3.connect(data_dir / "triggerfish.db") as db:
        rows = db.execute("SELECT id, status, attempts FROM executions").fetchall()
    return {row[0]: (row[1], row[2]) for row in rows}


def _replica_pids(daemon: Daemon) -> set[int]:
    return {int(pid) for pid in re.findall(r"pid=(\d+) replica_id=", daemon.stderr)}


def _running(daemon: Daemon, ids: list[str], count: int) -> dict[str, str]:
    def enough() -> dict[str, str] | None:
        statuses = _statuses(daemon, ids)
        return statuses if list(statuses.values()).count("RUNNING") >= count else None

    found: dict[str, str] = poll(enough, 20, f"{count} executions to run")
    return found


def test_sigterm_finishes_running_executions_and_keeps_queued_ones(tmp_path: Path) -> None:
    daemon = start_daemon(tmp_path, app=APP, extra_args=("--drain-timeout", "10"))
    try:
        ids = _start_many(daemon, [[1.0, i] for i in range(6)])
        statuses = _running(daemon, ids, 2)
        running = [i for i, s in statuses.items() if s == "RUNNING"]
        queued = [i for i, s in statuses.items() if s == "PENDING"]
        assert len(running) == 2 and len(queued) == 4, statuses
        stopping = time.monotonic()
        assert daemon.stop(timeout=20) == 0
        took = time.monotonic() - stopping
    finally:
        daemon.kill()
    assert took < 10, f"the drain took {took:.1f} s"
    assert "daemon_draining" in daemon.stderr and "daemon_stopped" in daemon.stderr
    stored = _stored(daemon.data_dir)
    assert {i: stored[i][0] for i in running} == dict.fromkeys(running, "SUCCEEDED")
    assert {i: stored[i] for i in queued} == dict.fromkeys(queued, ("PENDING", 0))

    again = start_daemon(tmp_path, app=APP, data_dir=daemon.data_dir, key=daemon.key)
    try:
        for execution_id in queued:
            outcome = wait_finished(again, execution_id)
            assert outcome["status"] == "SUCCEEDED", outcome
        assert _stored(again.data_dir)[queued[0]] == ("SUCCEEDED", 1)
        assert set(_statuses(again, ids).values()) == {"SUCCEEDED"}
    finally:
        assert again.stop() == 0


def test_sigterm_past_the_drain_timeout_keeps_the_execution(tmp_path: Path) -> None:
    daemon = start_daemon(tmp_path, app=APP, extra_args=("--drain-timeout", "0.5"))
    try:
        (execution_id,) = _start_many(daemon, [[2.0, "long"]])
        _running(daemon, [execution_id], 1)
        stopping = time.monotonic()
        assert daemon.stop(timeout=20) == 0
        took = time.monotonic() - stopping
    finally:
        daemon.kill()
    assert took < 5, f"the stop took {took:.1f} s"
    # back in the queue, and the interrupted attempt is not held against it
    assert _stored(daemon.data_dir)[execution_id] == ("PENDING", 0)
    again = start_daemon(tmp_path, app=APP, data_dir=daemon.data_dir, key=daemon.key)
    try:
        outcome = wait_finished(again, execution_id)
        assert outcome["status"] == "SUCCEEDED" and outcome["result"] == "long", outcome
    finally:
        assert again.stop() == 0
    assert _stored(again.data_dir)[execution_id] == ("SUCCEEDED", 1)


def test_kill_9_then_restart_loses_nothing(tmp_path: Path) -> None:
    daemon = start_daemon(tmp_path, app=APP)
    try:
        ids = _start_many(daemon, [[1.0, i] for i in range(6)])
        _running(daemon, ids, 2)

        def stored_running() -> list[str] | None:
            # A RUNNING status waits for the next commit, a quarter second at most (the
            # attempt of one killed before that is not counted, see the README).
            running = [i for i in ids if _stored(daemon.data_dir).get(i, ("",))[0] == "RUNNING"]
            return running if len(running) >= 2 else None

        interrupted: list[str] = poll(stored_running, 10, "2 executions stored as running")
        replicas = _replica_pids(daemon)
        assert replicas
    finally:
        daemon.kill()
    assert daemon.process.returncode == -9
    poll(lambda: not any(alive(pid) for pid in replicas), 10, "the replicas to leave")
    stored = _stored(daemon.data_dir)
    assert set(ids) <= set(stored)  # every accepted execution was in the file

    again = start_daemon(tmp_path, app=APP, data_dir=daemon.data_dir, key=daemon.key)
    try:
        outcomes = {i: wait_finished(again, i) for i in ids}
    finally:
        assert again.stop() == 0
    assert {i: o["status"] for i, o in outcomes.items()} == dict.fromkeys(ids, "SUCCEEDED")
    assert [outcomes[i]["result"] for i in ids] == list(range(6))
    final = _stored(again.data_dir)
    for execution_id in interrupted:  # the attempt the kill took is counted, then retried
        assert final[execution_id] == ("SUCCEEDED", 2), final[execution_id]


def test_sigint_drains_like_sigterm(tmp_path: Path) -> None:
    daemon = start_daemon(tmp_path, app=APP, extra_args=("--drain-timeout", "10"))
    try:
        ids = _start_many(daemon, [[1.0, i] for i in range(3)])
        _running(daemon, ids, 2)
        daemon.process.send_signal(signal.SIGINT)
        assert daemon.process.wait(timeout=20) == 0
    finally:
        daemon.kill()
    assert "Traceback" not in daemon.stderr
    stored = _stored(daemon.data_dir)
    assert sorted(stored[i][0] for i in ids) == ["PENDING", "SUCCEEDED", "SUCCEEDED"]


def test_a_second_ctrl_c_during_the_drain_still_exits(tmp_path: Path) -> None:
    daemon = start_daemon(tmp_path, app=APP, extra_args=("--drain-timeout", "2"))
    try:
        ids = _start_many(daemon, [[1.5, i] for i in range(4)])
        _running(daemon, ids, 2)
        daemon.process.send_signal(signal.SIGINT)
        poll(lambda: "daemon_draining" in daemon.stderr, 10, "the drain to begin")
        daemon.process.send_signal(signal.SIGINT)
        try:
            daemon.process.wait(timeout=6)  # the drain timeout and then some
        except subprocess.TimeoutExpired:
            pytest.fail("the daemon did not exit after a second SIGINT")
    finally:
        daemon.kill()
    assert "Traceback" not in daemon.stderr
    assert set(_stored(daemon.data_dir)) >= set(ids)
