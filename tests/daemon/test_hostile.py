"""Hostile input at the daemon's boundary, from outside: a real daemon and raw HTTP bytes.

Every JSON body, and every JSON value in it, is checked where it comes in: malformed JSON,
bytes that are not UTF-8, lone surrogates, NaN and infinities, nesting past 64 levels are
refused with one line saying what is wrong (and an error name), and the daemon goes on
serving. Big integers are data, kept exact. A result too big to show is shown truncated,
without stalling the daemon or blowing up its memory.

After every hostile request, ``assert_still_serving``: /health answers ok and a normal call
still returns its result. A case that kills the daemon fails, and the next test gets a new
daemon (on a fresh data dir), so one crash does not hide the other findings.
"""

from __future__ import annotations

import io
import json
import pickle
import re
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest

from .helpers import Daemon, poll, start_daemon

APP = "tests.daemon.daemon_app:hostile_setup"
PICKLE = "application/x-python-pickle"
ZIP = "application/zip"
#: Where the contract draws the line between a result shown whole and one shown truncated.
SHOWN_LIMIT = 1_048_576
#: "At most about 1 MB": the truncated text, with some room for a marker at its end.
SHOWN_SLACK = SHOWN_LIMIT + 64 * 1024
#: A Problem's detail is one line: this long, it would be echoing a hostile input whole
#: (a path 100000 levels deep).
LONGEST_DETAIL = 64 * 1024
BARE_PARSE_ERROR = "There was an error parsing the body"


# -- the daemon -------------------------------------------------------------------------------

CODE = b"""
class Runner:
    def __init__(self, k=None):
        self.k = k

    def run(self, x=None):
        return x
"""


def package_json(value: bytes = b"1") -> bytes:
    """A package.json with ``value`` as the default of its function's input."""
    return (
        b'{"name": "hostile", "modules": [{"name": "default_module", "entryPoint": "main.py",'
        b' "className": "Runner", "initInputs": [{"name": "k", "type": "Json"}],'
        b' "functions": [{"name": "run", "input": [{"name": "x", "type": "Json",'
        b' "defaultValue": ' + value + b"}]}]}]}"
    )


def codebase_zip(package: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("package.json", package)
        archive.writestr("main.py", CODE)
    return buffer.getvalue()


class Daemons:
    """This module's daemon; a new one (fresh data dir) when a test has killed the last."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started = 0
        self.running = self._start()

    def _start(self) -> Daemon:
        self.started += 1
        daemon = start_daemon(
            self.directory, app=APP, data_dir=self.directory / f"data-{self.started}"
        )
        with daemon.http() as http:
            pushed = http.post(
                "/packages", content=codebase_zip(package_json()), headers={"content-type": ZIP}
            )
            assert pushed.status_code == 201, pushed.text
            target = {
                "name": "hostile-patch",
                "function": "item_id",
                "resource": "Annotation",
                "actions": ["Created"],
                "executionMode": "Once",
            }
            created = http.post("/triggers", json=target)
            assert created.status_code == 201, created.text
        return daemon

    def current(self) -> Daemon:
        if self.running.process.poll() is not None:
            self.running = self._start()
        return self.running


@pytest.fixture(scope="module")
def daemons(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemons]:
    holder = Daemons(tmp_path_factory.mktemp("hostile"))
    try:
        yield holder
    finally:
        _CLIENT.close()
        if holder.running.process.poll() is None:
            holder.running.stop()


@pytest.fixture
def daemon(daemons: Daemons) -> Daemon:
    return daemons.current()


@pytest.fixture
def once_trigger(daemon: Daemon) -> Iterator[str]:
    """A Once trigger listening for Item Created (``item_id`` runs), deleted after."""
    name = f"once-{uuid.uuid4().hex[:8]}"
    definition = {
        "name": name,
        "function": "item_id",
        "resource": "Item",
        "actions": ["Created"],
        "executionMode": "Once",
    }
    with daemon.http() as http:
        created = http.post("/triggers", json=definition)
        assert created.status_code == 201, created.text
    yield name
    if daemon.process.poll() is None:
        with daemon.http() as http:
            http.delete(f"/triggers/{name}")


# -- requests and what they must get ----------------------------------------------------------


#: One client for every request of this module (making one per request costs an SSL context
#: each); each request asks for its own connection, so one the server dropped after an error is
#: never reused.
_CLIENT = httpx.Client(headers={"Connection": "close"})


def send(
    daemon: Daemon,
    method: str,
    path: str,
    body: bytes | None = None,
    content_type: str = "application/json",
    *,
    headers: dict[str, str] | None = None,
    timeout: float = 60,
) -> httpx.Response:
    """One request as raw bytes, on a connection of its own; a dropped connection fails
    naming the daemon's end."""
    sent = {**daemon.headers, **(headers or {})}
    if body is not None:
        sent["content-type"] = content_type
    try:
        return _CLIENT.request(
            method, f"{daemon.url}{path}", content=body, headers=sent, timeout=timeout
        )
    except httpx.TransportError as exc:
        raise AssertionError(
            f"{method} {path}: no answer ({type(exc).__name__}: {exc}); "
            f"daemon exit status {daemon.process.poll()}; its log ends:\n{daemon.stderr[-3000:]}"
        ) from None


def assert_still_serving(daemon: Daemon) -> None:
    """The daemon is alive: /health says ok and a normal call returns its result."""
    assert daemon.process.poll() is None, (
        f"the daemon exited with {daemon.process.returncode}; its log ends:\n"
        f"{daemon.stderr[-3000:]}"
    )
    health = send(daemon, "GET", "/health", timeout=10)
    assert health.status_code == 200, health.text
    assert health.json() == {"status": "ok"}
    call = send(daemon, "POST", "/functions/add/call", b'{"args": [2, 3]}', timeout=30)
    assert call.status_code == 200, call.text
    assert call.json()["status"] == "SUCCEEDED", call.text
    assert call.json()["result"] == 5


def problem(
    answer: httpx.Response, statuses: tuple[int, ...] = (400, 422), *, named: bool = True
) -> str:
    """The detail of a refusal: one of ``statuses``, ``{"detail": one line, "error": Name}``
    (the error's name may be left out of a refused path or query parameter: ``named``)."""
    shown = answer.text[:500]
    assert answer.status_code in statuses, f"{answer.status_code} {shown}"
    assert answer.headers.get("content-type", "").startswith("application/json"), shown
    body = json.loads(answer.content)
    keys = {"detail", "error"} if named else {"detail"}
    assert isinstance(body, dict) and keys <= set(body) <= {"detail", "error"}, shown
    detail, error = body["detail"], body.get("error", "Unnamed")
    assert isinstance(detail, str) and detail.strip(), shown
    assert "\n" not in detail and len(detail) <= LONGEST_DETAIL, shown
    assert isinstance(error, str) and re.fullmatch(r"[A-Z]\w*", error), shown
    return detail


Expect = Callable[[str], bool]


def surrogate(detail: str) -> bool:
    return "surrogate" in detail.lower() or "unicode" in detail.lower()


def finite(detail: str) -> bool:
    lowered = detail.lower()
    return "finite" in lowered or "nan" in lowered or "infinity" in lowered


def too_deep(detail: str) -> bool:
    lowered = detail.lower()
    return "64" in lowered and ("deep" in lowered or "nest" in lowered)


def not_utf8(detail: str) -> bool:
    return "utf-8" in detail.lower() or "utf8" in detail.lower()


_PARSER_WORDS = (
    "expect",
    "eof",
    "end of",
    "trailing",
    "extra data",
    "unterminated",
    "delimiter",
    "line ",
    "column",
    "char",
)


def parser_reason(detail: str) -> bool:
    lowered = detail.lower()
    return BARE_PARSE_ERROR.lower() not in lowered and any(w in lowered for w in _PARSER_WORDS)


def refused(answer: httpx.Response, expect: Expect, statuses: tuple[int, ...] = (400, 422)) -> None:
    detail = problem(answer, statuses)
    assert expect(detail), f"{answer.status_code}: the detail {detail!r} does not say why"


def arrays(levels: int) -> bytes:
    """``[[...]]``: ``levels`` levels deep."""
    return b"[" * levels + b"]" * levels


def objects(levels: int) -> bytes:
    """``{"a": {"a": ... 0}}``: ``levels`` levels deep."""
    return b'{"a": ' * levels + b"0" + b"}" * levels


def depth(value: Any) -> int:
    """How many levels of arrays and objects ``value`` nests: a scalar 0, ``[]`` 1, ``[[]]`` 2."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children)
    return deepest


# -- every route that reads JSON, with a place for a value ------------------------------------


class Route(NamedTuple):
    """A request that reads JSON: ``build(value)`` is its body with ``value`` where it reads
    one (a fragment of JSON text, as bytes)."""

    method: str
    path: str
    build: Callable[[bytes], bytes]
    content_type: str = "application/json"


def _unique() -> bytes:
    return uuid.uuid4().hex[:10].encode()


def _trigger(extra: bytes) -> bytes:
    return (
        b'{"name": "hostile-' + _unique() + b'", "function": "item_id", "resource": "Dataset",'
        b' "actions": ["Created"], "executionMode": "Once", ' + extra + b"}"
    )


def _service(value: bytes) -> bytes:
    return (
        b'{"name": "hostile-svc", "packageName": "hostile", "packageRevision": 1,'
        b' "initParams": {"k": ' + value + b"},"
        b' "runtime": {"concurrency": 1, "autoscaler": {"minReplicas": 0, "maxReplicas": 1}}}'
    )


ROUTES: dict[str, Route] = {
    "functions-start": Route(
        "POST", "/functions/identity/executions", lambda v: b'{"args": [' + v + b"]}"
    ),
    "functions-start-kwargs": Route(
        "POST", "/functions/identity/executions", lambda v: b'{"kwargs": {"value": ' + v + b"}}"
    ),
    "functions-batch": Route(
        "POST",
        "/functions/identity/executions/batch",
        lambda v: b'{"inputs": [{"args": [1]}, {"args": [' + v + b"]}]}",
    ),
    "functions-call": Route(
        "POST", "/functions/identity/call", lambda v: b'{"args": [' + v + b"]}"
    ),
    "functions-call-kwargs": Route(
        "POST", "/functions/identity/call", lambda v: b'{"kwargs": {"value": ' + v + b"}}"
    ),
    "triggers-create-filter": Route(
        "POST", "/triggers", lambda v: _trigger(b'"filter": {"a": ' + v + b"}")
    ),
    "triggers-create-input": Route(
        "POST", "/triggers", lambda v: _trigger(b'"input": {"k": ' + v + b"}")
    ),
    "triggers-patch": Route(
        "PATCH", "/triggers/hostile-patch", lambda v: b'{"filter": {"a": ' + v + b"}}"
    ),
    "events": Route(
        "POST",
        "/events",
        lambda v: (
            b'{"resource": "Dataset", "action": "Created", "body": {"id": "h-'
            + _unique()
            + b'", "v": '
            + v
            + b"}}"
        ),
    ),
    "packages-push": Route("POST", "/packages", lambda v: codebase_zip(package_json(v)), ZIP),
    "packages-update": Route("PUT", "/packages/hostile", package_json),
    "services-deploy": Route("POST", "/services", _service),
    "applications": Route("POST", "/applications/echo", lambda v: v),
}

#: Hostile JSON values: the fragment, and what the refusal's detail must say.
VALUES: dict[str, tuple[bytes, Expect]] = {
    "lone-high-surrogate": (b'"\\ud800"', surrogate),
    "lone-low-surrogate-inside": (b'"ok \\udfff ok"', surrogate),
    "reversed-pair": (b'"\\ude00\\ud83d"', surrogate),
    "lone-surrogate-in-a-key": (b'{"\\ud800": 1}', surrogate),
    "nan": (b"NaN", finite),
    "infinity": (b"Infinity", finite),
    "minus-infinity": (b"-Infinity", finite),
    "overflowing-float": (b"1e400", finite),
    "overflowing-negative-float": (b"-1e400", finite),
    "nan-inside-a-list": (b'[1, {"b": [NaN]}]', finite),
    "arrays-65": (arrays(65), too_deep),
    "arrays-128": (arrays(128), too_deep),
    "arrays-300": (arrays(300), too_deep),
    "arrays-100000": (arrays(100_000), too_deep),
    "objects-65": (objects(65), too_deep),
    "objects-300": (objects(300), too_deep),
    "objects-100000": (objects(100_000), too_deep),
}


def _send_route(daemon: Daemon, route: Route, body: bytes) -> httpx.Response:
    return send(daemon, route.method, route.path, body, route.content_type)


@pytest.mark.parametrize("route", list(ROUTES), ids=list(ROUTES))
def test_each_route_takes_a_plain_value(daemon: Daemon, route: str) -> None:
    """The control: with a plain value where the hostile ones go, each body is accepted, so
    a refusal below is the hostile value's doing."""
    answer = _send_route(daemon, ROUTES[route], ROUTES[route].build(b"1"))
    assert 200 <= answer.status_code < 300, f"{answer.status_code} {answer.text[:500]}"
    assert_still_serving(daemon)


@pytest.mark.parametrize("value", list(VALUES), ids=list(VALUES))
@pytest.mark.parametrize("route", list(ROUTES), ids=list(ROUTES))
def test_a_hostile_value_is_refused_saying_why(daemon: Daemon, route: str, value: str) -> None:
    fragment, expect = VALUES[value]
    answer = _send_route(daemon, ROUTES[route], ROUTES[route].build(fragment))
    refused(answer, expect)
    assert_still_serving(daemon)


MALFORMED: dict[str, tuple[Callable[[Route], bytes], Expect]] = {
    "truncated": (lambda r: r.build(b"[1, 2")[:-3], parser_reason),
    "trailing-garbage": (lambda r: r.build(b"1") + b" }garbage", parser_reason),
    "not-utf8": (lambda r: r.build(b'"caf\xe9 \xff\xfe"'), not_utf8),
    "utf8-encoded-surrogate": (lambda r: r.build(b'"\xed\xa0\x80"'), not_utf8),
}


@pytest.mark.parametrize("case", list(MALFORMED), ids=list(MALFORMED))
@pytest.mark.parametrize("route", list(ROUTES), ids=list(ROUTES))
def test_a_malformed_body_is_refused_with_the_parsers_reason(
    daemon: Daemon, route: str, case: str
) -> None:
    build, expect = MALFORMED[case]
    chosen = ROUTES[route]
    if chosen.content_type == ZIP:  # the zip is fine; the package.json in it is not
        body = codebase_zip(build(Route("PUT", "", package_json)))
    else:
        body = build(chosen)
    refused(_send_route(daemon, chosen, body), expect)
    assert_still_serving(daemon)


def test_a_valid_surrogate_pair_is_accepted_and_kept(daemon: Daemon) -> None:
    """The escape of a character outside the BMP is a pair, not a lone surrogate: fine."""
    answer = send(daemon, "POST", "/functions/identity/call", b'{"args": ["\\ud83d\\ude00!"]}')
    assert answer.status_code == 200, answer.text
    assert answer.json()["result"] == "\N{GRINNING FACE}!"
    assert_still_serving(daemon)


# -- nesting: where the line is ---------------------------------------------------------------


@pytest.mark.parametrize("nest", [arrays, objects], ids=["arrays", "objects"])
def test_an_event_body_64_levels_deep_is_accepted_and_65_refused(
    daemon: Daemon, nest: Callable[[int], bytes]
) -> None:
    event = b'{"resource": "Dataset", "action": "Created", "body": %s}'
    assert depth(json.loads(nest(64))) == 64
    accepted = send(daemon, "POST", "/events", event % nest(64))
    assert accepted.status_code == 200, accepted.text[:500]
    assert_still_serving(daemon)
    refused(send(daemon, "POST", "/events", event % nest(65)), too_deep)
    assert_still_serving(daemon)


def test_call_args_64_levels_deep_are_accepted_and_kept(daemon: Daemon) -> None:
    """``args`` holding a value 63 levels deep: the args list is 64 levels deep."""
    value = json.loads(arrays(63))
    answer = send(daemon, "POST", "/functions/identity/call", b'{"args": [%s]}' % arrays(63))
    assert answer.status_code == 200, answer.text[:500]
    assert answer.json()["result"] == value
    assert_still_serving(daemon)


def test_an_event_body_300_levels_deep_is_refused_and_executions_still_list(
    daemon: Daemon,
) -> None:
    event = b'{"resource": "Item", "action": "Created", "body": %s}' % arrays(300)
    refused(send(daemon, "POST", "/events", event), too_deep, statuses=(400,))
    listed = send(daemon, "GET", "/executions")
    assert listed.status_code == 200, listed.text[:500]
    assert isinstance(listed.json()["executions"], list)
    assert_still_serving(daemon)


def _and_filter(levels: int, leaf: Any) -> Any:
    """``{"$and": [{"$and": [ ... leaf ]}]}`` with ``levels`` ``$and``s."""
    spec = leaf
    for _ in range(levels):
        spec = {"$and": [spec]}
    return spec


def test_a_filter_of_128_nested_ands_is_refused(daemon: Daemon) -> None:
    definition = {
        "name": "deep-and",
        "function": "item_id",
        "resource": "Model",
        "actions": ["Created"],
        "executionMode": "Once",
        "filter": _and_filter(128, {"a": 1}),
    }
    answer = send(daemon, "POST", "/triggers", json.dumps(definition).encode())
    refused(answer, too_deep, statuses=(400,))
    assert send(daemon, "GET", "/triggers/deep-and").status_code == 404  # nothing was made
    assert_still_serving(daemon)


def test_a_filter_60_levels_deep_is_accepted_and_matches(daemon: Daemon) -> None:
    spec = _and_filter(29, {"a": {"$eq": 1}})  # 29 x ($and's object, its list) + 2 = 60
    assert depth(spec) == 60
    name = f"deep-ok-{uuid.uuid4().hex[:8]}"
    definition = {
        "name": name,
        "function": "item_id",
        "resource": "Model",
        "actions": ["Created"],
        "executionMode": "Once",
        "filter": spec,
    }
    answer = send(daemon, "POST", "/triggers", json.dumps(definition).encode())
    assert answer.status_code == 201, answer.text[:500]
    trigger_id = answer.json()["id"]
    try:
        hit = {"resource": "Model", "action": "Created", "body": {"id": name, "a": 1}}
        fired = send(daemon, "POST", "/events", json.dumps(hit).encode())
        assert fired.status_code == 200, fired.text
        ids = fired.json()["execution_ids"]
        triggers = {send(daemon, "GET", f"/executions/{i}").json()["trigger_id"] for i in ids}
        assert trigger_id in triggers  # the deep filter compiled, and it matches
        miss = {"resource": "Model", "action": "Created", "body": {"id": f"{name}-2", "a": 2}}
        missed = send(daemon, "POST", "/events", json.dumps(miss).encode())
        assert missed.status_code == 200, missed.text
        triggers = {
            send(daemon, "GET", f"/executions/{i}").json()["trigger_id"]
            for i in missed.json()["execution_ids"]
        }
        assert trigger_id not in triggers
    finally:
        send(daemon, "DELETE", f"/triggers/{name}")
    assert_still_serving(daemon)


# -- lone surrogates where the engine keys things ---------------------------------------------


@pytest.mark.parametrize(
    "event",
    [
        b'{"resource": "Item", "action": "Created", "resource_id": "\\ud800", "body": {"id": "a"}}',
        b'{"resource": "Item", "action": "Created", "body": {"id": "\\ud800"}}',
        b'{"resource": "Item", "action": "Created", "body": {"id": "x\\udfffy"}}',
    ],
    ids=["resource-id", "body-id", "body-id-low-surrogate"],
)
def test_a_lone_surrogate_resource_id_under_a_once_trigger_is_400_and_the_daemon_lives(
    daemon: Daemon, once_trigger: str, event: bytes
) -> None:
    refused(send(daemon, "POST", "/events", event), surrogate, statuses=(400,))
    assert_still_serving(daemon)
    # and the trigger still fires for a proper id
    fine = {"resource": "Item", "action": "Created", "body": {"id": uuid.uuid4().hex}}
    answer = send(daemon, "POST", "/events", json.dumps(fine).encode())
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["execution_ids"]) == 1, answer.text


@pytest.mark.parametrize(
    "field",
    [b'"name": "t\\ud800"', b'"function": "item\\udc00id"', b'"resource": "\\ud800"'],
    ids=["name", "function", "resource"],
)
def test_a_lone_surrogate_in_a_trigger_definition_is_400(daemon: Daemon, field: bytes) -> None:
    fields = {
        b"name": b'"name": "surrogate-trigger"',
        b"function": b'"function": "item_id"',
        b"resource": b'"resource": "Dataset"',
    }
    fields[field.split(b":")[0].strip(b'"')] = field
    body = b"{" + b", ".join(fields.values()) + b', "actions": ["Created"]}'
    refused(send(daemon, "POST", "/triggers", body), surrogate, statuses=(400,))
    assert_still_serving(daemon)


def test_a_lone_surrogate_in_an_execution_id_to_rerun_is_refused(daemon: Daemon) -> None:
    answer = send(daemon, "POST", "/functions/add/rerun", b'{"execution_ids": ["\\ud800"]}')
    refused(answer, surrogate)
    assert_still_serving(daemon)


# -- big integers: data, kept exact -----------------------------------------------------------

BIG_INTEGERS = [2**64, 2**64 + 1, -(2**64 + 1), 2**200, -(2**63) - 1]


def _exact(found: Any, number: int) -> bool:
    """Whether ``found`` (parsed JSON) holds ``number`` as an integer, anywhere."""
    stack = [found]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif type(item) is int and item == number:
            return True
    return False


@pytest.mark.parametrize("number", BIG_INTEGERS, ids=[str(n) for n in BIG_INTEGERS])
def test_a_big_integer_argument_comes_back_exact(daemon: Daemon, number: int) -> None:
    for body in (b'{"args": [%d]}' % number, b'{"kwargs": {"value": %d}}' % number):
        answer = send(daemon, "POST", "/functions/identity/call", body)
        assert answer.status_code == 200, answer.text
        called = json.loads(answer.content)  # the standard parser keeps big integers
        assert called["status"] == "SUCCEEDED", called
        assert type(called["result"]) is int and called["result"] == number, answer.text
        shown = json.loads(send(daemon, "GET", f"/executions/{called['id']}").content)
        assert type(shown["result"]) is int and shown["result"] == number, shown["result"]
        assert shown["result_encoding"] == "json"
    assert_still_serving(daemon)


def test_big_integers_in_a_batch_are_kept_exact(daemon: Daemon) -> None:
    body = {"inputs": [{"args": [n]} for n in BIG_INTEGERS]}
    path = "/functions/identity/executions/batch"
    started = send(daemon, "POST", path, json.dumps(body).encode())
    assert started.status_code == 201, started.text
    ids = started.json()["execution_ids"]
    for execution_id, number in zip(ids, BIG_INTEGERS, strict=True):
        outcome = poll(lambda i=execution_id: _finished(daemon, i), 30, f"{execution_id} to finish")
        assert type(outcome["result"]) is int and outcome["result"] == number, outcome
    assert_still_serving(daemon)


def _finished(daemon: Daemon, execution_id: str) -> dict[str, Any] | None:
    answer = send(daemon, "GET", f"/executions/{execution_id}/result?timeout=1")
    assert answer.status_code in (200, 202), answer.text
    body: dict[str, Any] = json.loads(answer.content)
    return body if body["finished"] else None


def test_a_big_integer_in_an_event_body_is_kept_exact(daemon: Daemon) -> None:
    """The triggered function gets the event body with the integer exact, and its result (the
    body, handed back) shows it exact too."""
    name = f"echo-{uuid.uuid4().hex[:8]}"
    definition = {
        "name": name,
        "function": "identity",
        "resource": "BigNumbers",
        "actions": ["Measured"],
        "executionMode": "Always",
    }
    with daemon.http() as http:
        assert http.post("/triggers", json=definition).status_code == 201
    try:
        event = b'{"resource": "BigNumbers", "action": "Measured", "body": {"n": %s, "m": %s}}' % (
            b"18446744073709551616",
            b"-18446744073709551617",
        )
        answer = send(daemon, "POST", "/events", event)
        assert answer.status_code == 200, answer.text
        (execution_id,) = answer.json()["execution_ids"]
        outcome = poll(lambda: _finished(daemon, execution_id), 30, f"{execution_id} to finish")
        assert outcome["status"] == "SUCCEEDED", outcome
        assert outcome["result"] == {"n": 2**64, "m": -(2**64 + 1)}, outcome
        shown = json.loads(send(daemon, "GET", f"/executions/{execution_id}").content)
        assert _exact(shown["result"], 2**64), shown["result"]
    finally:
        with daemon.http() as http:
            http.delete(f"/triggers/{name}")
    assert_still_serving(daemon)


# -- keys: a wrong or missing key gets 401 and nothing else, on every route -------------------

SOME_ID = "exe-0000000000000000000000"
JSON = "application/json"
ZIP_BODY = codebase_zip(package_json())
PROBES: list[tuple[str, str, bytes | None, str]] = [
    ("POST", "/functions/add/executions", b'{"args": [1, 2]}', "application/json"),
    ("POST", "/functions/add/executions/batch", b'{"inputs": [{"args": [1, 2]}]}', JSON),
    ("POST", "/functions/add/call", b'{"args": [1, 2]}', "application/json"),
    ("POST", "/functions/add/call", pickle.dumps(((1, 2), {})), PICKLE),
    ("POST", "/functions/add/rerun", b"{}", "application/json"),
    ("GET", "/functions", None, ""),
    ("GET", "/executions", None, ""),
    ("GET", f"/executions/{SOME_ID}", None, ""),
    ("GET", f"/executions/{SOME_ID}/result", None, ""),
    ("POST", f"/executions/{SOME_ID}/cancel", None, ""),
    ("POST", f"/executions/{SOME_ID}/rerun", None, ""),
    ("GET", f"/executions/{SOME_ID}/status-log", None, ""),
    ("GET", f"/executions/{SOME_ID}/logs", None, ""),
    ("GET", f"/executions/{SOME_ID}/logs?follow=true", None, ""),
    (
        "POST",
        "/triggers",
        b'{"name": "no-key", "function": "add", "resource": "Item", "actions": ["Created"]}',
        "application/json",
    ),
    ("PATCH", "/triggers/hostile-patch", b'{"filter": {"a": 2}}', "application/json"),
    ("GET", "/triggers/hostile-patch", None, ""),
    ("DELETE", "/triggers/hostile-patch", None, ""),
    ("POST", "/events", b'{"resource": "Item", "action": "Created", "body": {"id": "k"}}', JSON),
    ("POST", "/packages", ZIP_BODY, ZIP),
    ("PUT", "/packages/hostile", package_json(b"7"), "application/json"),
    ("POST", "/services", _service(b"7"), "application/json"),
    ("POST", "/applications/echo", b'{"hello": 1}', "application/json"),
    ("GET", "/openapi.json", None, ""),
]
KEYS = {
    "no-key": {},
    "wrong-x-api-key": {"X-API-Key": "tf_wrong"},
    "wrong-bearer": {"Authorization": "Bearer tf_wrong"},
}


def _state(daemon: Daemon) -> dict[str, Any]:
    """What a request without a key must not change."""
    with daemon.http() as http:
        trigger = http.get("/triggers/hostile-patch").json()
        return {
            "add": http.get("/functions/add/statistics").json(),
            "echo": http.get("/functions/echo/statistics").json(),
            "triggers": sorted(t["spec"]["name"] for t in http.get("/triggers").json()),
            "patch-target": (trigger["spec"].get("filter"), trigger["spec"].get("active")),
            "revisions": len(http.get("/packages/hostile/revisions").json()),
            "services": sorted(s.get("name", "") for s in http.get("/services").json()),
        }


@pytest.mark.parametrize("key", list(KEYS), ids=list(KEYS))
def test_every_route_without_a_valid_key_is_401_and_changes_nothing(
    daemon: Daemon, key: str
) -> None:
    before = _state(daemon)
    for method, path, body, content_type in PROBES:
        headers = dict(KEYS[key])
        if body is not None:
            headers["content-type"] = content_type
        try:
            answer = httpx.request(
                method, f"{daemon.url}{path}", content=body, headers=headers, timeout=30
            )
        except httpx.TransportError as exc:
            raise AssertionError(f"{method} {path}: {exc}") from None
        assert answer.status_code == 401, f"{method} {path}: {answer.status_code} {answer.text}"
        detail = answer.json()["detail"]
        assert "key" in detail.lower() and "\n" not in detail, detail
        assert daemon.key not in answer.text
    time.sleep(0.2)  # an execution that slipped through would be stored by now
    assert _state(daemon) == before
    assert_still_serving(daemon)


# -- path and query parameters of the routes that read no body --------------------------------

HOSTILE_IDS = ["%ED%A0%80", "%FF%FE", "%00", "a" * 5000, "..%2F..%2Fetc%2Fpasswd", "%25ud800"]
ID_ROUTES = [
    ("GET", "/executions/{}"),
    ("GET", "/executions/{}/result"),
    ("POST", "/executions/{}/cancel"),
    ("POST", "/executions/{}/rerun"),
    ("GET", "/executions/{}/status-log"),
    ("GET", "/executions/{}/logs"),
    ("GET", "/executions/{}/logs?follow=true"),
    ("GET", "/triggers/{}"),
    ("DELETE", "/triggers/{}"),
    ("POST", "/triggers/{}/activate"),
    ("GET", "/functions/{}"),
    ("GET", "/functions/{}/statistics"),
    ("POST", "/functions/{}/call"),
    ("GET", "/packages/{}"),
    ("GET", "/services/{}"),
    ("GET", "/applications/echo/requests/{}"),
]


@pytest.mark.parametrize("route", ID_ROUTES, ids=[f"{m} {p}" for m, p in ID_ROUTES])
def test_a_hostile_id_in_the_path_is_refused_cleanly(
    daemon: Daemon, route: tuple[str, str]
) -> None:
    method, template = route
    for hostile in HOSTILE_IDS:
        path = template.format(hostile)
        body = b'{"args": []}' if path.endswith("/call") else None
        problem(send(daemon, method, path, body), statuses=(400, 404, 422), named=False)
    assert_still_serving(daemon)


HOSTILE_QUERIES = [
    "/executions?function=%ED%A0%80",
    "/executions?offset=%FF%FE",
    "/executions?offset=%00",
    "/executions?limit=1e400",
    "/executions?limit=NaN",
    "/executions?limit=18446744073709551616",
    "/executions?limit=-1",
    "/executions?since=not-a-time",
    "/executions?since=2024-01-01T00:00:00",
    "/executions?status=NOPE",
    "/executions?trigger=%ED%A0%80",
    "/executions/{id}/result?timeout=NaN",
    "/executions/{id}/result?timeout=Infinity",
    "/executions/{id}/result?timeout=1e400",
    "/executions/{id}/result?timeout=-1",
    "/executions/{id}/logs?follow=%FF",
    "/functions/add/call?timeout=NaN",
    "/functions/add/call?timeout=1e400",
]


@pytest.mark.parametrize("query", HOSTILE_QUERIES)
def test_a_hostile_query_gets_an_answer_or_a_clean_refusal(daemon: Daemon, query: str) -> None:
    call = send(daemon, "POST", "/functions/add/call", b'{"args": [1, 1]}')
    path = query.format(id=call.json()["id"])
    body = b'{"args": [1, 1]}' if "/call" in path else None
    answer = send(daemon, "POST" if body else "GET", path, body, timeout=20)
    if answer.status_code >= 300:
        problem(answer, statuses=(400, 404, 422), named=False)
    assert_still_serving(daemon)


# -- huge results (last: a listing of executions renders them all) --------------------------


def _run_to_end(daemon: Daemon, function: str, args: list[Any]) -> str:
    """Start ``function`` and wait for its end asking for pickle (so no JSON is rendered)."""
    started = send(
        daemon, "POST", f"/functions/{function}/executions", json.dumps({"args": args}).encode()
    )
    assert started.status_code == 201, started.text
    (execution_id,) = started.json()["execution_ids"]

    def ended() -> bool:
        answer = send(
            daemon,
            "GET",
            f"/executions/{execution_id}/result?timeout=1",
            headers={"accept": PICKLE},
        )
        assert answer.status_code in (200, 202), answer.text[:500]
        return answer.status_code == 200

    poll(ended, 60, f"{function} to finish")
    return execution_id


def _pickled_result(daemon: Daemon, execution_id: str) -> Any:
    answer = send(daemon, "GET", f"/executions/{execution_id}/result", headers={"accept": PICKLE})
    assert answer.status_code == 200, answer.text[:500]
    assert answer.headers["content-type"].startswith(PICKLE)
    return pickle.loads(answer.content)


def test_a_result_under_the_limit_is_shown_whole(daemon: Daemon) -> None:
    execution_id = _run_to_end(daemon, "big_string", [500_000])
    shown = json.loads(send(daemon, "GET", f"/executions/{execution_id}").content)
    assert shown["status"] == "SUCCEEDED", shown["error"]
    assert shown["result_encoding"] == "json"
    assert shown["result"] == "x" * 500_000
    assert_still_serving(daemon)


def test_a_huge_string_result_is_shown_truncated_and_kept_whole(daemon: Daemon) -> None:
    n = 3_000_000
    execution_id = _run_to_end(daemon, "big_string", [n])
    answer = send(daemon, "GET", f"/executions/{execution_id}")
    assert answer.status_code == 200, answer.text[:500]
    assert len(answer.content) < 2 * SHOWN_LIMIT
    shown = json.loads(answer.content)
    assert shown["status"] == "SUCCEEDED", shown["error"]
    assert shown["result_encoding"] == "truncated", shown["result_encoding"]
    assert isinstance(shown["result"], str)
    assert 0 < len(shown["result"].encode()) <= SHOWN_SLACK
    assert type(shown.get("result_size")) is int and shown["result_size"] >= n
    assert _pickled_result(daemon, execution_id) == "x" * n
    assert_still_serving(daemon)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def test_a_result_rendering_to_16_mb_keeps_the_daemon_responsive(daemon: Daemon) -> None:
    """Lists that share sub-lists: ~150 bytes pickled, 16 MB of JSON written out. Viewing the
    execution must not stall the daemon (/health within 0.5 s all along) nor balloon it."""
    execution_id = _run_to_end(daemon, "shared_lists", [22])
    pid = daemon.process.pid
    before = _rss_kib(pid)
    viewed: dict[str, Any] = {}

    def view() -> None:
        started = time.monotonic()
        try:
            viewed["answer"] = send(daemon, "GET", f"/executions/{execution_id}", timeout=120)
        except AssertionError as exc:
            viewed["error"] = exc
        viewed["seconds"] = time.monotonic() - started

    viewer = threading.Thread(target=view)
    latencies: list[float] = []
    samples = [before]
    watching = threading.Event()

    def sample() -> None:  # the daemon's memory, all along (apart from /health's wait)
        while not watching.wait(0.01):
            samples.append(_rss_kib(pid))

    sampler = threading.Thread(target=sample)
    sampler.start()
    viewer.start()
    try:
        with httpx.Client(base_url=daemon.url, timeout=30) as http:
            while viewer.is_alive() or len(latencies) < 5:
                started = time.monotonic()
                health = http.get("/health")
                latencies.append(time.monotonic() - started)
                assert health.status_code == 200
                time.sleep(0.02)
    finally:
        viewer.join()
        watching.set()
        sampler.join()
    peak = max(samples)
    assert "error" not in viewed, viewed.get("error")
    answer: httpx.Response = viewed["answer"]
    assert answer.status_code == 200, answer.text[:500]
    encoding = re.search(rb'"result_encoding":\s*"(\w+)"', answer.content)
    report = (
        f"view took {viewed['seconds']:.2f} s, /health at worst {max(latencies):.2f} s "
        f"({len(latencies)} probes), RSS {before // 1024} -> {peak // 1024} MB, "
        f"result_encoding {encoding and encoding.group(1).decode()!r}, "
        f"body {len(answer.content)} bytes"
    )
    assert max(latencies) < 0.5, report
    assert (peak - before) < 200 * 1024, report
    # (not parsed if it is the whole 16 MB: millions of lists would slow this process down)
    assert len(answer.content) < 2 * SHOWN_LIMIT, report
    shown = json.loads(answer.content)
    assert shown["result_encoding"] == "truncated", report
    assert isinstance(shown["result"], str) and len(shown["result"].encode()) <= SHOWN_SLACK
    assert type(shown.get("result_size")) is int and shown["result_size"] < 10_000, report
    whole = _pickled_result(daemon, execution_id)
    for _ in range(22):  # the shared structure, unpickled as it was made
        assert len(whole) == 2 and whole[0] is whole[1]
        whole = whole[0]
    assert whole == [0]
    assert_still_serving(daemon)
