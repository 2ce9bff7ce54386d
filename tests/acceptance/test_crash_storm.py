"""A crash storm: the real daemon killed with SIGKILL eight times under load, restarted each
time on the same data dir, loses no accepted execution and succeeds none twice.

A client thread starts batches of executions all along (keeping the ids of the batches that
got 201: those are stored); every 2 to 4 seconds (seeded) the daemon is killed -9 and started
again on the same data dir with the same key (on a new port). The function appends
``<execution id> <attempt> <time>`` to a file (one O_APPEND write) as it starts, so the file
shows every run, interrupted ones too. At the end: every accepted id exists and SUCCEEDED,
its status log holds one SUCCEEDED, and no run of it started after that SUCCEEDED (runs of
attempts a kill interrupted are allowed: at-least-once).
"""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..daemon.helpers import Daemon, poll, start_daemon

pytestmark = pytest.mark.slow

APP = "tests.daemon.daemon_app:storm_setup"
FUNCTION = "record_run"
KILLS = 8
BATCH = 20
SEED = 20240611
#: Pause of the client between two batches: a few thousand executions in all.
CLIENT_PAUSE = 0.1
#: How long each run sleeps: with the function's 4 slots, about what the client sends, so
#: at each kill some executions are running and some wait.
RUN_PAUSE = 0.02
_UNFINISHED = ("PENDING", "RUNNING", "CANCELLING")


class Load(threading.Thread):
    """Starts batches against whichever daemon is current; keeps the ids of 201 answers."""

    def __init__(self, daemon: Daemon, runs: Path) -> None:
        super().__init__(name="storm-client", daemon=True)
        self.current = daemon
        self.runs = runs
        self.accepted: list[str] = []
        self.answers: dict[int | str, int] = defaultdict(int)
        self.stopping = threading.Event()

    def run(self) -> None:
        body = {"inputs": [{"args": [str(self.runs), RUN_PAUSE]} for _ in range(BATCH)]}
        client: httpx.Client | None = None
        url = None
        while not self.stopping.is_set():
            daemon = self.current
            if daemon.url != url or client is None:
                if client is not None:
                    client.close()
                client = httpx.Client(base_url=daemon.url, headers=daemon.headers, timeout=10)
                url = daemon.url
            try:
                answer = client.post(f"/functions/{FUNCTION}/executions/batch", json=body)
            except httpx.TransportError as exc:  # the daemon is down: try again shortly
                self.answers[type(exc).__name__] += 1
                time.sleep(0.05)
                continue
            self.answers[answer.status_code] += 1
            if answer.status_code == 201:
                ids = answer.json()["execution_ids"]
                assert len(ids) == BATCH
                self.accepted.extend(ids)
            time.sleep(CLIENT_PAUSE)
        if client is not None:
            client.close()


def _runs(path: Path) -> dict[str, list[tuple[int, float]]]:
    """Each execution's runs as the function recorded them: (attempt, start time)."""
    runs: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for line in path.read_text().splitlines():
        execution_id, attempt, at = line.split()
        runs[execution_id].append((int(attempt), float(at)))
    return runs


def _at(moment: str) -> float:
    return datetime.fromisoformat(moment.replace("Z", "+00:00")).timestamp()


@pytest.mark.timeout(240)
def test_kill9_storm_under_load_loses_nothing_and_succeeds_nothing_twice(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    runs = tmp_path / "runs"
    directory = tmp_path / "daemon"
    daemon = start_daemon(directory, app=APP)
    load = Load(daemon, runs)
    load.start()
    kills: list[tuple[int, int]] = []  # (accepted so far, runs recorded so far) at each kill
    try:
        for _ in range(KILLS):
            time.sleep(rng.uniform(2, 4))
            daemon.kill()  # SIGKILL, and reaped
            recorded = len(runs.read_text().splitlines()) if runs.exists() else 0
            kills.append((len(load.accepted), recorded))
            daemon = start_daemon(directory, app=APP, data_dir=daemon.data_dir, key=daemon.key)
            load.current = daemon
        time.sleep(1)  # some load on the last daemon too
    finally:
        load.stopping.set()
        load.join(timeout=30)
    try:
        _check(daemon, load, runs, kills)
    finally:
        daemon.stop()


def _check(daemon: Daemon, load: Load, runs: Path, kills: list[tuple[int, int]]) -> None:
    accepted = load.accepted
    story = f"accepted {len(accepted)}, answers {dict(load.answers)}, at each kill {kills}"
    assert len(accepted) >= 500, story
    assert len(set(accepted)) == len(accepted), story
    assert all(b > a for (a, _), (b, _) in pairwise(kills)), (
        f"the load stopped between two kills: {story}"
    )
    with daemon.http() as http:

        def drained() -> bool:
            counts = http.get(f"/functions/{FUNCTION}/statistics").json()
            return not any(counts.get(status, 0) for status in _UNFINISHED)

        poll(drained, 90, f"every execution of {FUNCTION} to finish ({story})", every=0.2)
        views: dict[str, dict[str, Any]] = {}
        missing, unfinished = [], []
        for execution_id in accepted:
            answer = http.get(f"/executions/{execution_id}")
            if answer.status_code == 404:
                missing.append(execution_id)
                continue
            assert answer.status_code == 200, answer.text
            view = answer.json()
            views[execution_id] = view
            if view["status"] != "SUCCEEDED":
                unfinished.append((execution_id, view["status"], view["error"]))
    assert not missing, f"{len(missing)} accepted executions lost, e.g. {missing[:5]}; {story}"
    assert not unfinished, f"{len(unfinished)} did not succeed, e.g. {unfinished[:5]}; {story}"

    recorded = _runs(runs)
    twice, again, unrecorded = [], [], []
    for execution_id, view in views.items():
        succeeded = [c for c in view["status_log"] if c["status"] == "SUCCEEDED"]
        if len(succeeded) != 1:
            twice.append((execution_id, [c["time"] for c in succeeded]))
            continue
        succeeded_at = _at(succeeded[0]["time"])
        ran = recorded.get(execution_id, [])
        if not any(attempt == view["attempts"] for attempt, _ in ran):
            unrecorded.append((execution_id, view["attempts"], ran))
        later = [(attempt, at) for attempt, at in ran if at > succeeded_at]
        later += [(attempt, at) for attempt, at in ran if attempt > view["attempts"]]
        if later:
            again.append((execution_id, succeeded[0]["time"], later))
    assert not twice, f"{len(twice)} SUCCEEDED more than once, e.g. {twice[:5]}"
    assert not again, f"{len(again)} ran again after they SUCCEEDED, e.g. {again[:5]}"
    assert not unrecorded, f"{len(unrecorded)} succeeded with no run recorded: {unrecorded[:5]}"
    # and the kills did interrupt running work, which ran again (else the storm tested little)
    interrupted = [i for i, ran in recorded.items() if i in views and len(ran) > 1]
    assert interrupted, f"no kill caught an execution running; {story}"
