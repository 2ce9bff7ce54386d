"""The event hub: who hears what, and a slow subscriber never holds the engine up."""

from __future__ import annotations

import anyio
import pytest

from triggerfish.engine.events import (
    EVENT_KINDS,
    EventHub,
    ExecutionLogged,
    ExecutionStatusChanged,
    ReplicaStarted,
    SubscriberLagged,
)

pytestmark = pytest.mark.anyio


def _logged(n: int, execution_id: str = "exe-1", function: str = "f") -> ExecutionLogged:
    return ExecutionLogged(
        at=float(n), execution_id=execution_id, function=function, stream="stdout", text=f"{n}\n"
    )


def _changed(execution_id: str, function: str) -> ExecutionStatusChanged:
    return ExecutionStatusChanged(
        at=1.0,
        execution_id=execution_id,
        function=function,
        status="RUNNING",
        previous="PENDING",
        attempt=1,
    )


async def test_nobody_listening_wants_nothing() -> None:
    hub = EventHub()
    assert not any(hub.wants(kind) for kind in EVENT_KINDS.values())
    stop = hub.listen(ExecutionLogged, lambda event: None)
    assert hub.wants(ExecutionLogged) and not hub.wants(ReplicaStarted)
    stop()
    assert not hub.wants(ExecutionLogged)
    with hub.subscribe(["ReplicaStarted"]):
        assert hub.wants(ReplicaStarted)
        assert not hub.wants(ExecutionLogged)
    assert not hub.wants(ReplicaStarted)


async def test_a_slow_subscriber_is_told_what_it_missed() -> None:
    hub = EventHub()
    with hub.subscribe(buffer=3) as events:
        for n in range(10):  # never blocks: the seven that do not fit are counted
            hub.publish(_logged(n))
        got = [await events.__anext__() for _ in range(4)]
        assert [e.text for e in got[:3]] == ["0\n", "1\n", "2\n"]  # type: ignore[attr-defined]
        assert isinstance(got[3], SubscriberLagged) and got[3].missed == 7
        hub.publish(_logged(10))
        hub.publish(_logged(11))
        later = [await events.__anext__() for _ in range(2)]
        assert [e.text for e in later] == ["10\n", "11\n"]  # type: ignore[attr-defined]


async def test_a_lag_comes_where_the_gap_is() -> None:
    hub = EventHub()
    with hub.subscribe(buffer=2) as events:
        for n in range(4):
            hub.publish(_logged(n))
        assert (await events.__anext__()).text == "0\n"  # type: ignore[attr-defined]
        hub.publish(_logged(4))  # room again: the lag goes in before it
        rest = [await events.__anext__() for _ in range(3)]
        assert rest[0].text == "1\n"  # type: ignore[attr-defined]
        assert isinstance(rest[1], SubscriberLagged) and rest[1].missed == 2
        assert rest[2].text == "4\n"  # type: ignore[attr-defined]


async def test_filters_by_kind_function_and_execution() -> None:
    hub = EventHub()
    by_kind = hub.subscribe([ExecutionStatusChanged])
    by_function = hub.subscribe(function="resizer.resize")
    by_execution = hub.subscribe(execution_id="exe-2")
    hub.publish(_changed("exe-1", "resizer.resize@2"))  # a pinned revision is its function's
    hub.publish(_logged(1, "exe-2", "other"))
    hub.publish(ReplicaStarted(at=1.0, service="resizer", replica_id="r1"))  # names neither
    hub.close()
    assert [e.kind async for e in by_kind] == ["ExecutionStatusChanged"]
    assert [e.execution_id async for e in by_function] == ["exe-1"]  # type: ignore[attr-defined]
    assert [e.kind async for e in by_execution] == ["ExecutionLogged"]


async def test_close_ends_a_waiting_subscriber() -> None:
    hub = EventHub()
    events = hub.subscribe()
    got: list[object] = []

    async def read() -> None:
        got.extend([e async for e in events])

    async with anyio.create_task_group() as tg:
        tg.start_soon(read)
        await anyio.sleep(0.01)
        hub.publish(_logged(1))
        await anyio.sleep(0.01)
        hub.close()
    assert len(got) == 1


async def test_a_failing_listener_does_not_stop_the_others() -> None:
    hub = EventHub()
    heard: list[object] = []

    def broken(event: object) -> None:
        raise RuntimeError("a bug in a part")

    hub.listen(ExecutionLogged, broken)
    hub.listen(ExecutionLogged, heard.append)
    with hub.subscribe() as events:
        hub.publish(_logged(1))
        assert (await events.__anext__()).kind == "ExecutionLogged"
    assert len(heard) == 1


def test_unknown_kinds_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"no event kind 'Nope'.*ExecutionCreated"):
        EventHub().subscribe(["Nope"])


def test_events_are_frozen_and_json() -> None:
    event = _logged(1)
    with pytest.raises(AttributeError):
        event.text = "changed"  # type: ignore[misc]
    assert event.to_json() == {
        "kind": "ExecutionLogged",
        "at": 1.0,
        "execution_id": "exe-1",
        "function": "f",
        "stream": "stdout",
        "text": "1\n",
    }
