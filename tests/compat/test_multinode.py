"""Multinode's function API, as its documentation uses it, on triggerfish: functions from
tests/compat/multinode_tasks.py (Multinode's own examples, its import changed) invoked on
the engine ``Multinode()`` runs in this process, with real process replicas."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from triggerfish.compat.multinode import (
    Invocation,
    InvocationCancelledError,
    InvocationFailedError,
    InvocationIdsList,
    InvocationStatus,
    InvocationTimedOutError,
)

from ..daemon.helpers import base_env, start_daemon
from .multinode_tasks import (
    cancels_a_child,
    failing,
    my_function,
    run_full_task,
    single_arg_function,
    sleeper,
    slowly_calculate_sum_of_squares,
)


def test_start_then_get_gives_the_status_and_then_the_result() -> None:
    invocation_id = slowly_calculate_sum_of_squares.start(bound=100)
    invocation = slowly_calculate_sum_of_squares.get(invocation_id)
    assert isinstance(invocation, Invocation)
    assert invocation.status in (InvocationStatus.PENDING, InvocationStatus.RUNNING)
    assert invocation.result is None and not invocation.terminated
    # (the documentation says 338350, the sum up to 100; range(100) stops at 99)
    assert slowly_calculate_sum_of_squares.await_result(invocation_id) == 328350
    done = slowly_calculate_sum_of_squares.get(invocation_id)
    assert (done.status, done.result, done.terminated) == (InvocationStatus.SUCCEEDED, 328350, True)
    assert done.error is None and done.num_failed_attempts == 0
    assert slowly_calculate_sum_of_squares(3) == 5  # still a plain function


def test_the_elementary_and_further_methods_as_the_documentation_calls_them() -> None:
    invocation_id = my_function.start(1, 2)
    assert my_function.await_result(invocation_id) == 3
    assert my_function.call_remote(x=1, y=2) == 3
    arguments_list = [(1, 2), (3, 4)]
    assert list(my_function.starmap(arguments_list)) == [3, 7]
    assert list(single_arg_function.map([1, 2])) == [10, 20]


def test_list_pages_with_an_offset_as_the_documentation_loops() -> None:
    started = {my_function.start(i) for i in range(120)}
    for invocation_id in started:
        my_function.await_result(invocation_id)
    seen: list[str] = []
    offset = None
    while True:
        invocations_list = my_function.list(offset=offset)
        assert isinstance(invocations_list, InvocationIdsList)
        seen += invocations_list.invocations_ids  # the documentation's own spelling
        if invocations_list.offset is None:
            break
        offset = invocations_list.offset
    assert started <= set(seen) and len(seen) == len(set(seen))
    assert len(my_function.list().invocation_ids) == 50


def test_failures_cancels_and_timeouts_raise_multinodes_errors() -> None:
    failed_id = failing.start(7)
    with pytest.raises(InvocationFailedError) as failed:
        failing.await_result(failed_id)
    assert "bad 7" in str(failed.value)
    assert failing.get(failed_id).num_failed_attempts == 2  # max_retries=1: two attempts
    assert (failing.get(failed_id).error or "").startswith("ValueError: bad 7")

    slow_id = sleeper.start(0.3)
    time.sleep(0.05)
    sleeper.cancel(slow_id)
    with pytest.raises(InvocationCancelledError):
        sleeper.await_result(slow_id)
    assert sleeper.get(slow_id).status is InvocationStatus.CANCELLED
    with pytest.raises(InvocationTimedOutError):
        sleeper.call_remote(5)


def test_a_function_that_starts_and_gets_others_runs_them_as_nested_invocations() -> None:
    """The documentation's nested example: run_full_task starts run_subtask twice and gets
    their results, each invocation in replicas of its own function."""
    invocation_id = run_full_task.start(x=1)
    full_task_result = run_full_task.get(invocation_id).result  # None while it runs
    assert full_task_result in (None, 13)
    assert run_full_task.await_result(invocation_id) == (1 + 1) ** 2 + (1 + 2) ** 2
    assert cancels_a_child.call_remote(5) == "CANCELLED"  # a nested cancel


APPLICATION = """
# File: application/main.py (Multinode's example; its import changed)

from triggerfish.compat.multinode import get_deployed_function

slowly_calculate_sum_of_squares = get_deployed_function(
    project_name="my_project",
    function_name="slowly_calculate_sum_of_squares"
)

# ... other code ...

# Starts an invocation of slowly_calculate_sum_of_squares, which runs *remotely*.
invocation_id = slowly_calculate_sum_of_squares.start(bound=100)

# ... other code ...
slowly_calculate_sum_of_squares.await_result(invocation_id)  # (what the other code takes)

# Gets the status/result of the remote invocation.
invocation = slowly_calculate_sum_of_squares.get(invocation_id)
print(invocation.status)  # e.g. PENDING, RUNNING, SUCCEEDED
print(invocation.result)  # 338350 (if available), or None (if still running)

# Perform downstream processing locally
half_of_sum_of_squares = invocation.result / 2
print(half_of_sum_of_squares)
"""


def test_the_documentations_application_invokes_the_functions_a_daemon_serves(
    tmp_path: Path,
) -> None:
    """``triggerfish serve --app tests.compat.multinode_tasks:mn`` stands for ``multinode
    deploy``; the application reaches it at MULTINODE_API_URL with MULTINODE_API_KEY."""
    daemon = start_daemon(tmp_path / "daemon", app="tests.compat.multinode_tasks:mn")
    try:
        script = tmp_path / "main.py"
        script.write_text(APPLICATION)
        env = base_env(tmp_path / "nobody.json", MULTINODE_API_URL=daemon.url)
        env["MULTINODE_API_KEY"] = daemon.key
        ran = subprocess.run(
            [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120
        )
    finally:
        assert daemon.stop() == 0
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == ["SUCCEEDED", "328350", "164175.0"]


def test_multinodes_memory_and_version_ids_are_read_or_refused_naming_the_field() -> None:
    from triggerfish import ConfigurationError
    from triggerfish.compat.multinode import _gib, _revision

    assert (_gib("16 GiB"), _gib("512 MiB"), _gib(2)) == (16.0, 0.5, 2.0)
    assert (_revision("ver-3"), _revision("7"), _revision(None)) == (3, 7, None)
    with pytest.raises(ConfigurationError, match="memory: 'lots'"):
        _gib("lots")
    with pytest.raises(ConfigurationError, match="version_id: 'ver-12345x'"):
        _revision("ver-12345x")
