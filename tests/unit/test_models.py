from __future__ import annotations

import time

import pytest

from triggerfish import ConfigurationError, FunctionSpec, ServiceSpec
from triggerfish.engine.replica import protocol
from triggerfish.engine.runtimes.process import exit_reason
from triggerfish.models import (
    claim_execution_ids,
    execution_ids_from,
    new_execution_id,
    new_execution_ids,
)


def test_function_spec_defaults_and_backoff() -> None:
    spec = FunctionSpec.build(name="f", service="f", backoff=0.5, max_backoff=3)
    assert spec.timeout == 300 and spec.max_attempts == 1
    assert [spec.backoff_for(n) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"timeout": 0}, "timeout"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"name": "has space"}, "name"),
        ({"memory": -1}, "memory"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_function_spec_names_the_field(fields: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigurationError, match=f"'{named}'"):
        FunctionSpec.build(**{"name": "f", "service": "f", **fields})


def test_service_spec_refuses_max_below_min() -> None:
    with pytest.raises(ConfigurationError, match=r"max_replicas.*below min_replicas"):
        ServiceSpec.build(name="s", min_replicas=3, max_replicas=2)


def test_secrets_are_not_in_repr() -> None:
    spec = ServiceSpec.build(name="s", secrets={"TOKEN": "s3cret"})
    assert "s3cret" not in repr(spec)


def test_ids_sort_by_creation() -> None:
    ids = [new_execution_id() for _ in range(1000)]
    ids += [*new_execution_ids(1000), new_execution_id(), *new_execution_ids(1)]
    assert ids == sorted(ids) and len(set(ids)) == 2002
    assert {len(i) for i in ids} == {len(ids[0])}


def test_ids_made_ahead_sort_by_when_they_are_claimed() -> None:
    first = time.time_ns() + 10**9
    ahead = execution_ids_from(first, 3)
    before = new_execution_id()
    assert claim_execution_ids(first, first + 2)
    after = new_execution_id()
    assert [before, *ahead, after] == sorted([before, *ahead, after])
    assert not claim_execution_ids(first + 1, first + 2)  # an id at or after them exists
    assert not claim_execution_ids(time.time_ns() - 10**9, time.time_ns())


def test_frames_round_trip() -> None:
    messages = [(protocol.RUN, "exe-1", "f", b"\x00" * 10, 1), (protocol.CANCEL, "exe-2")]
    frame = protocol.encode(messages)
    (size,) = protocol.HEADER.unpack(frame[: protocol.HEADER.size])
    assert size == len(frame) - protocol.HEADER.size
    assert protocol.decode(frame[protocol.HEADER.size :]) == messages


def test_exit_reasons_read_well() -> None:
    assert exit_reason(-9) == "killed by signal 9 (SIGKILL)"
    assert exit_reason(-11) == "killed by signal 11 (SIGSEGV)"
    assert exit_reason(3) == "exited with code 3"
