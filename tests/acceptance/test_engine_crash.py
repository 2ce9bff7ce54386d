"""kill -9 of the engine with executions queued and running, then a restart on the same file
(or PostgreSQL database)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..integration.helpers import alive

APP = Path(__file__).with_name("engine_app.py")
ROOT = Path(__file__).parents[2]


def _run_lines(directory: Path) -> list[list[str]]:
    runs = directory / "runs"
    return [line.split() for line in runs.read_text().splitlines()] if runs.exists() else []


def _restart(env: dict[str, str], mode: str, db: str, directory: Path) -> Any:
    """Run the app in ``mode`` on the killed engine's file; what it reports, on its last line."""
    resumed = subprocess.run(
        [sys.executable, str(APP), mode, db, str(directory)],
        capture_output=True,
        env=env,
        text=True,
        timeout=90,
        check=True,
    )
    return json.loads(resumed.stdout.splitlines()[-1])


def _spawn(mode: str, db: str, directory: Path, *args: str) -> subprocess.Popen[str]:
    """The app in ``mode`` in a process of its own, its stdout piped."""
    return subprocess.Popen(
        [sys.executable, str(APP), mode, db, str(directory), *args],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        text=True,
    )


def test_engine_kill9_and_restart_loses_nothing_and_succeeds_nothing_twice(
    tmp_path: Path, store_target: str
) -> None:
    db = store_target
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    app = _spawn("start", db, tmp_path, "10")
    assert app.stdout is not None
    ids = json.loads(app.stdout.readline())
    assert len(ids) == 20
    deadline = time.monotonic() + 20
    while len(_run_lines(tmp_path)) < 6:  # a few finished, some running, most queued
        assert time.monotonic() < deadline, "executions never started"
        time.sleep(0.02)
    app.send_signal(signal.SIGKILL)
    app.wait(timeout=10)
    app.stdout.close()
    replica_pids = {int(pid) for _, _, pid in _run_lines(tmp_path)}
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in replica_pids):  # replicas leave when their engine dies
        assert time.monotonic() < deadline, "a replica outlived its engine"
        time.sleep(0.05)
    _run_lines(tmp_path)

    report = _restart(env, "resume", db, tmp_path)

    assert sorted(report) == sorted(ids)  # none lost
    interrupted = []
    for execution in report.values():
        statuses = [status for status, _ in execution["log"]]
        assert statuses.count("SUCCEEDED") <= 1, execution  # never succeeded twice
        lost_attempt = any("EngineStoppedError" in message for _, message in execution["log"])
        if lost_attempt or execution["error"] == "EngineStoppedError":
            interrupted.append(execution)
        if execution["function"] == "work":  # two attempts: the lost one is retried
            assert execution["status"] == "SUCCEEDED", execution
            assert execution["attempts"] == (2 if lost_attempt else 1), execution
        elif execution["error"] == "EngineStoppedError":  # one attempt: it fails, clearly
            assert execution["status"] == "FAILED", execution
        else:
            assert execution["status"] == "SUCCEEDED", execution
    assert interrupted, "no execution was running at the kill"


def test_engine_kill9_with_cron_firings_run_but_not_stored(tmp_path: Path) -> None:
    """Cron firings go to replicas ahead of their commit. Killed when some have run and none
    of them is stored, the restart leaves their times to the misfire policy: the latest runs
    again (run_once), the others count as missed, and no time is stored twice. (On a store
    several engines share, a firing waits for its commit: tests/daemon/test_cluster.py.)"""
    db = str(tmp_path / "engine.db")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ticks = tmp_path / "ticks"
    app = subprocess.Popen(
        [sys.executable, str(APP), "cron", db, str(tmp_path)],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert app.stdout is not None
    try:
        assert app.stdout.readline().strip() == "held"  # a firing is stored; no commit after
        deadline = time.monotonic() + 15
        while not ticks.exists():  # stored may come before it ran (its replica may be starting)
            assert time.monotonic() < deadline, "the stored firing never ran"
            time.sleep(0.05)
        held_at = len(ticks.read_text().split())
        while len(ticks.read_text().split()) < held_at + 2:
            assert time.monotonic() < deadline, "the clock stopped firing while the writer was held"
            time.sleep(0.05)
    finally:  # killed whatever happened: nothing of it outlives the test
        app.send_signal(signal.SIGKILL)
        app.wait(timeout=10)
        app.stdout.close()
    ran = ticks.read_text().split()

    report = _restart(env, "cron-resume", db, tmp_path)

    firings = report["firings"]
    stored = {f["id"] for f in firings}
    unstored = [execution_id for execution_id in ran if execution_id not in stored]
    assert len(unstored) >= 2  # they ran, and the kill took their records
    assert all(f["status"] == "SUCCEEDED" for f in firings), firings
    scheduled = [datetime.fromisoformat(f["scheduled"]) for f in firings]
    assert len(scheduled) == len(set(scheduled))  # no time stored twice
    restarted_at = datetime.fromtimestamp(report["restarted_at"], UTC)
    made = [
        (f["created_at"] >= report["restarted_at"], t)
        for f, t in zip(firings, scheduled, strict=True)
    ]
    before = [t for after, t in made if not after]
    again = [t for after, t in made if after and t < restarted_at]
    assert len(again) == 1 and again[0] > max(before)  # run_once: the latest missed time
    assert report["missed"] >= len(unstored) - 1


def test_engine_kill9_right_after_a_once_firing_is_stored_keeps_its_count(
    tmp_path: Path, store_target: str
) -> None:
    """The engine dies the moment emit returns: the execution is stored, and so is the
    trigger's count of it (it rides in the same transaction), so after the restart the
    execution runs and the trigger says it fired once."""
    db = store_target
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    killed = subprocess.run(
        [sys.executable, str(APP), "once", db, str(tmp_path)],
        capture_output=True,
        env=env,
        text=True,
        timeout=60,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    execution_id = json.loads(killed.stdout.splitlines()[-1])
    report = _restart(env, "once-resume", db, tmp_path)
    assert report["executions"] == [execution_id]
    assert report["fired"] == 1
    assert [line[0] for line in _run_lines(tmp_path)] == [execution_id]  # it ran, once


def test_a_second_engine_finishes_the_work_of_one_killed_with_kill_9(
    tmp_path: Path, postgres_dsn: str
) -> None:
    """Two engines on one PostgreSQL database: the second waits for every execution the
    first holds, and adopts them once the first is killed; every execution ends, none
    succeeds twice."""
    active = _spawn("start", postgres_dsn, tmp_path, "10")
    assert active.stdout is not None
    ids = json.loads(active.stdout.readline())
    standby = _spawn("resume", postgres_dsn, tmp_path)
    try:
        deadline = time.monotonic() + 20
        while len(_run_lines(tmp_path)) < 6:
            assert time.monotonic() < deadline, "executions never started"
            time.sleep(0.02)
        assert standby.poll() is None
        pids_before = {int(pid) for _, _, pid in _run_lines(tmp_path)}
        active.send_signal(signal.SIGKILL)
        active.wait(timeout=10)
        out, _ = standby.communicate(timeout=90)
    finally:
        for process in (active, standby):
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
        active.stdout.close()
    report = json.loads(out.splitlines()[-1])
    assert sorted(report) == sorted(ids)  # none lost
    for execution in report.values():
        statuses = [status for status, _ in execution["log"]]
        assert statuses.count("SUCCEEDED") <= 1, execution
        if execution["function"] == "work":
            assert execution["status"] == "SUCCEEDED", execution
    pids_after = {int(pid) for _, _, pid in _run_lines(tmp_path)} - pids_before
    assert pids_after, "the second engine's replicas ran none of them"
