"""The core's behaviours on container replicas, beside the same on process replicas."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import pytest

import triggerfish
from tests.integration import fns as common
from triggerfish import ExecutionStatus, InvocationTimedOutError

from . import fns
from .helpers import containers_of

pytestmark = [pytest.mark.anyio, pytest.mark.slow]
S = ExecutionStatus
MakeEngine = Callable[..., triggerfish.Engine]


async def test_result_logs_and_progress(make_engine: MakeEngine, runtime: str) -> None:
    engine = make_engine()
    engine.function(common.chatty, runtime=runtime)
    async with engine:
        handle = engine.handle(common.chatty)
        execution_id = await handle.start(21)
        assert await handle.await_result(execution_id, timeout=60) == 42
        execution = await handle.get(execution_id)
    streams = {entry.stream: entry.text for entry in execution.logs}
    assert streams["stdout"] == "stdout says 21\n"
    assert streams["stderr"] == "stderr says 21\n"
    assert "logging says 21" in streams["logging"]
    progress = [(c.progress, c.message) for c in execution.status_log if c.message]
    assert (50, "half way") in progress


async def test_timeout_of_a_cooperative_function_keeps_its_replica(
    make_engine: MakeEngine, runtime: str
) -> None:
    engine = make_engine()
    engine.function(fns.sleep_where, runtime=runtime, timeout=0.5)
    async with engine:
        handle = engine.handle(fns.sleep_where)
        before = await handle.call_remote(0)
        with pytest.raises(InvocationTimedOutError):
            await handle.call_remote(30)
        assert await handle.call_remote(0) == before


async def test_timeout_of_a_stubborn_function_replaces_its_replica(
    make_engine: MakeEngine, runtime: str
) -> None:
    engine = make_engine()
    engine.function(common.stubborn, runtime=runtime, timeout=0.5)
    engine.function(fns.where, runtime=runtime)
    async with engine:
        handle = engine.handle(common.stubborn)
        execution_id = await handle.start(60)
        with pytest.raises(InvocationTimedOutError):
            await handle.await_result(execution_id, timeout=60)
        assert (await handle.get(execution_id)).status is S.TIMED_OUT
        # Killed after the kill grace and replaced: the service serves again.
        with anyio.fail_after(60):
            while engine.service_status("stubborn").replicas < 1:
                await anyio.sleep(0.05)


async def test_cancel_is_raised_inside_the_function(make_engine: MakeEngine, runtime: str) -> None:
    engine = make_engine()
    engine.function(fns.hears_cancel, runtime=runtime)
    async with engine:
        handle = engine.handle(fns.hears_cancel)
        execution_id = await handle.start(30)
        with anyio.fail_after(60):
            while (await handle.get(execution_id)).status is not S.RUNNING:
                await anyio.sleep(0.02)
        await anyio.sleep(0.2)  # into its sleep
        await handle.cancel(execution_id)
        with pytest.raises(triggerfish.InvocationCancelledError):
            await handle.await_result(execution_id, timeout=30)
        execution = await handle.get(execution_id)
    assert execution.status is S.CANCELLED
    assert any(e.text == "saw the cancel\n" for e in execution.logs)


async def test_nested_calls(make_engine: MakeEngine, runtime: str) -> None:
    engine = make_engine()
    engine.function(common.add, runtime=runtime, concurrency=2)
    engine.function(common.parent_calls_child, runtime=runtime)
    engine.function(common.async_parent, runtime=runtime)
    async with engine:
        outcome = await engine.handle(common.parent_calls_child).call_remote(5)
        assert outcome["started"] == 6 and outcome["called"] == 7
        assert (await engine.get(outcome["child"])).parent_id == outcome["me"]
        assert await engine.handle(common.async_parent).call_remote(1) == 11


async def test_init_runs_once_per_replica(make_engine: MakeEngine, runtime: str) -> None:
    engine = make_engine()
    engine.service(fns.Counter, init_params={"label": "hi"}, runtime=runtime, replicas=2)
    async with engine:
        handle = engine.handle("Counter.inits")
        seen = [r async for r in handle.starmap([()] * 20)]
    assert all(r["inits"] == 1 and r["label"] == "hi" for r in seen)
    assert len({r["where"] for r in seen}) in (1, 2)


async def test_autoscaling_to_zero(make_engine: MakeEngine, runtime: str) -> None:
    engine = make_engine()
    engine.function(fns.where, runtime=runtime, replicas=(0, 1), idle_timeout=0.5)
    async with engine:
        assert engine.service_status("where").replicas == 0
        await engine.handle(fns.where).call_remote()
        with anyio.fail_after(30):
            while engine.service_status("where").replicas:
                await anyio.sleep(0.05)
        if runtime == "docker":
            with anyio.fail_after(30):
                while await containers_of(engine.engine_id):
                    await anyio.sleep(0.1)
