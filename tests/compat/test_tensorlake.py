"""Tensorlake's applications, functions and classes on triggerfish: an application written
for Tensorlake (tests/compat/tensorlake_app.py, its import changed) run on the engine in
this process and on a daemon, each function and class in replicas of its own."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from triggerfish import InvocationFailedError
from triggerfish.compat.tensorlake import run_local_application, run_remote_application

from ..daemon.helpers import start_daemon
from .tensorlake_app import Greeter, fails, greet, say_hello


def _check(output: dict, request_id: str) -> None:
    assert output["hello"]["text"] == "Hello, world!"
    assert output["shout"]["text"] == "HELLO WORLD"
    assert output["loaded_here"] is False  # the class's __init__ ran in its own replica only
    # One request: the same id in every call of it, the application's own execution's.
    assert output["request_id"] == request_id
    assert output["hello"]["request_id"] == output["shout"]["request_id"] == request_id
    # Each function and the class ran in a replica of its own, none in this process.
    pids = {output["pid"], output["hello"]["pid"], output["shout"]["pid"]}
    assert len(pids) == 3 and os.getpid() not in pids


def test_an_application_runs_locally_its_calls_nested_in_their_own_replicas() -> None:
    request = run_local_application(greet, "world")
    _check(request.output(), request.id)
    again = run_local_application("greet", "world")  # by name too; a new request
    assert again.id != request.id
    assert again.output()["shout"]["pid"] == request.output()["shout"]["pid"]  # __init__ once


def test_outside_a_running_function_a_call_runs_here_as_a_plain_call() -> None:
    hello = say_hello("here")
    assert hello["text"] == "Hello, here!" and hello["pid"] == os.getpid()
    assert hello["request_id"].startswith("local-")
    assert Greeter().shout("here")["pid"] == os.getpid()


def test_a_failure_in_a_nested_call_fails_the_request() -> None:
    with pytest.raises(InvocationFailedError, match="no such luck"):
        run_local_application(fails, "no such luck")


def test_a_daemon_serves_the_application_at_its_http_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = start_daemon(tmp_path, app="tests.compat.tensorlake_app:greet")
    try:
        monkeypatch.setenv("TENSORLAKE_API_URL", daemon.url)
        monkeypatch.setenv("TENSORLAKE_API_KEY", daemon.key)
        request = run_remote_application("greet", "world")
        _check(request.output(), request.id)
        with daemon.http() as http:  # POST /applications/{name}, as Tensorlake names it
            answer = http.post("/applications/greet", json="world")
            assert answer.status_code == 200
            _check(answer.json(), answer.headers["X-Request-Id"])
    finally:
        assert daemon.stop() == 0
