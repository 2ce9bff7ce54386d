"""Caps, fairness, autoscaling and nested invocations."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import pytest

import triggerfish
from triggerfish import ExecutionStatus, ServiceState

from . import fns
from .helpers import max_overlap

pytestmark = pytest.mark.anyio
MakeEngine = Callable[..., triggerfish.Engine]


async def test_replicas_times_concurrency_is_never_exceeded(make_engine: MakeEngine) -> None:
    engine = make_engine()
    engine.function(fns.interval, replicas=2, concurrency=2)
    async with engine:
        intervals = [i async for i in engine.handle(fns.interval).map([0.15] * 16)]
    assert max_overlap(intervals) == 4  # all four slots used, never a fifth


async def test_function_max_concurrency_caps_across_replicas(make_engine: MakeEngine) -> None:
    engine = make_engine()
    engine.function(fns.interval, replicas=2, concurrency=4, max_concurrency=3)
    async with engine:
        intervals = [i async for i in engine.handle(fns.interval).map([0.1] * 12)]
    assert max_overlap(intervals) == 3


async def test_capped_function_does_not_block_its_service_neighbours(
    make_engine: MakeEngine, tmp_path: object
) -> None:
    counter = str(tmp_path) + "/inits"  # type: ignore[operator]

    class Pair(fns.Model):
        @triggerfish.method(max_concurrency=1)
        def slow(self, seconds: float) -> float:
            import time

            time.sleep(seconds)
            return seconds

    engine = make_engine()
    engine.service(Pair, concurrency=4, init_params={"counter": counter})
    async with engine:
        slow = engine.handle("Pair.slow")
        fast = engine.handle("Pair.predict")
        slow_ids = await slow.start_many(((1.5,), {}) for _ in range(3))
        assert (await fast.call_remote(2))["value"] == 2
        # Had it queued behind the slow ones (one at a time, 1.5 s each), the last of them
        # would have run before it; it cannot have started yet.
        assert (await slow.get(slow_ids[-1])).status is triggerfish.ExecutionStatus.PENDING
        for execution_id in slow_ids:
            await slow.await_result(execution_id, timeout=20)


async def test_a_flooded_service_does_not_starve_another(make_engine: MakeEngine) -> None:
    engine = make_engine()
    engine.function(fns.sleep_then, replicas=1, concurrency=2)
    engine.function(fns.add, replicas=1, concurrency=1)
    async with engine:
        flood = engine.handle(fns.sleep_then)
        await flood.start_many(((0.05,), {}) for _ in range(300))  # 7.5 s of queued work
        started = anyio.current_time()
        for i in range(5):
            assert await engine.handle(fns.add).call_remote(i, i) == 2 * i
        assert anyio.current_time() - started < 2
        assert engine.service_status("sleep_then").queued > 200


async def test_autoscaling_up_on_queue_depth_and_down_to_zero(make_engine: MakeEngine) -> None:
    engine = make_engine()
    engine.function(fns.interval, replicas=(0, 3), concurrency=1, idle_timeout=0.5)
    async with engine:
        status = engine.service_status("interval")
        assert status.replicas == 0
        handle = engine.handle(fns.interval)
        intervals = [i async for i in handle.map([0.4] * 9)]
        assert max_overlap(intervals) == 3  # scaled to its max, not past it
        assert engine.service_status("interval").replicas == 3
        with anyio.fail_after(5):
            while engine.service_status("interval").replicas:
                await anyio.sleep(0.05)
        # From zero, the next execution starts a replica again.
        assert len(await handle.call_remote(0)) == 2


async def test_min_replicas_are_kept_warm(make_engine: MakeEngine) -> None:
    engine = make_engine()
    engine.function(fns.pid, replicas=(1, 3), idle_timeout=0.3)
    async with engine:
        with anyio.fail_after(5):
            while engine.service_status("pid").state is not ServiceState.ACTIVE:
                await anyio.sleep(0.02)
        pids = {p async for p in engine.handle(fns.pid).map([0.3] * 6)}
        assert len(pids) == 3
        await anyio.sleep(1.0)  # all three idle past the timeout at about the same time
        assert engine.service_status("pid").replicas == 1


async def test_nested_invocations_are_recorded_with_their_parent(make_engine: MakeEngine) -> None:
    engine = make_engine()
    engine.function(fns.add, replicas=1, concurrency=2)
    engine.function(fns.parent_calls_child)
    engine.function(fns.async_parent)
    engine.function(fns.fail)
    engine.function(fns.parent_of_failing_child)
    async with engine:
        outcome = await engine.handle(fns.parent_calls_child).call_remote(5)
        assert outcome["started"] == 6 and outcome["called"] == 7
        child = await engine.get(outcome["child"])
        assert child.parent_id == outcome["me"]
        children = (await engine.handle(fns.add).list()).execution_ids
        assert len(children) == 2
        for child_id in children:
            assert (await engine.get(child_id)).parent_id == outcome["me"]
        assert await engine.handle(fns.async_parent).call_remote(1) == 11
        message = await engine.handle(fns.parent_of_failing_child).call_remote()
        assert message.startswith("InvocationFailedError: ") and "child broke" in message


async def test_nested_call_of_unknown_function_fails_the_parent_clearly(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine()
    engine.function(fns.parent_calls_child)
    async with engine:
        with pytest.raises(triggerfish.InvocationFailedError, match="no function named 'add'"):
            await engine.handle(fns.parent_calls_child).call_remote(1)
        stats = await engine.handle(fns.parent_calls_child).statistics()
    assert stats[ExecutionStatus.FAILED] == 1
