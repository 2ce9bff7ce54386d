"""The engine core and its scheduler on the in-process FakeRuntime: statuses, retries,
timeouts, cancels and replica loss, each without starting a process (and so in milliseconds).
The same behaviours on real replicas are in tests/integration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

import triggerfish
from triggerfish import (
    Engine,
    ExecutionStatus,
    InvocationCancelledError,
    InvocationFailedError,
    InvocationTimedOutError,
    MemoryStore,
    SqliteStore,
)
from triggerfish.engine.events import (
    ExecutionFinished,
    ExecutionStatusChanged,
    ReplicaLost,
    ReplicaStarted,
    TriggerFired,
    TriggerSuppressed,
)
from triggerfish.testing import FakeRuntime

pytestmark = pytest.mark.anyio
S = ExecutionStatus


@pytest.fixture(params=["sqlite", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    return SqliteStore(tmp_path / "core.db") if request.param == "sqlite" else MemoryStore()


def _engine(store: Any, runtime: FakeRuntime, **options: Any) -> Engine:
    return Engine(store, runtime=runtime, kill_grace=0.2, drain_timeout=0.5, **options)


def _statuses(execution: Any) -> list[ExecutionStatus]:
    return [change.status for change in execution.status_log]


async def test_a_run_goes_pending_running_succeeded(store: Any) -> None:
    runtime = FakeRuntime()
    engine = _engine(store, runtime)

    @engine.function
    def add(a: int, b: int) -> int:
        return a + b

    async with engine:
        handle = engine.handle(add)
        execution_id = await handle.start(2, 3)
        assert await handle.await_result(execution_id, timeout=5) == 5
        execution = await handle.get(execution_id)
    assert _statuses(execution) == [S.PENDING, S.RUNNING, S.SUCCEEDED]
    assert execution.attempts == 1 and execution.engine_id == engine.engine_id
    assert runtime.started == 1


async def test_a_failing_attempt_is_retried_until_attempts_run_out(store: Any) -> None:
    engine = _engine(store, FakeRuntime())
    calls: list[int] = []

    @engine.function(max_attempts=3, backoff=0.01)
    def flaky(succeed_on: int) -> int:
        calls.append(1)
        if len(calls) < succeed_on:
            raise ValueError(f"attempt {len(calls)} fails")
        return len(calls)

    async with engine:
        handle = engine.handle(flaky)
        assert await handle.call_remote(3) == 3
        calls.clear()
        with pytest.raises(InvocationFailedError) as caught:
            await handle.call_remote(10)
        failed = await handle.get(caught.value.execution_id or "")
    assert caught.value.error_type == "ValueError"
    assert failed.attempts == 3 and failed.num_failed_attempts == 3
    assert _statuses(failed) == [S.PENDING] + [S.RUNNING, S.PENDING] * 2 + [S.RUNNING, S.FAILED]


async def test_a_timeout_asks_the_replica_to_stop_and_keeps_it(store: Any) -> None:
    runtime = FakeRuntime()
    engine = _engine(store, runtime)

    @engine.function(timeout=0.1)
    async def sleepy(seconds: float) -> str:
        await anyio.sleep(seconds)
        return "woke"

    async with engine:
        handle = engine.handle(sleepy)
        with pytest.raises(InvocationTimedOutError):
            await handle.call_remote(30)
        assert await handle.call_remote(0) == "woke"
    assert runtime.started == 1  # a cooperative function's replica is not replaced


async def test_a_stubborn_execution_gets_its_replica_killed_and_bystanders_requeued(
    store: Any,
) -> None:
    runtime = FakeRuntime(stubborn={"Pair.stuck"})
    engine = _engine(store, runtime)

    @engine.service(concurrency=2)
    class Pair:
        @triggerfish.method(timeout=0.2)
        async def stuck(self) -> None:
            await anyio.sleep(30)

        @triggerfish.method(timeout=30)
        async def steady(self, seconds: float) -> str:
            await anyio.sleep(seconds)
            return "steady"

    events = engine.subscribe([ReplicaLost, ReplicaStarted])  # from the very start
    async with engine:
        steady = engine.handle("Pair.steady")
        bystander = await steady.start(1.0)
        with pytest.raises(InvocationTimedOutError):
            await engine.handle("Pair.stuck").call_remote()
        assert await steady.await_result(bystander, timeout=5) == "steady"
        kinds = [(await events.__anext__()).kind for _ in range(3)]
        requeued = await steady.get(bystander)
    assert kinds == ["ReplicaStarted", "ReplicaLost", "ReplicaStarted"]
    assert runtime.started == 2
    assert requeued.attempts == 1  # the killed replica's attempt did not count against it
    assert any("was replaced" in c.message for c in requeued.status_log)


async def test_cancel_before_and_while_it_runs(store: Any) -> None:
    engine = _engine(store, FakeRuntime())

    @engine.function(concurrency=1)
    async def wait(seconds: float) -> float:
        await anyio.sleep(seconds)
        return seconds

    async with engine:
        handle = engine.handle(wait)
        running = await handle.start(30)
        queued = await handle.start(30)
        with anyio.fail_after(5):
            while (await handle.get(running)).status is not S.RUNNING:
                await anyio.sleep(0.01)
        await handle.cancel(queued)
        await handle.cancel(running)
        for execution_id in (queued, running):
            with pytest.raises(InvocationCancelledError):
                await handle.await_result(execution_id, timeout=5)
        before, during = await handle.get(queued), await handle.get(running)
    assert _statuses(before) == [S.PENDING, S.CANCELLED]
    assert _statuses(during) == [S.PENDING, S.RUNNING, S.CANCELLING, S.CANCELLED]


async def test_a_replica_that_dies_fails_its_attempt_and_a_new_one_takes_over(
    store: Any,
) -> None:
    runtime = FakeRuntime()
    engine = _engine(store, runtime)

    @engine.function(max_attempts=2, backoff=0)
    async def hold(seconds: float) -> str:
        await anyio.sleep(seconds)
        return "held"

    async with engine:
        handle = engine.handle(hold)
        execution_id = await handle.start(30)
        with anyio.fail_after(5):
            while (await handle.get(execution_id)).status is not S.RUNNING:
                await anyio.sleep(0.01)
        runtime.replicas[0].die("crashed for the test")
        with anyio.fail_after(5):
            while (await handle.get(execution_id)).attempts < 2:
                await anyio.sleep(0.01)
        await handle.cancel(execution_id)
        execution = await handle.get(execution_id)
    assert runtime.started == 2
    died = [c.message for c in execution.status_log if "ReplicaDiedError" in c.message]
    assert died and "crashed for the test" in died[0]


async def test_status_changes_are_published_in_order(store: Any) -> None:
    engine = _engine(store, FakeRuntime())

    @engine.function
    def double(x: int) -> int:
        return 2 * x

    async with engine:
        with engine.subscribe([ExecutionStatusChanged], function="double") as events:
            execution_id = await engine.handle(double).start(4)
            changes = [await events.__anext__() for _ in range(2)]
    assert [(c.execution_id, c.previous, c.status) for c in changes] == [  # type: ignore[attr-defined]
        (execution_id, "PENDING", "RUNNING"),
        (execution_id, "RUNNING", "SUCCEEDED"),
    ]


async def test_a_final_status_is_told_again_once_stored_and_waiters_hear_only_that(
    store: Any,
) -> None:
    """ExecutionFinished follows the final ExecutionStatusChanged once the store has it, and
    it is how waiters hear: with it held back, await_result waits on."""
    engine = _engine(store, FakeRuntime())

    @engine.function
    def double(x: int) -> int:
        return 2 * x

    async with engine:
        handle = engine.handle(double)
        with engine.subscribe([ExecutionStatusChanged, ExecutionFinished]) as events:
            execution_id = await handle.start(4)
            seen = [await events.__anext__() for _ in range(3)]
            stored = await store.get(execution_id)
        assert [type(e).__name__ for e in seen] == [
            "ExecutionStatusChanged",
            "ExecutionStatusChanged",
            "ExecutionFinished",
        ]
        assert isinstance(seen[2], ExecutionFinished) and seen[2].status == "SUCCEEDED"
        assert stored is not None and stored.status is S.SUCCEEDED
        assert await handle.await_result(execution_id, timeout=5) == 8

        hub = engine.core.hub
        publish = hub.publish

        def holding_back(event: Any) -> None:
            if not isinstance(event, ExecutionFinished):
                publish(event)

        hub.publish = holding_back  # type: ignore[method-assign]
        held = await handle.start(5)
        with pytest.raises(TimeoutError):
            await handle.await_result(held, timeout=0.5)
        hub.publish = publish  # type: ignore[method-assign]
        hub.publish(ExecutionFinished(at=0.0, execution_id=held, function="double", status="x"))
        assert await handle.await_result(held, timeout=5) == 10


async def test_trigger_events_tell_of_firings_and_suppressions(store: Any) -> None:
    engine = _engine(store, FakeRuntime())

    @engine.function
    def handle_item(item: dict[str, Any]) -> str:
        return str(item["id"])

    engine.add_trigger(
        {
            "name": "on-item",
            "function": "handle_item",
            "resource": "Item",
            "actions": ["Created"],
            "executionMode": "Once",
        }
    )
    async with engine:
        with engine.subscribe([TriggerFired, TriggerSuppressed]) as events:
            (execution_id,) = await engine.emit("Item", "Created", {"id": "i-1"})
            fired = await events.__anext__()
            engine.core.set_inactive(["handle_item"], True)
            assert await engine.emit("Item", "Created", {"id": "i-2"}) == []
            suppressed = await events.__anext__()
        stats = engine.triggers.get("on-item").stats
    assert isinstance(fired, TriggerFired) and fired.execution_id == execution_id
    assert isinstance(suppressed, TriggerSuppressed) and "paused" in suppressed.reason
    assert (stats.fired, stats.suppressed) == (1, 1)
