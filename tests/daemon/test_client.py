"""The remote Client against a real daemon: the handle API, its errors, and the HTTP API's
listing, logs and validation that the client stands on."""

from __future__ import annotations

import json
import socket
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import anyio
import httpx
import pytest

from triggerfish import (
    AuthenticationError,
    ExecutionNotFoundError,
    ExecutionStatus,
    InvocationCancelledError,
    InvocationFailedError,
    RemoteError,
    TriggerfishError,
    TriggerNotFoundError,
    UnknownFunctionError,
)
from triggerfish.sdk.remote import Client

from .daemon_app import Opaque
from .helpers import Daemon

pytestmark = pytest.mark.anyio
S = ExecutionStatus
WIDGET_TRIGGER = {
    "name": "on-widget",
    "function": "item_id",
    "resource": "Widget",
    "actions": ["Created"],
}


async def _until_status(client: Client, execution_id: str, *statuses: S) -> None:
    with anyio.fail_after(20):
        while (await client.get(execution_id)).status not in statuses:
            await anyio.sleep(0.02)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_start_and_await_result(daemon: Daemon) -> None:
    async with Client(daemon.url, daemon.key) as client:
        add = client.function("add")
        execution_id = await add.start(1, b=2)
        assert execution_id.startswith("exe-")
        assert await add.await_result(execution_id, timeout=20) == 3
        execution = await add.get(execution_id)
    assert execution.status is S.SUCCEEDED
    assert execution.function == "add" and execution.result == 3
    assert execution.attempts == 1 and execution.terminated
    assert [c.status for c in execution.status_log][-1] is S.SUCCEEDED


async def test_call_remote_keeps_python_types(daemon: Daemon) -> None:
    async with Client(daemon.url, daemon.key) as client:
        assert await client.function("add").call_remote(40, 2) == 42
        assert await client.function("as_set").call_remote(1, 2, 2) == {1, 2}
        assert await client.function("opaque").call_remote(7) == Opaque(7)


async def test_get_shows_a_non_json_result_as_its_repr(daemon: Daemon) -> None:
    async with Client(daemon.url, daemon.key) as client:
        handle = client.function("as_set")
        execution_id = await handle.start(3, 1)
        assert await handle.await_result(execution_id, timeout=20) == {1, 3}
        execution = await handle.get(execution_id)
    assert execution.result == "<{1, 3}>"
    with daemon.http() as http:
        body = http.get(f"/executions/{execution_id}").json()
    assert body["result"] == "{1, 3}" and body["result_encoding"] == "repr"


async def test_the_daemon_never_rebuilds_a_result_of_a_user_class(daemon: Daemon) -> None:
    """A result's pickle comes from user code: unpickling it in the daemon could run code
    there. The JSON view names its type; a client that takes pickle gets the object."""
    async with Client(daemon.url, daemon.key) as client:
        handle = client.function("opaque")
        execution_id = await handle.start(5)
        assert await handle.await_result(execution_id, timeout=20) == Opaque(5)
        execution = await handle.get(execution_id)
    assert isinstance(execution.result, str)
    assert "tests.daemon.daemon_app.Opaque object" in execution.result
    with daemon.http() as http:
        body = http.get(f"/executions/{execution_id}").json()
    assert (
        body["result_encoding"] == "repr"
        and "Accept: application/x-python-pickle" in body["result"]
    )


async def test_a_result_that_unpickles_only_in_its_replica_still_shows(daemon: Daemon) -> None:
    async with Client(daemon.url, daemon.key) as client:
        handle = client.function("fragile")
        execution_id = await handle.start()
        await _until_status(client, execution_id, S.SUCCEEDED)
        execution = await handle.get(execution_id)
    assert isinstance(execution.result, str)
    # described by its replica: the daemon never unpickles it (its pickle calls _refuse)
    assert "a tests.daemon.daemon_app.Fragile object (ask with Accept:" in execution.result


async def test_a_result_that_cannot_be_unpickled_here_raises_a_triggerfish_error(
    daemon: Daemon,
) -> None:
    async with Client(daemon.url, daemon.key) as client:
        with pytest.raises(TriggerfishError):
            await client.function("fragile").call_remote()


async def test_map_and_starmap_keep_input_order(daemon: Daemon) -> None:
    async with Client(daemon.url, daemon.key) as client:
        squares = [r async for r in client.function("square").map(range(12))]
        # the first input takes longest: results still come in input order
        slow = client.function("slow")
        ordered = [r async for r in slow.starmap([(0.4, "a"), (0.0, "b"), (0.2, "c")])]
    assert squares == [i * i for i in range(12)]
    assert ordered == ["a", "b", "c"]


async def test_start_many_gives_ids_in_input_order(daemon: Daemon) -> None:
    async with Client(daemon.url, daemon.key) as client:
        add = client.function("add")
        ids = await add.start_many([((i, 1000), {}) for i in range(20)])
        assert len(set(ids)) == 20
        assert [await add.await_result(i, timeout=20) for i in ids] == [i + 1000 for i in range(20)]
        assert await add.start_many([]) == []


async def test_list_pages_through_a_status(daemon: Daemon) -> None:
    async with Client(daemon.url, daemon.key) as client:
        boom = client.function("boom")
        failed = await boom.start_many([((f"page {i}",), {}) for i in range(7)])
        for execution_id in failed:
            with pytest.raises(InvocationFailedError):
                await boom.await_result(execution_id, timeout=20)
        seen: list[str] = []
        offset = None
        pages = 0
        while True:
            page = await boom.list(offset=offset, limit=3, status=S.FAILED)
            assert len(page.execution_ids) <= 3
            seen.extend(page.execution_ids)
            pages += 1
            if page.offset is None:
                break
            offset = page.offset
        assert pages >= 3
        assert len(seen) == len(set(seen))  # no execution on two pages
        assert set(failed) <= set(seen)
        assert [i for i in seen if i in failed] == failed[::-1]  # newest first
        for execution_id in seen:
            assert (await client.get(execution_id)).status is S.FAILED
        assert set(failed).isdisjoint((await boom.list(status="SUCCEEDED")).execution_ids)
        both = await boom.list(status=[S.SUCCEEDED, S.FAILED], limit=1000)
        assert set(failed) <= set(both.execution_ids)


async def test_cancel_a_running_execution(daemon: Daemon) -> None:
    async with Client(daemon.url, daemon.key) as client:
        slow = client.function("slow")
        execution_id = await slow.start(30, "never")
        await _until_status(client, execution_id, S.RUNNING)
        started = time.monotonic()
        await slow.cancel(execution_id)
        with pytest.raises(InvocationCancelledError) as caught:
            await slow.await_result(execution_id, timeout=20)
        assert time.monotonic() - started < 15
        assert caught.value.execution_id == execution_id
        execution = await client.get(execution_id)
    assert execution.status is S.CANCELLED
    assert S.RUNNING in [c.status for c in execution.status_log]


async def test_cancel_a_queued_execution(daemon: Daemon) -> None:
    async with Client(daemon.url, daemon.key) as client:
        slow = client.function("slow")
        busy = await slow.start_many([((2, i), {}) for i in range(4)])  # four slots
        queued = await slow.start(0, "queued")
        assert (await client.get(queued)).status is S.PENDING
        await slow.cancel(queued)
        assert (await client.get(queued)).status is S.CANCELLED
        for execution_id in busy:
            await slow.cancel(execution_id)
        for execution_id in busy:
            with pytest.raises(InvocationCancelledError):
                await slow.await_result(execution_id, timeout=20)


async def test_rerun_a_failed_execution(daemon: Daemon, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    async with Client(daemon.url, daemon.key) as client:
        handle = client.function("needs_file")
        execution_id = await handle.start(str(marker))
        with pytest.raises(InvocationFailedError):
            await handle.await_result(execution_id, timeout=20)
        marker.write_text("there now")
        assert await handle.rerun([execution_id]) == [execution_id]
        assert await handle.await_result(execution_id, timeout=20) == "there now"
        execution = await handle.get(execution_id)
        assert execution.status is S.SUCCEEDED and execution.attempts == 2
        assert await handle.rerun([execution_id]) == []  # only failed ones run again


async def test_wait_for_completion_results_and_statistics(daemon: Daemon) -> None:
    async with Client(daemon.url, daemon.key) as client:
        slow = client.function("slow")
        await slow.start_many([((0.2, i), {}) for i in range(6)])
        await slow.wait_for_completion(timeout=30)
        stats = await slow.statistics()
        assert stats[S.PENDING] == stats[S.RUNNING] == stats[S.CANCELLING] == 0
        assert stats[S.SUCCEEDED] >= 6

        chatty = client.function("chatty")
        before = await chatty.statistics()
        for lines in (1, 2, 3):
            await chatty.call_remote(lines, 0)
        after = await chatty.statistics()
        assert set(after) == set(S)
        assert after[S.SUCCEEDED] == before[S.SUCCEEDED] + 3
        results = await chatty.results()
        assert results[-3:] == [1, 2, 3]  # oldest first


async def test_unknown_function(daemon: Daemon) -> None:
    async with Client(daemon.url, daemon.key) as client:
        missing = client.function("no_such_function")
        with pytest.raises(UnknownFunctionError, match="no_such_function"):
            await missing.start(1)
        with pytest.raises(UnknownFunctionError):
            await missing.call_remote(1)
        with pytest.raises(UnknownFunctionError):
            await missing.start_many([((1,), {})])
        with pytest.raises(UnknownFunctionError):
            await missing.statistics()


async def test_a_failed_function_raises_with_the_remote_traceback(daemon: Daemon) -> None:
    async with Client(daemon.url, daemon.key) as client:
        with pytest.raises(InvocationFailedError) as caught:
            await client.function("boom").call_remote("it broke")
    error = caught.value
    assert error.error_type == "ValueError" and error.error_message == "it broke"
    assert "daemon_app.py" in error.remote_traceback
    assert "raise ValueError(message)" in error.remote_traceback
    assert error.execution_id is not None and error.execution_id.startswith("exe-")
    assert "Remote traceback" in str(error)


async def test_an_unknown_execution(daemon: Daemon) -> None:
    async with Client(daemon.url, daemon.key) as client:
        with pytest.raises(ExecutionNotFoundError):
            await client.get("exe-does-not-exist")
        with pytest.raises(ExecutionNotFoundError):
            await client.function("add").await_result("exe-does-not-exist", timeout=5)
        with pytest.raises(ExecutionNotFoundError):
            await client.cancel("exe-does-not-exist")


async def test_listing_by_an_unknown_trigger_raises_trigger_not_found(daemon: Daemon) -> None:
    async with Client(daemon.url, daemon.key) as client:
        with pytest.raises(TriggerNotFoundError, match="no-such-trigger"):
            await client.list_executions(trigger="no-such-trigger")


async def test_rerun_of_an_unknown_execution_raises_execution_not_found(daemon: Daemon) -> None:
    async with Client(daemon.url, daemon.key) as client:
        with pytest.raises(ExecutionNotFoundError, match="exe-nope"):
            await client.function("boom").rerun(["exe-nope"])


async def test_a_wrong_key(daemon: Daemon) -> None:
    async with Client(daemon.url, "tf_wrong") as client:
        with pytest.raises(AuthenticationError) as caught:
            await client.function("add").call_remote(1, 2)
    assert caught.value.status_code == 401
    assert "tf_wrong" not in str(caught.value)


async def test_an_unreachable_daemon() -> None:
    async with Client(f"http://127.0.0.1:{_closed_port()}", "tf_any", timeout=5) as client:
        with pytest.raises(RemoteError, match="cannot reach the daemon") as caught:
            await client.function("add").start(1, 2)
    assert not isinstance(caught.value, AuthenticationError)


async def test_a_client_with_no_key_uses_the_one_the_daemon_saved(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRIGGERFISH_CREDENTIALS", str(daemon.credentials))
    monkeypatch.delenv("TRIGGERFISH_API_KEY", raising=False)
    monkeypatch.setenv("TRIGGERFISH_API_URL", daemon.url + "/")
    async with Client() as client:
        assert client.url == daemon.url
        assert await client.function("add").call_remote(1, 1) == 2


async def test_a_pickle_the_replica_cannot_read_fails_the_execution(daemon: Daemon) -> None:
    pickled = {"Content-Type": "application/x-python-pickle"}
    with daemon.http() as http:
        answer = http.post("/functions/add/call", content=b"not a pickle", headers=pickled)
        assert answer.status_code == 200, answer.text
        outcome = answer.json()
        assert outcome["status"] == "FAILED" and outcome["error"]["type"], outcome
        # the replica is still there for the next call
        assert http.post("/functions/add/call", json={"args": [2, 2]}).json()["result"] == 4


async def test_an_application_takes_and_gives_json(daemon: Daemon) -> None:
    with daemon.http() as http:
        answer = http.post("/applications/echo", json={"hello": [1, 2]})
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"echo": {"hello": [1, 2]}}
        request_id = answer.headers["X-Request-Id"]
        again = http.get(f"/applications/echo/requests/{request_id}")
        assert again.json() == {"echo": {"hello": [1, 2]}}
        broken = http.post("/applications/echo", content=b"{nope")
        assert broken.status_code == 400 and "malformed JSON" in broken.json()["detail"]
        assert http.post("/applications/add", json=1).status_code == 404  # not an application


def test_the_blocking_form(daemon: Daemon) -> None:
    with Client(daemon.url, daemon.key) as client:
        add = client.function("add")
        assert add.call_remote(2, 3) == 5
        execution_id = add.start(4, 5)
        assert add.await_result(execution_id, timeout=20) == 9
        assert add.get(execution_id).status is S.SUCCEEDED
        assert list(add.map([])) == []
        assert list(add.starmap([(1, 1), (2, 2), (3, 3)])) == [2, 4, 6]
        assert list(client.function("square").map([3, 4])) == [9, 16]
        assert execution_id in add.list(limit=1000).execution_ids
        assert add.statistics()[S.SUCCEEDED] >= 4
        assert client.health() == {"status": "ok"}
        with pytest.raises(InvocationFailedError):
            client.function("boom").call_remote("blocking")
        with pytest.raises(UnknownFunctionError):
            client.function("no_such_function").start()


async def test_executions_by_trigger(daemon: Daemon) -> None:
    with daemon.http() as http:
        created = http.post("/triggers", json=WIDGET_TRIGGER)
        assert created.status_code == 201, created.text
        trigger_id = created.json()["id"]
    async with Client(daemon.url, daemon.key) as client:
        fired = [await client.emit("Widget", "Created", {"id": f"w{i}"}) for i in range(3)]
        assert await client.emit("Widget", "Deleted", {"id": "w0"}) == []
        ids = [ids[0] for ids in fired if len(ids) == 1]
        assert len(ids) == 3
        handle = client.function("item_id")
        assert [await handle.await_result(i, timeout=20) for i in ids] == ["w0", "w1", "w2"]
        await handle.start({"id": "not fired"})
        for name in ("on-widget", trigger_id):
            page = await client.list_executions(trigger=name)
            assert list(page.execution_ids) == ids[::-1]
        assert (await client.get(ids[0])).trigger_id == trigger_id
        triggers = {t.spec.name: t for t in await client.triggers()}
        assert triggers["on-widget"].stats.fired == 3


async def test_executions_by_time(daemon: Daemon) -> None:
    async with Client(daemon.url, daemon.key) as client:
        add = client.function("add")
        before = datetime.now(UTC)
        ids = await add.start_many([((i, 0), {}) for i in range(5)])
        after = datetime.now(UTC)
        await add.start(0, 0)  # later than the window
        page = await client.list_executions(function="add", since=before, until=after)
        assert sorted(page.execution_ids) == sorted(ids)
        later = await client.list_executions(function="add", since=after, limit=1000)
        assert set(ids).isdisjoint(later.execution_ids)
        earlier = await client.list_executions(function="add", until=before, limit=1000)
        assert set(ids).isdisjoint(earlier.execution_ids)
    with daemon.http() as http:
        naive = before.replace(tzinfo=None).isoformat()
        answer = http.get("/executions", params={"since": naive})
        assert answer.status_code == 400
        assert answer.json()["detail"] == "since must carry a time zone (e.g. ...Z)"
        assert answer.json()["error"] == "ConfigurationError"
        # the same moments written in another zone select the same executions
        elsewhere = timezone(timedelta(hours=-5, minutes=-30))
        window = {
            "function": "add",
            "since": before.astimezone(elsewhere).isoformat(),
            "until": after.astimezone(elsewhere).isoformat(),
        }
        answer = http.get("/executions", params=window)
        assert sorted(e["id"] for e in answer.json()["executions"]) == sorted(ids)


async def test_logs_after_the_end(daemon: Daemon) -> None:
    async with Client(daemon.url, daemon.key) as client:
        chatty = client.function("chatty")
        execution_id = await chatty.start(3, 0)
        assert await chatty.await_result(execution_id, timeout=20) == 3
    with daemon.http() as http:
        answer = http.get(f"/executions/{execution_id}/logs")
    assert answer.status_code == 200
    logs = answer.json()["logs"]
    assert [e["text"].rstrip("\n") for e in logs] == ["line 0", "line 1", "line 2"]
    assert {e["stream"] for e in logs} == {"stdout"}


async def test_follow_logs_streams_while_it_runs_and_ends_with_it(daemon: Daemon) -> None:
    async with Client(daemon.url, daemon.key) as client:
        chatty = client.function("chatty")
        execution_id = await chatty.start(5, 0.3)
        texts: list[str] = []
        status_at_first_line = None
        with anyio.fail_after(20):
            async with (
                httpx.AsyncClient(base_url=daemon.url, headers=daemon.headers) as http,
                http.stream("GET", f"/executions/{execution_id}/logs?follow=true") as stream,
            ):
                assert stream.status_code == 200
                assert stream.headers["content-type"].startswith("application/x-ndjson")
                async for line in stream.aiter_lines():
                    if not line:
                        continue
                    if status_at_first_line is None:
                        status_at_first_line = (await client.get(execution_id)).status
                    texts.append(json.loads(line)["text"].rstrip("\n"))
        # the stream ended because the execution did
        assert (await client.get(execution_id)).status is S.SUCCEEDED
        assert status_at_first_line is S.RUNNING
        assert texts == [f"line {i}" for i in range(5)]
        # the client's own reader, on a finished execution: every line, then the end
        streamed = [
            json.loads(line)["text"].rstrip("\n")
            async for line in client.stream_lines(f"/executions/{execution_id}/logs?follow=true")
        ]
        assert streamed == texts


async def test_follow_logs_of_an_unknown_execution_is_404(daemon: Daemon) -> None:
    with daemon.http() as http:
        answer = http.get("/executions/exe-nope/logs", params={"follow": "true"})
    assert answer.status_code == 404 and answer.json()["error"] == "ExecutionNotFoundError"
    assert set(answer.json()) == {"detail", "error"}


async def test_patch_a_trigger(daemon: Daemon) -> None:
    with daemon.http() as http:
        definition = {**WIDGET_TRIGGER, "name": "patched", "resource": "Patched"}
        assert http.post("/triggers", json=definition).status_code == 201
        changed = http.patch("/triggers/patched", json={"filter": {"size": {"$gt": 2}}})
        assert changed.status_code == 200, changed.text
        assert changed.json()["spec"]["filter"] == {"size": {"$gt": 2}}
        # A field named like the route's parameter is an unknown field, not a server error.
        clash = http.patch("/triggers/patched", json={"trigger": 1})
        assert clash.status_code == 400, clash.text
        assert "trigger" in clash.json()["detail"]
        bad = http.patch("/triggers/patched", json={"filter": {"size": {"$bogus": 1}}})
        assert bad.status_code == 400 and "$bogus" in bad.json()["detail"], bad.text
        assert http.patch("/triggers/nobody", json={"active": False}).status_code == 404
        assert http.get("/triggers/patched").json()["spec"]["filter"] == {"size": {"$gt": 2}}


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "names"),
    [
        ("POST", "/functions/add/executions", b'{"args": 5}', 422, "args"),
        ("POST", "/functions/add/executions", b'{"args": [], "kw": {}}', 422, "kw"),
        ("POST", "/functions/add/executions", b'{"kwargs": []}', 422, "kwargs"),
        ("POST", "/functions/add/executions", b'{"args": [1,', 400, "json"),
        ("POST", "/functions/add/executions", b"[1, 2]", 422, "object"),
        ("POST", "/functions/add/call", b'{"args": "1"}', 422, "args"),
        ("POST", "/functions/add/executions/batch", b'{"inputs": []}', 422, "inputs"),
        (
            "POST",
            "/functions/add/executions/batch",
            b'{"inputs": [{"args": 1}]}',
            422,
            "inputs.0.args",
        ),
        ("POST", "/events", b'{"resource": "Item"}', 422, "action"),
        ("POST", "/events", b'{"resource": "", "action": "Created"}', 422, "resource"),
        ("POST", "/events", b"not json", 400, "json"),
        (
            "POST",
            "/triggers",
            json.dumps({**WIDGET_TRIGGER, "executionMode": "Sometimes"}).encode(),
            400,
            "executionMode",
        ),
        ("POST", "/triggers", b'{"name": "t"}', 400, "function"),
        ("POST", "/functions/boom/rerun", b'{"execution_ids": "exe-1"}', 422, "execution_ids"),
    ],
)
async def test_malformed_bodies_name_the_field(
    daemon: Daemon, method: str, path: str, body: bytes, status: int, names: str
) -> None:
    with daemon.http() as http:
        answer = http.request(
            method, path, content=body, headers={"Content-Type": "application/json"}
        )
    assert answer.status_code == status, answer.text
    assert set(answer.json()) <= {"detail", "error"}
    detail = answer.json()["detail"]
    assert "\n" not in detail and names.lower() in detail.lower(), detail


@pytest.mark.parametrize(
    ("params", "names"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"status": "BOGUS"}, "status"),
        ({"since": "yesterday"}, "since"),
    ],
)
async def test_malformed_queries_name_the_parameter(
    daemon: Daemon, params: dict[str, str], names: str
) -> None:
    with daemon.http() as http:
        answer = http.get("/executions", params=params)
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert "\n" not in detail and names in detail, detail
