"""Executions on real process replicas with a real sqlite file (and the memory store)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import anyio
import pytest

import triggerfish
from triggerfish import (
    EngineClosedError,
    ExecutionStatus,
    InvocationFailedError,
    SerializationError,
    Store,
    UnknownFunctionError,
)

from . import fns
from .helpers import all_ids

pytestmark = pytest.mark.anyio
S = ExecutionStatus


async def test_call_remote_stores_status_log_logs_and_result(
    store_factory: Callable[[], Store],
) -> None:
    engine = triggerfish.Engine(store_factory())
    engine.function(fns.chatty)
    async with engine:
        handle = engine.handle(fns.chatty)
        assert await handle.call_remote(21) == 42
        (execution_id,) = (await handle.list()).execution_ids
        execution = await handle.get(execution_id)
    assert execution.status is S.SUCCEEDED and execution.terminated
    assert execution.result == 42
    assert execution.attempts == 1 and execution.num_failed_attempts == 0
    assert [c.status for c in execution.status_log] == [
        S.PENDING,
        S.RUNNING,
        S.RUNNING,
        S.SUCCEEDED,
    ]
    progress = execution.status_log[2]
    assert (progress.progress, progress.message) == (50, "half way")
    times = [c.time for c in execution.status_log]
    assert times == sorted(times)
    assert execution.duration is not None and execution.duration < 5
    streams = {entry.stream: entry.text for entry in execution.logs}
    assert streams["stdout"] == "stdout says 21\n"
    assert streams["stderr"] == "stderr says 21\n"
    assert "logging says 21" in streams["logging"]


async def test_decorated_function_stays_callable_locally() -> None:
    engine = triggerfish.Engine()
    assert engine.function(fns.chatty) is fns.chatty
    assert fns.chatty(2) == 4  # the progress update is a no-op outside an execution
    assert triggerfish.current_context().execution_id is None


async def test_failure_carries_remote_type_message_and_traceback(
    make_engine: Callable[..., triggerfish.Engine],
) -> None:
    engine = make_engine()
    engine.function(fns.fail)
    async with engine:
        with pytest.raises(InvocationFailedError) as caught:
            await engine.handle("fail").call_remote("it broke")
        execution = await engine.get(caught.value.execution_id or "")
    assert caught.value.error_type == "ValueError"
    assert caught.value.error_message == "it broke"
    assert "in fail" in caught.value.remote_traceback
    assert execution.status is S.FAILED
    assert execution.error is not None and execution.error.type == "ValueError"


async def test_retries_with_backoff_until_success(
    make_engine: Callable[..., triggerfish.Engine], tmp_path: Path
) -> None:
    engine = make_engine()
    engine.function(fns.fail_until, max_attempts=3, backoff=0.2)
    async with engine:
        handle = engine.handle(fns.fail_until)
        assert await handle.call_remote(str(tmp_path / "calls"), 3) == 3
        (execution_id,) = (await handle.list()).execution_ids
        execution = await handle.get(execution_id)
    assert execution.status is S.SUCCEEDED
    assert execution.attempts == 3 and execution.num_failed_attempts == 2
    retries = [c for c in execution.status_log if c.status is S.PENDING][1:]
    assert len(retries) == 2 and "call 1 fails" in retries[0].message
    runs = [c.time for c in execution.status_log if c.status is S.RUNNING]
    assert runs[1] - runs[0] >= timedelta(seconds=0.2)  # backoff 0.2 s, then 0.4 s
    assert runs[2] - runs[1] >= timedelta(seconds=0.4)


async def test_retries_stop_at_max_attempts(
    make_engine: Callable[..., triggerfish.Engine], tmp_path: Path
) -> None:
    engine = make_engine()
    engine.function(fns.fail_until, max_attempts=2, backoff=0)
    async with engine:
        handle = engine.handle(fns.fail_until)
        with pytest.raises(InvocationFailedError, match="call 2 fails"):
            await handle.call_remote(str(tmp_path / "calls"), 10)
    assert len(list((tmp_path / "calls").iterdir())) == 2


async def test_unpicklable_input_is_refused_and_nothing_is_stored(
    make_engine: Callable[..., triggerfish.Engine],
) -> None:
    engine = make_engine()
    engine.function(fns.add)
    async with engine:
        handle = engine.handle(fns.add)
        with pytest.raises(SerializationError, match="argument 1 of add"):
            await handle.start(1, threading.Lock())
        with pytest.raises(SerializationError, match="argument 0"):
            [r async for r in handle.map([1, 2, threading.Lock()])]
        assert (await handle.list()).execution_ids == ()
        assert (await handle.statistics())[S.PENDING] == 0


async def test_unknown_function_and_closed_engine_errors(
    make_engine: Callable[..., triggerfish.Engine],
) -> None:
    engine = make_engine()
    engine.function(fns.add)
    with pytest.raises(UnknownFunctionError, match="'nope'"):
        engine.handle("nope")
    handle = engine.handle(fns.add)
    with pytest.raises(EngineClosedError):
        await handle.start(1, 2)
    async with engine:
        assert await handle.call_remote(1, 2) == 3
    with pytest.raises(EngineClosedError):
        await handle.start(1, 2)


async def test_map_and_starmap_yield_in_input_order(
    make_engine: Callable[..., triggerfish.Engine],
) -> None:
    engine = make_engine()
    engine.function(fns.sleep_then, replicas=2, concurrency=4)
    async with engine:
        handle = engine.handle(fns.sleep_then)
        # Later inputs finish first; results still come in input order.
        inputs = [(0.05 * (8 - i), i) for i in range(8)]
        assert [r async for r in handle.starmap(inputs)] == list(range(8))
        assert [r async for r in handle.map([0.0, 0.0])] == [None, None]


async def test_list_pages_newest_first_with_status_filter(
    make_engine: Callable[..., triggerfish.Engine],
) -> None:
    engine = make_engine()
    engine.function(fns.add, replicas=1, concurrency=8)
    async with engine:
        handle = engine.handle(fns.add)
        ids = [await handle.start(i, 0) for i in range(7)]
        await handle.wait_for_completion(timeout=20)
        assert await all_ids(handle, page_size=3) == ids[::-1]
        assert len((await handle.list(status="SUCCEEDED", limit=50)).execution_ids) == 7
        assert (await handle.list(status=[S.FAILED])).execution_ids == ()


async def test_a_thousand_executions_all_accounted_for(
    store_factory: Callable[[], Store],
) -> None:
    engine = triggerfish.Engine(store_factory())
    engine.function(fns.add, replicas=2, concurrency=16)
    async with engine:
        handle = engine.handle(fns.add)
        ids = await handle.start_many(((i, i), {}) for i in range(1000))
        await handle.wait_for_completion(timeout=60)
        stats = await handle.statistics()
        results = await handle.results()
        listed = await all_ids(handle, page_size=400)
    assert stats[S.SUCCEEDED] == 1000 and sum(stats.values()) == 1000
    assert sorted(results) == [2 * i for i in range(1000)]
    assert sorted(listed) == sorted(ids) and len(set(listed)) == 1000


async def test_rerun_failed_executions(
    make_engine: Callable[..., triggerfish.Engine], tmp_path: Path
) -> None:
    flag = tmp_path / "flag"
    flag.touch()
    engine = make_engine()
    engine.function(fns.fail_if_exists)
    async with engine:
        handle = engine.handle(fns.fail_if_exists)
        ids = [await handle.start(str(flag)) for _ in range(3)]
        await handle.wait_for_completion(timeout=20)
        assert (await handle.statistics())[S.FAILED] == 3
        flag.unlink()
        assert sorted(await handle.rerun()) == sorted(ids)
        await handle.wait_for_completion(timeout=20)
        assert (await handle.statistics())[S.SUCCEEDED] == 3
        execution = await handle.get(ids[0])
        assert execution.status is S.SUCCEEDED and execution.error is None
        assert any(c.message == "rerun" for c in execution.status_log)
        assert await handle.results() == ["ok", "ok", "ok"]
        assert await handle.rerun() == []


async def test_generator_shows_latest_yield_while_running(
    make_engine: Callable[..., triggerfish.Engine], tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    engine = make_engine()
    engine.function(fns.counting_generator)
    async with engine:
        handle = engine.handle(fns.counting_generator)
        execution_id = await handle.start(str(gate))
        with anyio.fail_after(10):
            while (await handle.get(execution_id)).result != 1:
                await anyio.sleep(0.02)
        assert (await handle.get(execution_id)).status is S.RUNNING
        gate.touch()
        assert await handle.await_result(execution_id, timeout=10) == 2


async def test_await_result_timeout_is_the_callers(
    make_engine: Callable[..., triggerfish.Engine],
) -> None:
    engine = make_engine()
    engine.function(fns.sleep_then)
    async with engine:
        handle = engine.handle(fns.sleep_then)
        execution_id = await handle.start(1.0, "late")
        with pytest.raises(TimeoutError):
            await handle.await_result(execution_id, timeout=0.1)
        assert await handle.await_result(execution_id, timeout=10) == "late"


async def test_env_and_secrets_reach_the_replica(
    make_engine: Callable[..., triggerfish.Engine],
) -> None:
    engine = make_engine()
    engine.function(fns.read_env, env={"PLAIN": "visible"}, secrets={"TOKEN": "s3cret"})
    async with engine:
        handle = engine.handle(fns.read_env)
        assert await handle.call_remote("PLAIN") == "visible"
        assert await handle.call_remote("TOKEN") == "s3cret"


async def test_context_knows_its_execution(make_engine: Callable[..., triggerfish.Engine]) -> None:
    engine = make_engine()
    engine.function(fns.whoami)
    async with engine:
        handle = engine.handle(fns.whoami)
        execution_id = await handle.start()
        info = await handle.await_result(execution_id)
    assert info == {"id": execution_id, "attempt": 1, "function": "whoami"}


async def test_a_replica_keeps_what_it_loaded_out_of_full_collections(
    make_engine: Callable[..., triggerfish.Engine],
) -> None:
    """Modules and the function's state are frozen once loaded, so the collector's full
    passes under load walk only what executions made, not the whole heap."""
    engine = make_engine()
    engine.function(fns.frozen_objects)
    async with engine:
        frozen = await engine.handle(fns.frozen_objects).call_remote()
    assert frozen > 10_000  # the interpreter, triggerfish's runner and the tests' modules


async def test_structured_log_events(
    make_engine: Callable[..., triggerfish.Engine], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="triggerfish")
    engine = make_engine()
    engine.function(fns.exit_hard)
    async with engine:
        with pytest.raises(InvocationFailedError):
            await engine.handle(fns.exit_hard).call_remote(3)
    messages = [r.getMessage() for r in caplog.records if r.name == "triggerfish"]
    assert any(m.startswith("event='engine_started'") for m in messages)
    assert any(m.startswith("event='replica_started'") and "replica_id=" in m for m in messages)
    assert any(m.startswith("event='replica_died'") for m in messages)
    assert any(m.startswith("event='engine_stopped'") for m in messages)


def test_blocking_form(tmp_path: Path) -> None:
    engine = triggerfish.Engine(tmp_path / "blocking.db")
    engine.function(fns.add, replicas=2, concurrency=2)
    with engine as running:
        handle = running.handle(fns.add)
        assert handle.call_remote(2, 3) == 5
        execution_id = handle.start(1, 1)
        assert handle.await_result(execution_id, timeout=10) == 2
        assert handle.get(execution_id).status is S.SUCCEEDED
        assert list(handle.starmap([(1, 2), (3, 4)])) == [3, 7]
        assert list(handle.map([])) == []
        handle.wait_for_completion(timeout=10)
        assert handle.statistics()[S.SUCCEEDED] == 4
        assert sorted(handle.results()) == [2, 3, 5, 7]
        assert len(handle.list().execution_ids) == 4
    with pytest.raises(EngineClosedError):
        running.handle(fns.add)
