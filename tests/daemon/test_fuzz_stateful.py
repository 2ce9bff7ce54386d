"""The live daemon fuzzed through sequences of calls, and without a key.

A stateful run: schemathesis' state machine over the daemon's OpenAPI document, its links
inferred by schemathesis' dependency analysis plus the ones the document cannot say by itself
(an execution id that a start returns is the one the execution routes take), so ids made by
one call feed the next. No step may get a 5xx, and the daemon serves after. Then every
operation, without a key and with a wrong one: 401 and nothing else, but for /health.
"""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from requests.structures import CaseInsensitiveDict
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error

from .helpers import Daemon
from .test_fuzz import _operations, api_schema, fuzzing, tame

pytestmark = pytest.mark.slow

__all__ = ["api_schema"]  # the fixture, shared with test_fuzz (it registers the binary bodies)

#: Scenarios of the stateful run, and steps at most in each: a few hundred requests.
SCENARIOS = 80
STEPS = 10
#: Generated requests per operation in the keyless runs.
KEYLESS_EXAMPLES = 4

_EXECUTION_ROUTES = [
    ("get", "/executions/{execution_id}"),
    ("get", "/executions/{execution_id}/result"),
    ("post", "/executions/{execution_id}/cancel"),
    ("post", "/executions/{execution_id}/rerun"),
    ("get", "/executions/{execution_id}/status-log"),
    ("get", "/executions/{execution_id}/logs"),
]
#: (method, path, status) of a response, the JSON pointer of the execution id in its body.
_MAKES_EXECUTIONS = [
    ("post", "/functions/{name}/executions", "201", "/execution_ids/0"),
    ("post", "/functions/{name}/executions/batch", "201", "/execution_ids/0"),
    ("post", "/functions/{name}/call", "200", "/id"),
    ("post", "/functions/{name}/call", "202", "/id"),
    ("post", "/events", "200", "/execution_ids/0"),
    ("post", "/executions/{execution_id}/rerun", "200", "/execution_ids/0"),
    ("post", "/functions/{name}/rerun", "200", "/execution_ids/0"),
]


def _linked(document: dict[str, Any]) -> dict[str, Any]:
    """The document with links from every response that names an execution to every route
    that takes one, and from an application's request to its later answer."""
    document = copy.deepcopy(document)
    paths = document["paths"]
    for method, path, status, pointer in _MAKES_EXECUTIONS:
        response = paths[path][method]["responses"].setdefault(status, {"description": ""})
        links = response.setdefault("links", {})
        for target_method, target_path in _EXECUTION_ROUTES:
            operation_id = paths[target_path][target_method]["operationId"]
            links[f"tf-{operation_id}"] = {
                "operationId": operation_id,
                "parameters": {"execution_id": f"$response.body#{pointer}"},
            }
    request = paths["/applications/{name}/requests/{request_id}"]["get"]["operationId"]
    for status in ("200", "202", "502"):
        response = paths["/applications/{name}"]["post"]["responses"][status]
        response.setdefault("links", {})[f"tf-{request}"] = {
            "operationId": request,
            "parameters": {
                "name": "$request.path.name",
                "request_id": "$response.header.X-Request-Id",
            },
        }
    return document


def test_stateful_sequences_never_get_a_server_error(
    daemon: Daemon, api_schema: schemathesis.BaseSchema
) -> None:
    with daemon.http() as http:
        document = http.get("/openapi.json").json()
    schema = schemathesis.openapi.from_dict(_linked(document))
    base = schema.as_state_machine()
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    operations: Counter[str] = Counter()
    found: Counter[str] = Counter()  # 200s on routes that take an id: ids that flowed

    class Workflow(base):  # type: ignore[misc, valid-type]
        def before_call(self, case: Case[Any]) -> None:
            tame(case)
            case.headers = CaseInsensitiveDict({**(case.headers or {}), **daemon.headers})

        def get_call_kwargs(self, case: Case[Any]) -> dict[str, Any]:
            return {"base_url": daemon.url, "timeout": 30}

        def validate_response(
            self, response: Any, case: Case[Any], *args: Any, **kwargs: Any
        ) -> None:
            statuses[response.status_code] += 1
            operations[case.operation.label] += 1
            if response.status_code == 200 and "{" in case.operation.path:
                found[case.operation.label] += 1
            try:
                case.validate_response(response, checks=[not_a_server_error])
            except AssertionError as exc:
                line = str(exc).splitlines()[0]
                failures.append(f"{case.operation.label} -> {response.status_code}: {line}")

    Workflow.run(
        settings=settings(
            max_examples=SCENARIOS,
            stateful_step_count=STEPS,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
    )
    assert not failures, "\n".join(sorted(set(failures)))
    assert statuses.total() >= SCENARIOS * 2, statuses  # the machine did make requests
    assert statuses[401] == 0, statuses  # with the key: every answer is the route's own
    assert len(operations) >= 15, operations  # and went about the API
    # links were followed: a route taking an execution id answered 200 for an id a
    # previous step made
    assert any(label.startswith("GET /executions/{") for label in found), found
    with daemon.http() as http:
        assert http.get("/health").json() == {"status": "ok"}
        called = http.post("/functions/add/call", json={"args": [2, 3]})
        assert called.status_code == 200 and called.json()["result"] == 5, called.text


def _made(daemon: Daemon) -> dict[str, list[Any]]:
    """What only a request could make: triggers, package revisions, service versions."""
    with daemon.http() as http:
        packages = http.get("/packages").json()
        return {
            "triggers": sorted(t["spec"]["name"] for t in http.get("/triggers").json()),
            "packages": sorted((p["name"], p["revision"]) for p in packages),
            "services": sorted(s["name"] for s in http.get("/services").json()),
        }


_KEYS = {"no-key": None, "wrong-key": "tf_this-is-not-the-key"}


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("key", list(_KEYS))
def test_every_operation_without_a_valid_key_is_401(
    daemon: Daemon, api_schema: schemathesis.BaseSchema, key: str, mode: GenerationMode
) -> None:
    """Generated requests to every operation, with no key or a wrong one: 401 with one line,
    whatever the request holds, but for /health (200)."""
    wrong: list[str] = []
    statuses: Counter[int] = Counter()
    operations = _operations(api_schema)
    assert len(operations) >= 20
    before = _made(daemon)
    for operation in operations:
        strategy = operation.as_strategy(generation_mode=mode)

        @fuzzing(KEYLESS_EXAMPLES)
        @given(case=strategy, timeout=st.sampled_from(["0", "0.01"]))
        def run(case: Case[Any], timeout: str) -> None:
            tame(case, timeout)
            headers = {
                k: v
                for k, v in (case.headers or {}).items()
                if k.lower() not in ("x-api-key", "authorization")
            }
            if _KEYS[key] is not None:
                headers["X-API-Key"] = _KEYS[key]
            case.headers = CaseInsensitiveDict(headers)
            response = case.call(base_url=daemon.url, timeout=30)
            sent = {k.lower(): v for k, v in response.request.headers.items()}
            assert sent.get("x-api-key") == _KEYS[key] and "authorization" not in sent
            statuses[response.status_code] += 1
            label = case.operation.label
            if case.operation.path == "/health":
                if response.status_code != 200:
                    wrong.append(f"{label}: {response.status_code} {response.text[:200]}")
                return
            detail = None
            if response.status_code == 401:
                try:
                    detail = response.json().get("detail")
                except ValueError:
                    detail = None
            if response.status_code != 401 or not isinstance(detail, str) or "key" not in detail:
                wrong.append(f"{label}: {response.status_code} {response.text[:200]}")

        run()
    assert not wrong, "\n".join(sorted(set(wrong)))
    assert statuses[401] >= (len(operations) - 1) * 2, statuses  # requests were made
    assert statuses[200] >= 1  # /health among them
    assert _made(daemon) == before  # nothing a refused request carried was made
    with daemon.http() as http:
        assert http.get("/health").json() == {"status": "ok"}
