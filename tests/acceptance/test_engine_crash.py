"""kill -9 of the engine with executions queued and running, then a restart on the same file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..integration.helpers import alive

APP = Path(__file__).with_name("engine_app.py")
ROOT = Path(__file__).parents[2]


def _run_lines(directory: Path) -> list[list[str]]:
    runs = directory / "runs"
    return [line.split() for line in runs.read_text().splitlines()] if runs.exists() else []


def test_engine_kill9_and_restart_loses_nothing_and_succeeds_nothing_twice(tmp_path: Path) -> None:
    db = str(tmp_path / "engine.db")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    app = subprocess.Popen(
        [sys.executable, str(APP), "start", db, str(tmp_path), "10"],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
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

    resumed = subprocess.run(
        [sys.executable, str(APP), "resume", db, str(tmp_path)],
        capture_output=True,
        env=env,
        text=True,
        timeout=90,
        check=True,
    )
    report = json.loads(resumed.stdout.splitlines()[-1])

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
