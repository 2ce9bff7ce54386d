"""Several daemons on one PostgreSQL database, each a real engine process with real replicas:
work started through one runs on all of them, a waiter on one hears of what another ran, a
trigger made on one takes effect on all, a Once trigger fires once whichever engine hears the
event, cron fires each scheduled time once among them, and when one is killed (kill -9) the
others finish its work, none of it twice."""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import httpx
import pytest

from triggerfish import ExecutionStatus
from triggerfish.sdk.remote import Client

from .helpers import Daemon, cli, poll, start_daemon
from .test_packages import codebase

pytestmark = pytest.mark.anyio

APP = "tests.daemon.daemon_app:cluster_setup"
ON_ITEM = {
    "name": "on-item",
    "function": "item_id",
    "resource": "Item",
    "actions": ["Created"],
    "executionMode": "Once",
}

Cluster = Callable[[int], list[Daemon]]


@pytest.fixture
def cluster(postgres_dsn: str, tmp_path: Path) -> Iterator[Cluster]:
    """Start daemons on one new database; each is stopped (or was killed) at the end."""
    started: list[Daemon] = []

    def start(count: int) -> list[Daemon]:
        for _ in range(count):
            folder = tmp_path / f"engine-{len(started)}"
            started.append(start_daemon(folder, app=APP, extra_args=("--store", postgres_dsn)))
        return started[-count:]

    yield start
    for daemon in started:
        if daemon.process.poll() is None:
            assert daemon.stop() == 0, daemon.stderr


def _engine_id(daemon: Daemon) -> str:
    """The engine's id, as its log names it once it runs."""
    found = re.search(r"event='engine_started'.*?engine_id='(\w+)'", daemon.stderr)
    assert found, daemon.stderr
    return found.group(1)


async def _executions(daemon: Daemon, ids: list[str]) -> list[dict[str, Any]]:
    with daemon.http() as http:
        return [http.get(f"/executions/{i}").json() for i in ids]


def _succeeded_once(execution: dict[str, Any]) -> bool:
    statuses = [change["status"] for change in execution["status_log"]]
    return statuses.count("SUCCEEDED") == 1 and execution["status"] == "SUCCEEDED"


async def test_a_batch_started_through_one_of_three_engines_runs_on_all_three(
    cluster: Cluster,
) -> None:
    engines = cluster(3)
    async with Client(engines[0].url, engines[0].key) as client:
        slow = client.function("slow")
        ids = await slow.start_many([((0.1, i), {}) for i in range(150)])
        await slow.wait_for_completion(timeout=90)
    done = await _executions(engines[0], ids)
    assert [e["result"] for e in done] == list(range(150))
    assert all(_succeeded_once(e) for e in done)
    ran_on = Counter(e["engine_id"] for e in done)
    assert set(ran_on) == {_engine_id(d) for d in engines}, ran_on  # each ran part of it


async def test_kill_9_of_one_engine_under_load_loses_nothing_and_succeeds_nothing_twice(
    cluster: Cluster, tmp_path: Path
) -> None:
    engines = cluster(3)
    runs = tmp_path / "runs"
    ids: list[str] = []
    for daemon in engines[:2]:  # accepted through two of them
        async with Client(daemon.url, daemon.key) as client:
            record_run = client.function("record_run")
            ids += await record_run.start_many([((str(runs), 0.02), {}) for _ in range(200)])
    poll(lambda: runs.exists() and len(runs.read_text().splitlines()) > 60, 60, "runs")
    engines[1].kill()  # under load: it holds running and queued work
    survivor = engines[2]
    async with Client(survivor.url, survivor.key) as client:
        await client.function("record_run").wait_for_completion(timeout=120)
    done = await _executions(survivor, ids)
    assert len({e["id"] for e in done}) == 400
    assert all(_succeeded_once(e) for e in done), [e for e in done if not _succeeded_once(e)]
    assert all(e["result"] == e["id"] for e in done)
    ran_on = {e["engine_id"] for e in done}
    assert _engine_id(survivor) in ran_on


async def test_await_result_on_one_engine_for_an_execution_another_runs(
    cluster: Cluster,
) -> None:
    first, second = cluster(2)
    async with Client(second.url, second.key) as on_second:
        execution_id = await on_second.function("slow").start(0.5, "done")
    async with Client(first.url, first.key) as on_first:
        assert await on_first.function("slow").await_result(execution_id, timeout=30) == "done"
        execution = await on_first.get(execution_id)
    assert execution.engine_id == _engine_id(second)


async def test_cancel_through_one_engine_stops_an_execution_another_runs_or_holds(
    cluster: Cluster,
) -> None:
    first, second = cluster(2)
    with second.http() as http:
        started = http.post("/functions/slow/executions", json={"args": [30, "never"]})
        (running,) = started.json()["execution_ids"]
        poll(lambda: http.get(f"/executions/{running}").json()["status"] == "RUNNING", 20, "run")
    with first.http() as http:
        assert http.post(f"/executions/{running}/cancel").status_code in (200, 202, 204)
        poll(
            lambda: http.get(f"/executions/{running}").json()["status"] == "CANCELLED",
            20,
            "the cancel, on the engine that runs it",
        )
    execution = (await _executions(first, [running]))[0]
    assert execution["engine_id"] == _engine_id(second)


async def test_a_trigger_created_on_one_engine_fires_for_an_event_emitted_to_the_other(
    cluster: Cluster,
) -> None:
    first, second = cluster(2)
    with first.http() as http, second.http() as on_second:
        answer = http.post("/triggers", json=ON_ITEM)
        assert answer.status_code == 201, answer.text
        created_at = time.monotonic()  # stored and told: in effect everywhere soon
        poll(lambda: on_second.get("/triggers/on-item").status_code == 200, 5, "the trigger")
        assert time.monotonic() - created_at < 1.0  # in effect there within a second
    with second.http() as http:
        event = {"resource": "Item", "action": "Created", "body": {"id": "a"}}
        (execution_id,) = http.post("/events", json=event).json()["execution_ids"]
    async with Client(first.url, first.key) as client:
        assert await client.function("item_id").await_result(execution_id, timeout=30) == "a"
    with second.http() as http:  # deleted through the second: gone from the first too
        assert http.delete("/triggers/on-item").status_code == 204
    with first.http() as http:
        poll(lambda: http.get("/triggers/on-item").status_code == 404, 1, "the deletion")


async def test_fifty_identical_once_events_half_to_each_engine_give_one_execution(
    cluster: Cluster,
) -> None:
    engines = cluster(2)
    with engines[0].http() as http:
        assert http.post("/triggers", json=ON_ITEM).status_code == 201
    with engines[1].http() as http:
        poll(lambda: http.get("/triggers/on-item").status_code == 200, 5, "the trigger")
    caused: list[str] = []

    async def emit(daemon: Daemon) -> None:
        async with Client(daemon.url, daemon.key) as client:
            caused.extend(await client.emit("Item", "Created", {"id": "item-1"}))

    async with anyio.create_task_group() as tg:
        for n in range(50):
            tg.start_soon(emit, engines[n % 2])
    assert len(caused) == 1
    async with Client(engines[1].url, engines[1].key) as client:
        assert await client.function("item_id").await_result(caused[0], timeout=30) == "item-1"
        page = await client.list_executions(function="item_id")
        (trigger,) = await client.triggers()
    assert list(page.execution_ids) == caused
    assert trigger.stats.fired == 1


async def test_cron_fires_each_second_once_across_two_engines_with_the_leader_killed(
    cluster: Cluster, postgres_dsn: str
) -> None:
    """Every second for 30 s, the engine that leads the cron clock killed at about 12 s: no
    scheduled time has two executions, and each one from the first to the last either ran
    or is counted as missed."""
    engines = cluster(2)
    with engines[0].http() as http:
        tick = {"name": "tick", "function": "ticked", "cron": "* * * * * *"}
        assert http.post("/triggers", json=tick).status_code == 201
    began = time.monotonic()
    await anyio.sleep(12)
    (leader,) = [d for d in engines if "cron_leading" in d.stderr]
    leader.kill()
    (survivor,) = [d for d in engines if d is not leader]
    await anyio.sleep(30 - (time.monotonic() - began))
    with survivor.http() as http:
        assert http.post("/triggers/tick/deactivate").status_code == 200
    async with Client(survivor.url, survivor.key) as client:
        await client.function("ticked").wait_for_completion(timeout=60)
        (trigger,) = await client.triggers()
    connection = await asyncpg.connect(postgres_dsn)
    try:
        rows = await connection.fetch(
            "SELECT event, status, engine_id FROM executions WHERE trigger_id = $1",
            trigger.id,
        )
    finally:
        await connection.close()
    scheduled = [datetime.fromisoformat(json.loads(row[0])["scheduled"]) for row in rows]
    assert len(scheduled) == len(set(scheduled))  # no time twice
    seconds = round((max(scheduled) - min(scheduled)).total_seconds()) + 1
    assert seconds >= 28
    assert len(scheduled) + trigger.stats.missed == seconds  # each run or counted as missed
    assert {row[2] for row in rows} == {_engine_id(d) for d in engines}  # both led in turn
    assert all(row[1] == ExecutionStatus.SUCCEEDED.value for row in rows)


async def test_a_status_change_on_one_engine_reaches_the_stream_and_log_followers_of_another(
    cluster: Cluster,
) -> None:
    first, second = cluster(2)
    events: list[dict[str, Any]] = []
    opened = threading.Event()

    def read() -> None:
        query = "/events/stream?function=chatty&timeout=30"
        with first.http(timeout=40) as http, http.stream("GET", query) as stream:
            for line in stream.iter_lines():
                opened.set()
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
                    if events[-1]["kind"] == "ExecutionFinished":
                        return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert opened.wait(10)
    await anyio.sleep(1.0)  # the second engine hears that the first one watches
    with second.http() as http:
        answer = http.post("/functions/chatty/executions", json={"args": [5, 0.2]})
        (execution_id,) = answer.json()["execution_ids"]
    with httpx.Client(base_url=first.url, headers=first.headers, timeout=40) as http:
        followed = http.get(f"/executions/{execution_id}/logs", params={"follow": "true"})
    reader.join(30)
    lines = [json.loads(line)["text"] for line in followed.text.splitlines()]
    assert "".join(lines) == "".join(f"line {i}\n" for i in range(5))
    mine = [(e["kind"], e.get("status")) for e in events if e["execution_id"] == execution_id]
    assert ("ExecutionStatusChanged", "RUNNING") in mine
    assert ("ExecutionStatusChanged", "SUCCEEDED") in mine
    assert mine[-1] == ("ExecutionFinished", "SUCCEEDED")
    assert sum(kind == "ExecutionLogged" for kind, _ in mine) == 5


async def test_a_deploy_pause_and_resume_through_one_engine_take_effect_on_the_other(
    cluster: Cluster, tmp_path: Path
) -> None:
    first, second = cluster(2)
    deployed = cli(first, "deploy", str(codebase(tmp_path / "v1", "v1")))
    assert deployed.returncode == 0, deployed.stderr
    began = time.monotonic()
    with second.http() as http:  # the second runs the version from the database's codebase
        poll(lambda: http.get("/services/tags").status_code == 200, 5, "the deploy")
        assert time.monotonic() - began < 1.0
    async with Client(second.url, second.key) as client:
        assert await client.function("tags", "tag").call_remote("a") == "a-v1-s"
    paused = cli(first, "services", "pause", "tags")
    assert paused.returncode == 0, paused.stderr
    began = time.monotonic()
    with second.http() as http:
        poll(lambda: http.get("/services/tags").json()["state"] == "Inactive", 5, "the pause")
        assert time.monotonic() - began < 1.0
        execution_id = http.post("/functions/tags.tag/executions", json={"args": ["b"]}).json()[
            "execution_ids"
        ][0]
        await anyio.sleep(1.0)
        assert http.get(f"/executions/{execution_id}").json()["status"] == "PENDING"
    resumed = cli(first, "services", "resume", "tags")
    assert resumed.returncode == 0, resumed.stderr
    async with Client(second.url, second.key) as client:  # waits its turn no more
        assert (
            await client.function("tags", "tag").await_result(execution_id, timeout=30) == "b-v1-s"
        )
