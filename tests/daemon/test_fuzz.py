"""The live daemon fuzzed from its own OpenAPI document: no input makes it answer 5xx."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from requests.structures import CaseInsensitiveDict
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok

from .helpers import Daemon

pytestmark = pytest.mark.slow

#: Examples per operation and generation mode: about 24 operations x 2 modes, under a minute.
EXAMPLES = 15


def fuzzing(examples: int) -> Any:
    """The settings of a fuzz run over one operation: ``examples`` generated requests,
    reproducible (derandomized, no database), no deadline, no health checks."""
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )


def _long_wait(value: object) -> bool:
    try:
        return float(str(value)) > 0.5
    except ValueError:
        return False


def tame(case: Case[Any], timeout: str = "0.01") -> None:
    """Waits kept short (a generated ``timeout=300`` would stall the run), and no endless
    stream: a log follow is not followed, an event stream ends after ``timeout``."""
    if case.query:
        if _long_wait(case.query.get("timeout")):
            case.query["timeout"] = timeout  # a valid wait, but a short one
        if "follow" in case.query:
            case.query["follow"] = "false"
    if case.operation.path == "/events/stream":
        case.query = {**(case.query or {}), "timeout": timeout}


@pytest.fixture(scope="module")
def api_schema(daemon: Daemon) -> schemathesis.BaseSchema:
    with daemon.http() as http:
        document = http.get("/openapi.json").json()
    # Bodies the daemon documents as binary (pickles, zips): the fuzzer's random bytes as they are.
    for operations in document["paths"].values():
        for operation in operations.values():
            for media_type in operation.get("requestBody", {}).get("content", {}):
                if "json" not in media_type:
                    schemathesis.serializer.alias(media_type, "application/octet-stream")
    return schemathesis.openapi.from_url(f"{daemon.url}/openapi.json", headers=daemon.headers)


def _operations(schema: schemathesis.BaseSchema) -> list[APIOperation[Any, Any, Any, Any]]:
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # the daemon's document is valid
        operations.append(result.ok())
    return operations


def test_the_schema_is_the_daemons_own(api_schema: schemathesis.BaseSchema) -> None:
    labels = {op.label for op in _operations(api_schema)}
    assert "POST /functions/{name}/call" in labels
    assert "GET /executions" in labels
    assert "POST /triggers" in labels


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_input_gets_a_server_error(
    daemon: Daemon, api_schema: schemathesis.BaseSchema, mode: GenerationMode
) -> None:
    """Every operation, ``EXAMPLES`` generated requests each, with the key: never a 5xx.
    Waits are capped so a generated ``timeout=300`` does not stall the run."""
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    operations = _operations(api_schema)
    assert len(operations) >= 20
    for operation in operations:
        strategy = operation.as_strategy(generation_mode=mode)

        @fuzzing(EXAMPLES)
        @given(case=strategy, timeout=st.sampled_from(["0", "0.01"]))
        def run(case: Case[Any], timeout: str) -> None:
            tame(case, timeout)
            # the key documented as a header parameter: negative mode would mangle it and
            # never get past the key check
            case.headers = CaseInsensitiveDict({**case.headers, **daemon.headers})
            response = case.call(base_url=daemon.url)
            statuses[response.status_code] += 1
            try:
                case.validate_response(response, checks=[not_a_server_error])
            except AssertionError as exc:
                failures.append(f"{case.operation.label}: {str(exc).splitlines()[0]}")
                raise

        try:
            run()
        except AssertionError:
            continue
    assert not failures, "\n".join(failures)
    assert statuses.total() >= len(operations) * 5  # the fuzzer did send requests
    assert statuses[401] == 0  # with the key: every answer is the route's own
    with daemon.http() as http:  # and it still serves
        assert http.get("/health").json() == {"status": "ok"}
