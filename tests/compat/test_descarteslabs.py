"""Descartes Labs' Batch Compute API on triggerfish: its documentation's Function and Jobs
(its import changed), on the engine in this program, and a function a daemon serves."""

from __future__ import annotations

from pathlib import Path

import pytest

from triggerfish.compat.descarteslabs import Function, FunctionStatus, Job, JobStatus

from ..daemon.helpers import start_daemon
from .descartes_functions import add, fails_once, hello_world, sleepy


def test_the_documentations_function_runs_its_jobs() -> None:
    async_func = Function(
        hello_world,
        name="my-compute-hello",
        image="python3.10:latest",
        cpus=1,
        memory=2048,
        maximum_concurrency=10,
        timeout=600,
        retry_count=3,
    )

    async_func.save()

    job = async_func("Hello World")
    jobs = async_func.map(["H", "e", "l", "l", "o"])

    async_func.wait_for_completion()
    assert job.status is JobStatus.SUCCESS and job.result() == "Hello World"
    assert job.log(timestamps=False) == "Hello World"
    assert job.args == ["Hello World"] and job.function.name == "my-compute-hello"
    assert [j.result() for j in jobs] == list("Hello")
    assert sorted(async_func.results()) == sorted(["Hello World", *"Hello"])
    assert async_func.job_statistics == {
        "pending": 0,
        "running": 0,
        "success": 6,
        "failure": 0,
        "timeout": 0,
    }
    assert async_func.status is FunctionStatus.SUCCESS
    assert Function.get("my-compute-hello") is async_func
    assert "my-compute-hello" in [f.name for f in Function.list()]
    listed = {j.id for j in Job.list("my-compute-hello")}
    assert listed == {job.id, *(j.id for j in jobs)}
    assert Job.get(job.id).result() == "Hello World"


def test_failed_jobs_run_again_and_a_job_past_its_timeout_times_out(tmp_path: Path) -> None:
    flaky = Function(fails_once, name="dl-fails-once", retry_count=0)
    jobs = flaky.map([str(tmp_path / "a"), str(tmp_path / "b")])
    flaky.wait_for_completion()
    assert [j.status for j in jobs] == [JobStatus.FAILURE] * 2
    assert jobs[0].result() is None
    assert flaky.job_statistics["failure"] == 2
    again = flaky.rerun()
    assert {j.id for j in again} == {j.id for j in jobs}  # the same Jobs, run again
    flaky.wait_for_completion()
    assert [j.result() for j in jobs] == ["ok", "ok"]

    slow = Function(sleepy, name="dl-sleepy", timeout=1)
    late = slow(30)
    late.wait_for_completion()
    assert late.status is JobStatus.TIMEOUT

    summed = Function(add, name="dl-add").map([1, 2], iterargs=[[10, 20]])
    for j in summed:
        j.wait_for_completion()
    assert [j.result() for j in summed] == [11, 22]


def test_a_function_a_daemon_serves_is_reached_by_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = start_daemon(tmp_path)
    try:
        monkeypatch.setenv("TRIGGERFISH_API_URL", daemon.url)
        monkeypatch.setenv("TRIGGERFISH_API_KEY", daemon.key)
        chatty = Function.get("chatty")
        job = chatty(3, 0.01)
        job.wait_for_completion()
        assert job.status is JobStatus.SUCCESS
        assert job.log(timestamps=False) == "line 0\nline 1\nline 2"
        assert job.id in {j.id for j in Job.list("chatty")}
        assert "chatty" in [f.name for f in Function.list()]
    finally:
        assert daemon.stop() == 0
