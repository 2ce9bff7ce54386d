"""Event triggers, loop protection, pipelines and cron, on real replicas and sqlite."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

import triggerfish
from triggerfish import ConfigurationError, ExecutionStatus, Store

from . import fns

pytestmark = pytest.mark.anyio
S = ExecutionStatus
MakeEngine = Callable[..., triggerfish.Engine]
ON_CREATED = {
    "name": "on-created",
    "function": "item_id",
    "resource": "Item",
    "actions": ["Created"],
}


async def test_event_trigger_runs_the_function_on_the_resource(make_engine: MakeEngine) -> None:
    engine = make_engine()
    engine.function(fns.item_id)
    engine.add_trigger({**ON_CREATED, "filter": {"metadata.system.mimetype": "image/*"}})
    async with engine:
        ids = await engine.emit(
            "Item", "Created", {"id": "img-1", "metadata": {"system": {"mimetype": "image/png"}}}
        )
        assert len(ids) == 1
        assert await engine.handle(fns.item_id).await_result(ids[0]) == "img-1"
        assert (
            await engine.emit(
                "Item",
                "Created",
                {"id": "vid-1", "metadata": {"system": {"mimetype": "video/mp4"}}},
            )
            == []
        )
        assert (
            await engine.emit(
                "Item",
                "Updated",
                {"id": "img-2", "metadata": {"system": {"mimetype": "image/png"}}},
            )
            == []
        )
        execution = await engine.get(ids[0])
        trigger = engine.triggers.get("on-created")
    assert execution.trigger_id == trigger.id and execution.lineage == (trigger.id,)
    assert execution.event is not None and execution.event["resource_id"] == "img-1"
    assert execution.status_log[0].message == "fired by trigger 'on-created'"
    assert trigger.stats.fired == 1


async def test_once_mode_under_100_concurrent_events_runs_once_even_after_restart(
    store_factory: Callable[[], Store],
) -> None:
    engine = triggerfish.Engine(store_factory())
    engine.function(fns.item_id)
    engine.add_trigger(ON_CREATED)
    created: list[list[str]] = []

    async def emit() -> None:
        created.append(await engine.emit("Item", "Created", {"id": "item-1"}))

    async with engine:
        async with anyio.create_task_group() as tg:
            for _ in range(100):
                tg.start_soon(emit)
        await engine.handle(fns.item_id).wait_for_completion(timeout=20)
        total = (await engine.handle(fns.item_id).statistics())[S.SUCCEEDED]
    assert sum(len(ids) for ids in created) == 1 and total == 1
    if isinstance(engine._core.store, triggerfish.SqliteStore):
        restarted = triggerfish.Engine(store_factory())
        restarted.function(fns.item_id)
        restarted.add_trigger(ON_CREATED)  # applied again: same trigger, nothing changes
        async with restarted:
            assert await restarted.emit("Item", "Created", {"id": "item-1"}) == []
            assert len(await restarted.emit("Item", "Created", {"id": "item-2"})) == 1
            assert len(restarted.triggers.list()) == 1


async def test_always_mode_fires_on_every_matching_event(make_engine: MakeEngine) -> None:
    engine = make_engine()
    engine.function(fns.item_id)
    engine.add_trigger({**ON_CREATED, "actions": ["Updated"], "executionMode": "Always"})
    async with engine:
        for _ in range(3):
            assert len(await engine.emit("Item", "Updated", {"id": "item-1"})) == 1


async def test_modes_not_allowed_for_an_action_are_refused(make_engine: MakeEngine) -> None:
    engine = make_engine()
    engine.function(fns.item_id)
    with pytest.raises(
        ConfigurationError, match=r"executionMode: Always is not allowed for Item Created"
    ):
        engine.add_trigger({**ON_CREATED, "executionMode": "Always"})
    async with engine:
        with pytest.raises(ConfigurationError, match="not allowed for Task Updated"):
            await engine.triggers.create(
                {
                    **ON_CREATED,
                    "resource": "Task",
                    "actions": ["Updated"],
                    "executionMode": "Always",
                }
            )
        with pytest.raises(ConfigurationError, match="no function named 'nope'"):
            await engine.triggers.create({**ON_CREATED, "function": "nope"})
        with pytest.raises(ConfigurationError, match=r"filter\.size\.\$gtt: unknown operator"):
            await engine.triggers.create({**ON_CREATED, "filter": {"size": {"$gtt": 3}}})
        with pytest.raises(ConfigurationError, match="malformed JSON"):
            await engine.triggers.load('{"name": "x", ')
        with pytest.raises(ConfigurationError, match=r"service\.triggers\[0\]\.actions"):
            await engine.triggers.load(
                {
                    "name": "svc",
                    "triggers": [{"name": "t", "function": "item_id", "resource": "Item"}],
                }
            )
        with pytest.raises(
            ConfigurationError, match=r"body\.id: a value of type object is not JSON"
        ):
            await engine.emit("Item", "Created", {"id": object()})
        assert engine.triggers.list() == []


async def test_dataloop_loop_creating_items_on_item_created_stops(make_engine: MakeEngine) -> None:
    engine = make_engine()
    engine.function(fns.copy_item)
    engine.add_trigger(
        {"name": "copier", "function": "copy_item", "resource": "Item", "actions": ["Created"]}
    )
    async with engine:
        (first,) = await engine.emit("Item", "Created", {"id": "a"})
        assert (
            await engine.handle(fns.copy_item).await_result(first) == []
        )  # its copy fired nothing
        stats = engine.triggers.get("copier").stats
        total = sum((await engine.handle(fns.copy_item).statistics()).values())
    assert total == 1
    assert stats.fired == 1 and stats.suppressed == 1
    assert (
        stats.last_suppressed_reason is not None
        and "own executions" in stats.last_suppressed_reason
    )


async def test_dataloop_loop_updating_items_on_item_updated_always_stops(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine()
    engine.function(fns.touch_item)
    engine.add_trigger(
        {
            "name": "toucher",
            "function": "touch_item",
            "resource": "Item",
            "actions": ["Updated"],
            "executionMode": "Always",
            "loopLimit": 2,
        }
    )
    async with engine:
        await engine.emit("Item", "Updated", {"id": "a", "version": 0})
        await engine.handle(fns.touch_item).wait_for_completion(timeout=20)
        with anyio.fail_after(5):
            while engine.triggers.get("toucher").stats.suppressed < 1:
                await anyio.sleep(0.02)
        total = sum((await engine.handle(fns.touch_item).statistics()).values())
        stats = engine.triggers.get("toucher").stats
    assert total == 3  # the first, then two generations allowed by loopLimit 2
    assert stats.fired == 3 and stats.suppressed == 1


async def test_pipeline_from_execution_status_changes(make_engine: MakeEngine) -> None:
    engine = make_engine()
    engine.function(fns.add)
    engine.function(fns.add_one)
    engine.add_trigger(
        {
            "name": "then",
            "function": "add_one",
            "resource": "Execution",
            "actions": ["statusChanged"],
            "filter": {"function": "add", "status": "SUCCEEDED"},
        }
    )
    async with engine:
        first = await engine.handle(fns.add).start(2, 3)
        await engine.handle(fns.add).await_result(first)
        await engine.handle(fns.add_one).wait_for_completion(timeout=10)
        with anyio.fail_after(5):
            while not await engine.handle(fns.add_one).results():
                await anyio.sleep(0.02)
        assert await engine.handle(fns.add_one).results() == [6]
        (step,) = (await engine.handle(fns.add_one).list()).execution_ids
        execution = await engine.get(step)
    assert execution.event is not None and execution.event["resource_id"] == first


async def test_triggers_survive_restarts_and_can_be_changed(make_engine: MakeEngine) -> None:
    engine = make_engine()
    engine.function(fns.item_id)
    async with engine:
        created = await engine.triggers.create(ON_CREATED)
        await engine.triggers.deactivate("on-created")
        assert await engine.emit("Item", "Created", {"id": "a"}) == []
    again = make_engine()
    again.function(fns.item_id)
    async with again:
        kept = again.triggers.get(created.id)
        assert kept.spec.active is False and kept.name == "on-created"
        await again.triggers.activate(created.id)
        await again.triggers.update("on-created", filter={"dir": "/in"})
        assert await again.emit("Item", "Created", {"id": "b"}) == []
        assert len(await again.emit("Item", "Created", {"id": "c", "dir": "/in"})) == 1
        await again.triggers.delete("on-created")
        assert again.triggers.list() == []
        assert await again.emit("Item", "Created", {"id": "d", "dir": "/in"}) == []


async def test_trigger_names_stay_unique_through_renames_deletes_and_restarts(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine()
    engine.function(fns.item_id)
    async with engine:
        first = await engine.triggers.create(ON_CREATED)
        with pytest.raises(ConfigurationError, match="exists already"):
            await engine.triggers.create(ON_CREATED)
        await engine.triggers.update("on-created", name="renamed")
        with pytest.raises(ConfigurationError, match="no trigger"):
            engine.triggers.get("on-created")
        assert engine.triggers.get("renamed").id == first.id
        second = await engine.triggers.create(ON_CREATED)  # the old name is free again
        assert second.id != first.id
        with pytest.raises(ConfigurationError, match="exists already"):
            await engine.triggers.update("renamed", name="on-created")
        assert engine.triggers.get("renamed").id == first.id  # the refused rename left it
        applied = await engine.triggers.apply(
            {**ON_CREATED, "name": "renamed", "actions": ["Updated"]}
        )
        assert applied.id == first.id and applied.spec.actions == ("Updated",)
        await engine.triggers.delete("on-created")
        third = await engine.triggers.create(ON_CREATED)
        assert third.id not in (first.id, second.id)
    again = make_engine()
    again.function(fns.item_id)
    async with again:
        assert again.triggers.get("on-created").id == third.id
        assert again.triggers.get("renamed").id == first.id
        with pytest.raises(ConfigurationError, match="exists already"):
            await again.triggers.create({**ON_CREATED, "name": "renamed"})


async def test_triggers_load_from_a_service_json_file(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    service = {
        "name": "svc",
        "runtime": {"replicas": 1, "concurrency": 6},
        "triggers": [
            {**ON_CREATED, "filter": {"$and": [{"dir": "/train"}, {"hidden": False}]}},
            {
                "name": "nightly",
                "function": "tick",
                "type": "Cron",
                "spec": {"cron": "0 5 * * *", "input": {"x": 1}},
            },
        ],
    }
    path = tmp_path / "service.json"
    path.write_text(json.dumps(service))
    engine = make_engine()
    engine.function(fns.item_id)
    engine.function(fns.tick)
    async with engine:
        loaded = await engine.triggers.load(path)
        assert [t.name for t in loaded] == ["on-created", "nightly"]
        assert (
            len(await engine.emit("Item", "Created", {"id": "t", "dir": "/train", "hidden": False}))
            == 1
        )
        assert (
            await engine.emit("Item", "Created", {"id": "h", "dir": "/train", "hidden": True}) == []
        )


async def test_cron_trigger_fires_on_schedule_with_its_input(make_engine: MakeEngine) -> None:
    engine = make_engine()
    engine.function(fns.tick)
    async with engine:
        await engine.triggers.create(
            {"name": "every-second", "function": "tick", "cron": "* * * * * *", "input": {"x": 7}}
        )
        await anyio.sleep(2.6)
        await engine.triggers.deactivate("every-second")
        handle = engine.handle(fns.tick)
        await handle.wait_for_completion(timeout=10)
        results = await handle.results()
        # A changed input is the one the next firings get.
        await engine.triggers.update("every-second", input={"x": 8}, active=True)
        await anyio.sleep(1.2)
        await engine.triggers.deactivate("every-second")
        await handle.wait_for_completion(timeout=10)
        everything = await handle.results()
        stats = engine.triggers.get("every-second").stats
        executions = [await engine.get(i) for i in (await handle.list()).execution_ids]
    for execution in executions:  # created at its time, not before (firings are staged ahead)
        assert execution.event is not None
        scheduled = datetime.fromisoformat(execution.event["scheduled"])
        assert execution.created_at >= scheduled and execution.status_log[0].time >= scheduled
    assert 2 <= len(results) <= 3
    assert results[0]["kwargs"] == {"x": 7}
    changed = [r for r in everything if r["kwargs"] == {"x": 8}]
    assert changed and len(changed) == len(everything) - len(results)
    assert stats.fired == len(everything)
    assert max(engine._core.cron_lateness) < 0.5


async def test_cron_firings_run_at_their_time_while_a_commit_is_held_up(
    make_engine: MakeEngine,
) -> None:
    """A firing of the clock goes to its replica at its time, ahead of its commit, so a slow
    commit does not make it late; it is stored, with its whole history, once commits resume."""
    engine = make_engine()
    engine.function(fns.tick)
    async with engine:
        store = engine._core.store
        await engine.triggers.create(
            {"name": "every-second", "function": "tick", "cron": "* * * * * *"}
        )

        def finished() -> list[str]:
            live = engine._core.lifecycle.live.values()
            return [x.record.id for x in live if x.record.status is S.SUCCEEDED]

        async def hold_the_writer() -> list[object]:  # no commit until one has run
            with anyio.fail_after(5):
                while not finished():
                    await anyio.sleep(0.02)
            return [await store.get(i) for i in finished()]

        unstored = await store._exclusive(hold_the_writer)
        await engine.triggers.deactivate("every-second")
        handle = engine.handle(fns.tick)
        await handle.wait_for_completion(timeout=10)
        stored = [await engine.get(i) for i in (await handle.list()).execution_ids]
        fired = engine.triggers.get("every-second").stats.fired
    assert unstored and unstored == [None] * len(unstored)  # ran while nothing was committed
    for execution in stored:
        assert execution.status is S.SUCCEEDED
        assert [e.status for e in execution.status_log] == [S.PENDING, S.RUNNING, S.SUCCEEDED]
    assert fired == len(stored) >= len(unstored)


async def test_a_cron_time_that_fired_before_is_kept_and_stored_when_it_fires_again(
    make_engine: MakeEngine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Fire records show a time that is still ahead (as a wall clock stepped back across a
    restart would): the firing has gone to its replica already, and has even finished before
    its commit refuses it, so it is kept, stored and logged."""
    caplog.set_level(logging.WARNING, logger="triggerfish")
    engine = make_engine()
    engine.function(fns.tick)
    async with engine:
        store = engine._core.store
        trigger = await engine.triggers.create(
            {"name": "every-second", "function": "tick", "cron": "* * * * * *"}
        )
        handle = engine.handle(fns.tick)
        with anyio.fail_after(10):
            while not (await handle.list()).execution_ids:
                await anyio.sleep(0.05)
        first = await engine.get((await handle.list()).execution_ids[0])
        assert first.event is not None
        scheduled = datetime.fromisoformat(first.event["scheduled"])
        ahead = [(scheduled + timedelta(seconds=n)).isoformat() for n in range(2, 4)]

        def record_fires() -> None:
            with sqlite3.connect(tmp_path / "engine.db", timeout=10) as connection:
                connection.executemany(
                    "INSERT INTO fires (trigger_id, key, execution_id, fired_at) "
                    "VALUES (?, ?, 'exe-elsewhere', 0)",
                    [(trigger.id, key) for key in ahead],
                )

        await anyio.to_thread.run_sync(record_fires)

        def finished_ahead() -> list[str]:
            records = [x.record for x in engine._core.lifecycle.live.values()]
            return [
                r.id
                for r in records
                if r.event and r.event["scheduled"] in ahead and r.status is S.SUCCEEDED
            ]

        async def hold_the_writer() -> None:  # until both have finished, uncommitted
            with anyio.fail_after(10):
                while len(finished_ahead()) < len(ahead):
                    await anyio.sleep(0.05)

        await store._exclusive(hold_the_writer)
        ran = finished_ahead()
        await engine.triggers.deactivate("every-second")
        await handle.wait_for_completion(timeout=10)
        stored = [await store.get(i) for i in ran]
    assert [r.status if r else None for r in stored] == [S.SUCCEEDED, S.SUCCEEDED]
    messages = [r.getMessage() for r in caplog.records if r.name == "triggerfish"]
    assert sum("event='cron_fired_again'" in m for m in messages) == len(ahead)


@pytest.mark.parametrize("policy", ["skip", "run_once", "catch_up"])
async def test_cron_misfires_after_a_real_restart(make_engine: MakeEngine, policy: str) -> None:
    spec = {
        "name": "tick",
        "function": "tick",
        "cron": "* * * * * *",
        "misfire": policy,
        "misfireGrace": 60,
    }
    engine = make_engine()
    engine.function(fns.tick)
    async with engine:
        await engine.triggers.create(spec)
        await anyio.sleep(1.2)
    down_for = 3.0
    await anyio.sleep(down_for)  # about three fire times missed
    restarted_at = datetime.now(UTC)
    again = make_engine()
    again.function(fns.tick)
    async with again:
        await again.triggers.deactivate("tick")  # only what the restart did remains
        handle = again.handle(fns.tick)
        await handle.wait_for_completion(timeout=10)
        stats = again.triggers.get("tick").stats
        scheduled = []
        caught_up = []  # created after the restart for a time before it: the misfire runs
        for execution_id in (await handle.list(limit=100)).execution_ids:
            execution = await again.get(execution_id)
            assert execution.event is not None
            when = datetime.fromisoformat(execution.event["scheduled"])
            scheduled.append(when)
            if execution.created_at >= restarted_at and when < restarted_at:
                caught_up.append(when)
    if policy == "skip":
        assert caught_up == [] and stats.missed >= 2
    elif policy == "run_once":
        assert len(caught_up) == 1 and stats.missed >= 1
        assert caught_up[0] == max(t for t in scheduled if t < restarted_at)
    else:
        assert len(caught_up) >= 2 and stats.missed == 0
    # No fire time ran twice, before or after the restart.
    assert len(scheduled) == len(set(scheduled))


async def test_async_function_emits_events_with_its_lineage(make_engine: MakeEngine) -> None:
    engine = make_engine()
    engine.function(fns.async_announce)
    engine.function(fns.item_id)
    engine.add_trigger({**ON_CREATED, "resource": "Dataset"})
    async with engine:
        caused = await engine.handle(fns.async_announce).call_remote("ds-1")
        assert len(caused) == 1
        assert await engine.handle(fns.item_id).await_result(caused[0]) == "ds-1"
        child = await engine.get(caused[0])
    assert child.lineage == (engine.triggers.get("on-created").id,)


def test_blocking_form_emits_and_manages_triggers(tmp_path: Path) -> None:
    engine = triggerfish.Engine(tmp_path / "blocking.db")
    engine.function(fns.item_id)
    with engine as running:
        created = running.triggers.create(ON_CREATED)
        assert running.triggers.get("on-created").id == created.id
        (execution_id,) = running.emit("Item", "Created", {"id": "b-1"})
        assert running.handle(fns.item_id).await_result(execution_id, timeout=10) == "b-1"
        running.triggers.delete("on-created")
        assert running.emit("Item", "Created", {"id": "b-2"}) == []
