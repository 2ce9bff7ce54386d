"""The engine's events over HTTP (server-sent events) and in ``triggerfish watch``."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx

from .helpers import Daemon, cli, cli_process, poll, wait_finished


def _start(daemon: Daemon, function: str, *args: Any) -> str:
    with daemon.http() as http:
        answer = http.post(f"/functions/{function}/executions", json={"args": list(args)})
        assert answer.status_code == 201, answer.text
        return str(answer.json()["execution_ids"][0])


def _read_events(daemon: Daemon, query: str, wanted: int) -> tuple[list[dict[str, Any]], Any]:
    """Open the stream, then return (a list the events fill, a thread reading them)."""
    events: list[dict[str, Any]] = []
    opened = threading.Event()

    def read() -> None:  # the stream ends by itself after 20 s at the latest
        query_ = f"{query}&timeout=20" if "?" in query else "?timeout=20"
        with daemon.http(timeout=30) as http, http.stream("GET", f"/events/stream{query_}") as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            for line in r.iter_lines():
                opened.set()  # the first comment: subscribed
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
                    if len(events) >= wanted:
                        return

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    assert opened.wait(10), "the stream did not open"
    return events, thread


def test_the_stream_tells_an_execution_from_creation_to_its_end(daemon: Daemon) -> None:
    events, reader = _read_events(daemon, "?function=add", wanted=3)
    execution_id = _start(daemon, "add", 2, 3)
    reader.join(20)
    mine = [(e["kind"], e.get("status")) for e in events if e["execution_id"] == execution_id]
    assert mine == [
        ("ExecutionCreated", None),
        ("ExecutionStatusChanged", "RUNNING"),
        ("ExecutionStatusChanged", "SUCCEEDED"),
    ]
    assert all(e["function"] == "add" for e in events)
    assert wait_finished(daemon, execution_id)["status"] == "SUCCEEDED"


def test_the_stream_filters_by_kind_and_execution(daemon: Daemon) -> None:
    other = _start(daemon, "slow", 30, "never")  # its events pass no filter below
    by_kind, kind_reader = _read_events(daemon, "?kind=ExecutionLogged&function=chatty", 3)
    execution_id = _start(daemon, "chatty", 3, 0.1)
    kind_reader.join(20)
    assert [e["text"] for e in by_kind] == ["line 0\n", "line 1\n", "line 2\n"]
    assert {(e["kind"], e["execution_id"]) for e in by_kind} == {("ExecutionLogged", execution_id)}
    by_execution, reader = _read_events(daemon, f"?execution_id={other}", 1)
    with daemon.http() as http:
        http.post(f"/executions/{execution_id}/cancel")  # another execution's: filtered out
        http.post(f"/executions/{other}/cancel")
    reader.join(20)
    ((kind, execution, status),) = [
        (e["kind"], e["execution_id"], e["status"]) for e in by_execution
    ]
    assert (kind, execution) == ("ExecutionStatusChanged", other)
    assert status in ("CANCELLING", "CANCELLED")  # running, or not started yet


def test_an_unknown_kind_is_refused_by_name(daemon: Daemon) -> None:
    with daemon.http() as http:
        answer = http.get("/events/stream", params={"kind": "Nope"})
    assert answer.status_code == 400
    assert "Nope" in answer.json()["detail"]
    assert "ExecutionStatusChanged" in answer.json()["detail"]


def test_the_stream_needs_the_key(daemon: Daemon) -> None:
    with httpx.Client(base_url=daemon.url, headers={"X-API-Key": "wrong"}) as http:
        assert http.get("/events/stream").status_code == 401


def test_watch_prints_events_live(daemon: Daemon) -> None:
    watch = cli_process(daemon, "watch", "--function", "square")
    lines: list[str] = []
    with watch:  # closes its pipes, once it is ended below
        try:
            assert watch.stdout is not None

            def read() -> None:
                assert watch.stdout is not None
                for line in watch.stdout:
                    lines.append(line)

            reader = threading.Thread(target=read, daemon=True)
            reader.start()

            def started() -> str | None:  # the watcher subscribes a moment after it starts
                execution_id = _start(daemon, "square", 7)
                wait_finished(daemon, execution_id)
                return execution_id if any(execution_id in line for line in lines) else None

            execution_id = poll(started, 30, "watch to print an execution's events", every=0.5)
            poll(lambda: any("SUCCEEDED" in x and execution_id in x for x in lines), 10, "its end")
        finally:
            watch.kill()
            watch.wait(10)
    shown = [x for x in lines if execution_id in x]
    assert "ExecutionCreated" in shown[0]
    assert any("ExecutionStatusChanged" in x and "RUNNING" in x for x in shown)
    assert all("square" in x for x in shown if "ExecutionLogged" not in x)
    helped = cli(daemon, "watch", "--help")
    assert helped.returncode == 0 and "--function" in helped.stdout
