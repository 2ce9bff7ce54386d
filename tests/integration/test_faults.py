"""Timeouts, cancels, dying replicas and failing services, on real processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

import triggerfish
from triggerfish import (
    ExecutionStatus,
    InvocationCancelledError,
    InvocationFailedError,
    InvocationTimedOutError,
    ServiceState,
)

from . import fns
from .helpers import alive, kill9, wait_for_file

pytestmark = pytest.mark.anyio
S = ExecutionStatus
MakeEngine = Callable[..., triggerfish.Engine]


async def _status(engine: triggerfish.Engine, execution_id: str, status: S) -> None:
    with anyio.fail_after(10):
        while (await engine.get(execution_id)).status is not status:
            await anyio.sleep(0.01)


async def _gone(pid: int, timeout: float = 2) -> bool:
    """Whether the process ``pid`` is gone (or a zombie, which is dead) within ``timeout``."""
    with anyio.move_on_after(timeout):
        while alive(pid):
            await anyio.sleep(0.02)
    return not alive(pid)


def _kill_if_alive(pid: int) -> None:
    """Clean up after a failing test: a process it left must not run on for minutes."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


async def test_timeout_of_a_cooperative_function_keeps_the_replica(make_engine: MakeEngine) -> None:
    engine = make_engine()
    engine.function(fns.sleep_then, timeout=0.3)
    engine.function(fns.pid, name="pid_of", timeout=5)
    async with engine:
        handle = engine.handle(fns.sleep_then)
        with pytest.raises(InvocationTimedOutError, match=r"0\.3s timeout"):
            await handle.call_remote(0.25 * 40)  # sleeps in C: the cancel lands when it wakes
        (execution_id,) = (await handle.list()).execution_ids
        assert (await handle.get(execution_id)).status is S.TIMED_OUT


async def test_timeout_of_a_function_that_ignores_cancellation_kills_its_replica(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    engine = make_engine(kill_grace=0.5)
    engine.function(fns.stubborn, timeout=0.5, concurrency=2)
    async with engine:
        handle = engine.handle(fns.stubborn)
        started = anyio.current_time()
        with pytest.raises(InvocationTimedOutError):
            await handle.call_remote(30)
        assert anyio.current_time() - started < 5  # 0.5 s timeout + 0.5 s grace, not 30 s
        # The replica was replaced: the service still runs work.
        with pytest.raises(InvocationTimedOutError):
            await handle.call_remote(30)
        assert engine.service_status("stubborn").state is ServiceState.ACTIVE


async def test_progress_updates_restart_the_timeout(make_engine: MakeEngine) -> None:
    engine = make_engine()
    engine.function(fns.slow_with_progress, timeout=0.6)
    async with engine:
        handle = engine.handle(fns.slow_with_progress)
        assert await handle.call_remote(1.5, 0.2) == "made it"
        (execution_id,) = (await handle.list()).execution_ids
        execution = await handle.get(execution_id)
    updates = [c for c in execution.status_log if c.message == "still going"]
    assert len(updates) >= 5 and updates[-1].progress == len(updates)
    assert execution.progress == len(updates)


async def test_cancel_queued_execution_never_runs(make_engine: MakeEngine, tmp_path: Path) -> None:
    engine = make_engine()
    engine.function(fns.sleep_then, replicas=1, concurrency=1)
    engine.function(fns.touch_and_return, replicas=1, concurrency=1)
    async with engine:
        blocker = engine.handle(fns.sleep_then)
        busy = await blocker.start(0.5, "busy")
        # touch_and_return has its own replica; make it busy first.
        handle = engine.handle(fns.touch_and_return)
        first = await handle.start(str(tmp_path / "first"), 1)
        second = await handle.start(str(tmp_path / "second"), 2)
        await handle.cancel(second)
        assert (await handle.get(second)).status is S.CANCELLED
        with pytest.raises(InvocationCancelledError):
            await handle.await_result(second)
        assert await handle.await_result(first) == 1
        assert await blocker.await_result(busy) == "busy"
        await handle.cancel(first)  # cancelling a finished execution does nothing
    assert not (tmp_path / "second").exists()


@pytest.mark.parametrize("function", [fns.cooperative, fns.async_cooperative])
async def test_cancel_running_raises_inside_the_function(
    make_engine: MakeEngine, tmp_path: Path, function: Callable[..., object]
) -> None:
    marker = tmp_path / "marker"
    engine = make_engine()
    engine.function(function)
    async with engine:
        handle = engine.handle(function)
        execution_id = await handle.start(str(marker), 30)
        await _status(engine, execution_id, S.RUNNING)
        await anyio.sleep(0.1)
        await handle.cancel(execution_id)
        with pytest.raises(InvocationCancelledError):
            await handle.await_result(execution_id, timeout=10)
        execution = await handle.get(execution_id)
    statuses = [c.status for c in execution.status_log]
    assert statuses[-2:] == [S.CANCELLING, S.CANCELLED]
    assert marker.read_text() == "cancelled"


async def test_cancel_of_a_function_that_ignores_it_kills_the_replica(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine(kill_grace=0.3)
    engine.function(fns.stubborn)
    async with engine:
        handle = engine.handle(fns.stubborn)
        execution_id = await handle.start(30)
        await _status(engine, execution_id, S.RUNNING)
        await handle.cancel(execution_id)
        with pytest.raises(InvocationCancelledError):
            await handle.await_result(execution_id, timeout=5)


async def test_replica_killed_mid_execution_fails_it_and_is_replaced(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    engine = make_engine()
    engine.function(fns.write_pid_then_sleep)
    async with engine:
        handle = engine.handle(fns.write_pid_then_sleep)
        execution_id = await handle.start(str(pid_file), 30)
        pid = int(await wait_for_file(pid_file))
        kill9(pid)
        with pytest.raises(InvocationFailedError) as caught:
            await handle.await_result(execution_id, timeout=10)
        assert caught.value.error_type == "ReplicaDiedError"
        assert "killed by signal 9 (SIGKILL)" in caught.value.error_message
        # A new replica takes the next execution.
        pid_file.unlink()
        next_id = await handle.start(str(pid_file), 0)
        assert await handle.await_result(next_id, timeout=10) == 0
        assert int(pid_file.read_text()) != pid


async def test_replica_killed_mid_execution_is_retried(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    engine = make_engine()
    engine.function(fns.write_pid_then_sleep, max_attempts=2, backoff=0)
    async with engine:
        handle = engine.handle(fns.write_pid_then_sleep)
        execution_id = await handle.start(str(pid_file), 30)
        kill9(int(await wait_for_file(pid_file)))
        assert await handle.await_result(execution_id, timeout=10) == 2  # the attempt number
        execution = await handle.get(execution_id)
    assert execution.attempts == 2 and execution.num_failed_attempts == 1
    assert any("ReplicaDiedError" in c.message for c in execution.status_log)


async def _kill_a_forking_replica(
    engine: triggerfish.Engine, tmp_path: Path, leave_group: bool
) -> tuple[int, float, InvocationFailedError]:
    """Run ``fork_then_sleep`` (its child holds the replica's pipes), kill -9 the replica;
    the child's pid, when the kill was sent, and the error the execution ended with."""
    pids_file = tmp_path / "pids"
    handle = engine.handle(fns.fork_then_sleep)
    execution_id = await handle.start(str(pids_file), 60, leave_group)
    replica_pid, child_pid = map(int, (await wait_for_file(pids_file)).split())
    try:
        assert alive(child_pid)
        kill9(replica_pid)
        killed = anyio.current_time()
        with pytest.raises(InvocationFailedError) as caught:
            await handle.await_result(execution_id, timeout=10)
    except BaseException:
        _kill_if_alive(child_pid)
        raise
    return child_pid, killed, caught.value


async def test_a_forked_child_holding_the_pipes_does_not_hide_the_replicas_death(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    engine = make_engine()
    engine.function(fns.fork_then_sleep, timeout=20)
    async with engine:
        child_pid, killed, failure = await _kill_a_forking_replica(engine, tmp_path, False)
        try:
            # Seen from the process's exit, not when the child that holds its pipes exits,
            # and well before the function's 20 s timeout.
            assert anyio.current_time() - killed < 5
            assert failure.error_type == "ReplicaDiedError"
            assert "killed by signal 9 (SIGKILL)" in failure.error_message
            execution = await engine.handle(fns.fork_then_sleep).get(failure.execution_id)
            assert execution.status is S.FAILED
            assert await _gone(child_pid)  # killed with the replica's process group
        finally:
            _kill_if_alive(child_pid)


async def test_a_child_that_left_the_group_delays_the_replicas_death_two_seconds_at_most(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    engine = make_engine()
    engine.function(fns.fork_then_sleep, timeout=20)
    async with engine:
        child_pid, killed, failure = await _kill_a_forking_replica(engine, tmp_path, True)
        try:
            # Not killed with the group, it keeps the pipes open: reading stops anyway.
            assert anyio.current_time() - killed < 5
            assert failure.error_type == "ReplicaDiedError"
            assert alive(child_pid)
        finally:
            _kill_if_alive(child_pid)


async def test_no_child_of_a_replica_outlives_the_engine(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    pids_file = tmp_path / "pids"
    engine = make_engine()
    engine.function(fns.fork_then_sleep, replicas=1)
    children: list[int] = []
    try:
        async with engine:
            handle = engine.handle(fns.fork_then_sleep)
            # The function returns while its child runs on, holding the replica's pipes: the
            # replica goes on working, and runs the next execution as well.
            for _ in range(2):
                children.append(await handle.call_remote(str(pids_file), 0))
            replica_pid, _ = map(int, pids_file.read_text().split())
            assert all(alive(child) for child in children)
        assert await _gone(replica_pid)
        for child in children:
            assert await _gone(child)
    finally:
        for child in children:
            _kill_if_alive(child)


_ENGINE_SCRIPT = """
import sys

import anyio

import triggerfish
from tests.integration import fns


async def main(store: str, path: str) -> None:
    engine = triggerfish.Engine(store)
    engine.function(fns.fork_then_sleep)
    async with engine:
        await engine.handle(fns.fork_then_sleep).start(path, 300)
        await anyio.sleep(600)


anyio.run(main, sys.argv[1], sys.argv[2])
"""


async def test_no_child_of_a_replica_outlives_an_engine_killed_with_kill_9(
    tmp_path: Path,
) -> None:
    pids_file = tmp_path / "pids"
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    with (tmp_path / "engine.log").open("wb") as log:
        engine = await anyio.open_process(
            [sys.executable, "-c", _ENGINE_SCRIPT, str(tmp_path / "engine.db"), str(pids_file)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
        )
    async with engine:
        try:
            replica_pid, child_pid = map(int, (await wait_for_file(pids_file, 30)).split())
        finally:
            engine.kill()  # kill -9: the engine stops nothing; its replicas see their stdin end
    try:
        assert await _gone(replica_pid, 5)
        assert await _gone(child_pid, 5)
    finally:
        _kill_if_alive(replica_pid)
        _kill_if_alive(child_pid)


async def test_replica_exit_and_segfault_are_reported_with_how_it_died(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine()
    engine.function(fns.exit_hard)
    engine.function(fns.segfault)
    async with engine:
        with pytest.raises(InvocationFailedError, match="exited with code 7"):
            await engine.handle(fns.exit_hard).call_remote(7)
        with pytest.raises(InvocationFailedError) as caught:
            await engine.handle(fns.segfault).call_remote()
        message = caught.value.error_message
        assert "killed by signal 11 (SIGSEGV)" in message
        # The end of the replica's stderr comes along: here, the stack of the crash.
        assert "Segmentation fault" in message and "in segfault" in message


async def test_class_init_runs_once_per_replica(make_engine: MakeEngine, tmp_path: Path) -> None:
    counter = tmp_path / "inits"
    engine = make_engine()
    engine.service(
        fns.Model, replicas=2, concurrency=2, init_params={"counter": str(counter), "scale": 3}
    )
    async with engine:
        handle = engine.handle(fns.Model.predict)
        assert handle.name == "Model.predict"
        results = [r async for r in handle.map(range(40))]
        status = engine.service_status("Model")
    assert [r["value"] for r in results] == [3 * i for i in range(40)]
    init_pids = counter.read_text().split()
    assert len(init_pids) == 2 and len(set(init_pids)) == 2
    assert {str(r["pid"]) for r in results} == set(init_pids)
    assert status.state is ServiceState.ACTIVE and status.replicas == 2


async def test_class_init_failure_puts_service_in_error_and_fails_executions(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine()
    engine.service(fns.BrokenModel)
    async with engine:
        handle = engine.handle("BrokenModel.predict")
        with anyio.fail_after(10):
            with pytest.raises(InvocationFailedError, match="failed to initialize") as caught:
                await handle.call_remote(1)
        status = engine.service_status("BrokenModel")
        # It stays an error, and later executions fail the same way rather than hang.
        with anyio.fail_after(10), pytest.raises(InvocationFailedError, match="weights not found"):
            await handle.call_remote(2)
    assert caught.value.error_type == "ServiceInitError"
    assert "weights not found" in caught.value.error_message
    assert "in __init__" in caught.value.remote_traceback
    assert status.state is ServiceState.ERROR
    assert status.error is not None and "RuntimeError" in status.error.type


async def test_no_replica_outlives_the_engine(make_engine: MakeEngine, tmp_path: Path) -> None:
    engine = make_engine(drain_timeout=0.2)
    engine.function(fns.pid, replicas=2, concurrency=1)
    engine.function(fns.stubborn, replicas=1)
    async with engine:
        pids = {p async for p in engine.handle(fns.pid).map([0.2] * 4)}
        stubborn_id = await engine.handle(fns.stubborn).start(30)
        await _status(engine, stubborn_id, S.RUNNING)
        assert all(alive(p) for p in pids)
    assert len(pids) == 2
    assert not any(alive(p) for p in pids)
    # The execution cut short by the stop is PENDING again, to run at the next start.
    restarted = make_engine()
    restarted.function(fns.stubborn, replicas=1)
    async with restarted:
        execution = await restarted.get(stubborn_id)
        await restarted.handle(fns.stubborn).cancel(stubborn_id)
    statuses = [(c.status, c.message) for c in execution.status_log]
    assert statuses[2] == (
        S.PENDING,
        "the engine stopped while it ran; it runs again at the next start",
    )
    assert execution.attempts <= 1  # the attempt cut short by the stop does not count


async def test_exception_whose_str_raises_still_fails_the_execution(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine()
    engine.function(fns.raise_bad_str, timeout=20)
    async with engine:
        with anyio.fail_after(5), pytest.raises(InvocationFailedError, match="message unavailable"):
            await engine.handle(fns.raise_bad_str).call_remote()


async def test_bad_nested_call_fails_the_function_not_the_engine(make_engine: MakeEngine) -> None:
    engine = make_engine()
    engine.function(fns.add)
    engine.function(fns.nested_bad_timeout)
    async with engine:
        with pytest.raises(InvocationFailedError, match="nested await_result was refused"):
            await engine.handle(fns.nested_bad_timeout).call_remote()
        assert await engine.handle(fns.add).call_remote(1, 1) == 2  # the engine still runs


async def test_cancelling_a_function_that_prints_never_needs_the_kill(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine(kill_grace=5)
    engine.function(fns.print_forever)
    async with engine:
        handle = engine.handle(fns.print_forever)
        for _ in range(10):
            execution_id = await handle.start()
            await _status(engine, execution_id, S.RUNNING)
            await anyio.sleep(0.02)
            await handle.cancel(execution_id)
            with anyio.fail_after(3), pytest.raises(InvocationCancelledError):
                await handle.await_result(execution_id)
            execution = await handle.get(execution_id)
            assert execution.status_log[-1].message == "cancelled while it ran"
