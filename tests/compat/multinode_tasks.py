"""Functions written for Multinode, as its documentation writes them: only the import line is
triggerfish's. The replicas import this module by name, as they would ``tasks/main.py``."""

from __future__ import annotations

import time

from triggerfish.compat.multinode import InvocationCancelledError, Multinode

mn = Multinode()


@mn.function()
def slowly_calculate_sum_of_squares(bound):
    sum = 0
    for i in range(bound):
        sum += i * i
        time.sleep(0.01)  # (the documentation sleeps a second a step)
    return sum


@mn.function(cpu=4.0, memory="16 GiB")
def run_subtask(y):
    return y * y


@mn.function(cpu=0.1, memory="1 GiB")
def run_full_task(x):
    y_1 = x + 1
    y_2 = x + 2

    # Starts two invocations of run_subtask, which run in a *separate containers*
    subtask_invocation_id_1 = run_subtask.start(y=y_1)
    subtask_invocation_id_2 = run_subtask.start(y=y_2)

    run_subtask.await_result(subtask_invocation_id_1)  # (the documentation's "more code")
    run_subtask.await_result(subtask_invocation_id_2)

    # Gets the results of the two invocations of run_subtask (if available)
    subtask_result_1 = run_subtask.get(subtask_invocation_id_1).result
    subtask_result_2 = run_subtask.get(subtask_invocation_id_2).result

    listed = run_subtask.list().invocation_ids
    assert subtask_invocation_id_1 in listed and subtask_invocation_id_2 in listed
    return subtask_result_1 + subtask_result_2


@mn.function()
def my_function(x, y=0):
    return x + y


@mn.function()
def single_arg_function(x):
    return x * 10


@mn.function(max_retries=1)
def failing(x):
    raise ValueError(f"bad {x}")


@mn.function(timeout=0.5)
def sleeper(seconds):
    time.sleep(seconds)
    return seconds


@mn.function()
def cancels_a_child(seconds):
    child = sleeper.start(seconds)
    sleeper.cancel(child)
    try:
        sleeper.await_result(child)
    except InvocationCancelledError:
        return sleeper.get(child).status.value
    return "not cancelled"
