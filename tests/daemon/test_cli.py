"""The ``triggerfish`` command as a user runs it, a subprocess against a real daemon."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from .helpers import Daemon, cli, cli_process, poll, wait_finished


def _start(daemon: Daemon, function: str, *args: object) -> str:
    with daemon.http() as http:
        answer = http.post(f"/functions/{function}/executions", json={"args": list(args)})
    assert answer.status_code == 201, answer.text
    execution_id: str = answer.json()["execution_ids"][0]
    return execution_id


def _status(daemon: Daemon, execution_id: str) -> str:
    with daemon.http() as http:
        status: str = http.get(f"/executions/{execution_id}").json()["status"]
    return status


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines
    return lines[0]


def test_status(daemon: Daemon) -> None:
    result = cli(daemon, "status")
    assert result.returncode == 0, result.stderr
    assert f"daemon at {daemon.url}: ok" in result.stdout
    assert "add" in result.stdout and "Active" in result.stdout
    as_json = json.loads(cli(daemon, "status", "--json").stdout)
    assert as_json["health"] == {"status": "ok"}
    assert "add" in {s["name"] for s in as_json["services"]}


def test_functions_list(daemon: Daemon) -> None:
    result = cli(daemon, "functions", "list")
    assert result.returncode == 0, result.stderr
    assert "adds two numbers" in result.stdout
    for name in ("add", "slow", "boom", "chatty"):
        assert name in result.stdout
    listed = json.loads(cli(daemon, "functions", "list", "--json").stdout)
    assert {f["name"] for f in listed} >= {"add", "slow", "boom", "chatty", "echo"}


def test_call_prints_the_result(daemon: Daemon) -> None:
    result = cli(daemon, "call", "add", "--args", "[1, 2]")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == 3
    named = cli(daemon, "call", "add", "--args", "[1]", "--kwargs", '{"b": 41}')
    assert json.loads(named.stdout) == 42
    listed = cli(daemon, "call", "slow", "--args", '[0, {"a": [1, "x"]}]')
    assert json.loads(listed.stdout) == {"a": [1, "x"]}


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--args", "[1,"), "--args is not JSON"),
        (("--args", '{"a": 1}'), "--args must be a JSON array"),
        (("--kwargs", "[1]"), "--kwargs must be a JSON object"),
        (("--kwargs", "{b: 1}"), "--kwargs is not JSON"),
    ],
)
def test_call_with_bad_json_is_one_line(daemon: Daemon, args: tuple[str, ...], says: str) -> None:
    assert says in _one_error_line(cli(daemon, "call", "add", *args))


def test_call_of_a_failing_function_is_one_line(daemon: Daemon) -> None:
    line = _one_error_line(cli(daemon, "call", "boom", "--args", '["it broke"]'))
    assert "ValueError" in line and "it broke" in line
    assert "triggerfish executions describe exe-" in line


def test_call_of_an_unknown_function_is_one_line(daemon: Daemon) -> None:
    line = _one_error_line(cli(daemon, "call", "no_such_function"))
    assert "no_such_function" in line


def test_call_of_a_result_the_cli_cannot_unpickle_is_one_line(daemon: Daemon) -> None:
    _one_error_line(cli(daemon, "call", "fragile"))


def test_executions_list_and_describe(daemon: Daemon) -> None:
    execution_id = _start(daemon, "square", 9)
    wait_finished(daemon, execution_id)
    listed = cli(daemon, "executions", "list", "--function", "square", "--status", "succeeded")
    assert listed.returncode == 0, listed.stderr
    assert execution_id in listed.stdout and "SUCCEEDED" in listed.stdout
    page = json.loads(cli(daemon, "executions", "list", "--json", "--limit", "1000").stdout)
    assert execution_id in [e["id"] for e in page["executions"]]
    described = cli(daemon, "executions", "describe", execution_id)
    assert described.returncode == 0, described.stderr
    body = json.loads(described.stdout)
    assert body["id"] == execution_id and body["status"] == "SUCCEEDED" and body["result"] == 81
    line = _one_error_line(cli(daemon, "executions", "describe", "exe-nope"))
    assert "exe-nope" in line


def test_executions_list_pages(daemon: Daemon) -> None:
    ids = [_start(daemon, "square", i) for i in range(3)]
    first = cli(daemon, "executions", "list", "--function", "square", "--limit", "2")
    assert "more: --offset " in first.stdout
    offset = first.stdout.split("more: --offset ")[1].split()[0]
    second = cli(
        daemon, "executions", "list", "--function", "square", "--limit", "2", "--offset", offset
    )
    assert second.returncode == 0, second.stderr
    shown = [i for i in ids if i in first.stdout or i in second.stdout]
    assert shown == ids


def test_executions_wait(daemon: Daemon) -> None:
    ids = [_start(daemon, "slow", 0.2, i) for i in range(3)]
    result = cli(daemon, "executions", "wait", *ids)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "3 SUCCEEDED"
    failed = _start(daemon, "boom", "x")
    mixed = cli(daemon, "executions", "wait", ids[0], failed)
    assert mixed.returncode == 1
    assert mixed.stdout.strip() == "1 FAILED, 1 SUCCEEDED"


def test_logs_and_logs_follow(daemon: Daemon) -> None:
    execution_id = _start(daemon, "chatty", 10, 0.3)
    follow = cli_process(daemon, "logs", "-f", execution_id)
    with follow:  # closes the pipes; kills it if a check below fails first
        try:
            assert follow.stdout is not None and follow.stderr is not None
            first = follow.stdout.readline()
            status_at_first_line = _status(daemon, execution_id)
            # From the same buffered pipe: readline may have buffered the lines after the
            # first, which communicate() (reading the raw descriptor) would never see.
            rest = follow.stdout.read()
            stderr = follow.stderr.read()
            follow.wait(timeout=30)
        finally:
            if follow.poll() is None:
                follow.kill()
    assert follow.returncode == 0, stderr
    assert first == "line 0\n"
    assert status_at_first_line == "RUNNING"  # it streamed while the execution ran
    assert (first + rest).splitlines() == [f"line {i}" for i in range(10)]
    assert _status(daemon, execution_id) == "SUCCEEDED"  # and ended because it finished
    again = cli(daemon, "logs", execution_id)
    assert again.stdout.splitlines() == [f"line {i}" for i in range(10)]


def test_cancel(daemon: Daemon) -> None:
    execution_id = _start(daemon, "slow", 30, "never")
    poll(lambda: _status(daemon, execution_id) == "RUNNING", 20, "the execution to run")
    result = cli(daemon, "cancel", execution_id)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() in (f"{execution_id}: CANCELLING", f"{execution_id}: CANCELLED")
    assert wait_finished(daemon, execution_id)["status"] == "CANCELLED"


def test_rerun(daemon: Daemon, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    execution_id = _start(daemon, "needs_file", str(marker))
    assert wait_finished(daemon, execution_id)["status"] == "FAILED"
    marker.write_text("ok")
    result = cli(daemon, "rerun", execution_id)
    assert result.returncode == 0, result.stderr
    assert wait_finished(daemon, execution_id)["result"] == "ok"
    line = _one_error_line(cli(daemon, "rerun", execution_id))
    assert "was not run again" in line


def test_triggers_apply_list_and_emit(daemon: Daemon, tmp_path: Path) -> None:
    definition = tmp_path / "trigger.json"
    definition.write_text(
        json.dumps(
            {
                "name": "on-gadget",
                "function": "item_id",
                "resource": "Gadget",
                "actions": ["Created"],
                "filter": {"kind": "blue"},
            }
        )
    )
    applied = cli(daemon, "triggers", "apply", "-f", str(definition))
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.startswith("applied on-gadget (")
    again = cli(daemon, "triggers", "apply", "-f", str(definition))  # idempotent
    assert again.stdout == applied.stdout
    listed = cli(daemon, "triggers", "list")
    assert listed.returncode == 0, listed.stderr
    assert "on-gadget" in listed.stdout and "Gadget Created" in listed.stdout

    emitted = cli(daemon, "emit", "Gadget", "Created", "--body", '{"id": "g1", "kind": "blue"}')
    assert emitted.returncode == 0, emitted.stderr
    (execution_id,) = emitted.stdout.split()
    assert execution_id.startswith("exe-")
    assert wait_finished(daemon, execution_id)["result"] == "g1"
    ignored = cli(daemon, "emit", "Gadget", "Created", "--body", '{"id": "g2", "kind": "red"}')
    assert ignored.stdout.strip() == "no trigger fired"
    stats = json.loads(cli(daemon, "triggers", "describe", "on-gadget").stdout)["stats"]
    assert stats["fired"] == 1
    by_trigger = cli(daemon, "executions", "list", "--trigger", "on-gadget")
    assert execution_id in by_trigger.stdout


def test_triggers_apply_of_a_bad_file_is_one_line(daemon: Daemon, tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    assert "is not JSON" in _one_error_line(cli(daemon, "triggers", "apply", "-f", str(broken)))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"name": "x", "function": "add", "executionMode": "Sometimes"}]))
    line = _one_error_line(cli(daemon, "triggers", "apply", "-f", str(bad)))
    assert "trigger 0" in line
    missing = _one_error_line(cli(daemon, "triggers", "apply", "-f", str(tmp_path / "no.json")))
    assert "cannot read" in missing


def test_login_with_a_wrong_key_fails_clearly(daemon: Daemon, tmp_path: Path) -> None:
    credentials = tmp_path / "credentials.json"
    wrong = cli(
        None, "login", "--url", daemon.url, "--api-key", "tf_wrong", credentials=credentials
    )
    line = _one_error_line(wrong)
    assert "refused the API key" in line and "tf_wrong" not in line
    assert not credentials.exists()


def test_login_saves_the_key_for_later_commands(daemon: Daemon, tmp_path: Path) -> None:
    credentials = tmp_path / "credentials.json"
    right = cli(
        None, "login", "--url", daemon.url, "--api-key", daemon.key, credentials=credentials
    )
    assert right.returncode == 0, right.stderr
    assert daemon.key not in right.stdout + right.stderr
    assert json.loads(credentials.read_text()) == {daemon.url: daemon.key}
    assert credentials.stat().st_mode & 0o077 == 0  # its owner's only
    status = cli(None, "status", url=daemon.url, credentials=credentials)
    assert status.returncode == 0, status.stderr
    assert "ok" in status.stdout


def test_a_daemon_that_is_not_there_is_one_line(tmp_path: Path) -> None:
    result = cli(
        None,
        "status",
        url="http://127.0.0.1:9",
        key="tf_any",
        credentials=tmp_path / "credentials.json",
    )
    assert "cannot reach the daemon" in _one_error_line(result)


def test_call_count_waits_with_a_progress_bar(daemon: Daemon) -> None:
    started = time.monotonic()
    result = cli(daemon, "call", "slow", "--args", "[0.1, 1]", "--count", "20")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "20 SUCCEEDED"
    assert "20/20" in result.stderr  # the bar, on stderr
    assert time.monotonic() - started < 30
    failing = cli(daemon, "call", "boom", "--args", '["x"]', "--count", "3")
    assert failing.returncode == 1
    assert failing.stdout.strip() == "3 FAILED"
