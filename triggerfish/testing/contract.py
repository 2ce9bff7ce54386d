"""The duties of every runtime (see ``engine/runtimes/abc.py``), as a pytest suite.

Subclass ``RuntimeContract`` in a test module and give it a ``runtime`` fixture that returns a
new, unstarted Runtime; ``runtime_name`` is what its services' ``runtime`` field says::

    class TestMine(RuntimeContract):
        runtime_name = "mine"

        @pytest.fixture
        def runtime(self) -> Runtime:
            return MyRuntime()

Each test starts the runtime in a task group of its own, starts replicas of a small service
(its functions travel by value, so a replica need not import this module) and speaks the
replica protocol to them directly, as the scheduler does. It needs pytest and anyio's plugin.
"""

from __future__ import annotations

import pickle
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import anyio
import cloudpickle
import pytest
from anyio.abc import TaskGroup

from ..engine.replica import protocol
from ..engine.runtimes.abc import Replica, ReplicaPlan, Runtime
from ..models import FunctionSpec, ServiceSpec

__all__ = ["RuntimeContract"]

cloudpickle.register_pickle_by_value(sys.modules[__name__])

#: How long a replica may take to answer (a container is slower to start than a process).
PATIENCE = 60.0


def add(a: int, b: int) -> int:
    return a + b


def fail(message: str) -> None:
    raise ValueError(message)


def linger(seconds: float) -> str:
    """Sleeps in short steps, so that a cancel raised into its thread lands soon."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)
    return "lingered"


class Unstartable:
    def __init__(self) -> None:
        raise RuntimeError("cannot start")

    def never(self) -> None:
        """Never runs."""


class Heard:
    """A ReplicaListener that keeps what it hears, and wakes who waits for more."""

    def __init__(self) -> None:
        self.messages: list[tuple[Any, ...]] = []
        self.exits: list[str] = []
        self._changed = anyio.Event()

    def replica_messages(self, replica: Replica, messages: list[tuple[Any, ...]]) -> None:
        self.messages.extend(messages)
        self._changed.set()

    def replica_exited(self, replica: Replica, reason: str) -> None:
        self.exits.append(reason)
        self._changed.set()

    async def until(self, what: str, check: Any) -> Any:
        """Wait until ``check()`` is truthy; its value."""
        with anyio.fail_after(PATIENCE):
            while not (found := check()):
                await self._changed.wait()
                self._changed = anyio.Event()
        return found

    def done(self, execution_id: str) -> tuple[Any, ...] | None:
        return next(
            (m for m in self.messages if m[0] == protocol.DONE and m[1] == execution_id), None
        )


def _plan(runtime_name: str, *, concurrency: int = 2, failing_init: bool = False) -> ReplicaPlan:
    service = ServiceSpec.build(name="contract", runtime=runtime_name, concurrency=concurrency)
    if failing_init:
        name = "Unstartable.never"
        functions = {name: FunctionSpec.build(name=name, service="contract")}
        payload: dict[str, Any] = {
            "kind": "class",
            "target": Unstartable,
            "init_params": {},
            "methods": {name: "never"},
        }
    else:
        targets = {"add": add, "fail": fail, "linger": linger}
        functions = {n: FunctionSpec.build(name=n, service="contract") for n in targets}
        payload = {"kind": "function", "functions": targets}
    payload.update(concurrency=concurrency, whole_views=[])
    return ReplicaPlan(
        service=service, functions=functions, init_payload=bytes(cloudpickle.dumps(payload))
    )


def _run(execution_id: str, function: str, *args: Any) -> tuple[Any, ...]:
    blob = pickle.dumps((args, {}), protocol=pickle.HIGHEST_PROTOCOL)
    return (protocol.RUN, execution_id, function, blob, 1)


class RuntimeContract:
    """What every runtime must do; see the module's doc for how to run it on one."""

    runtime_name: ClassVar[str] = "process"
    pytestmark = pytest.mark.anyio

    @pytest.fixture
    def runtime(self) -> Runtime:
        raise NotImplementedError("give the runtime under test as a fixture")

    @asynccontextmanager
    async def _started(self, runtime: Runtime) -> AsyncIterator[TaskGroup]:
        async with anyio.create_task_group() as tg:
            await runtime.start(tg)
            try:
                yield tg
            finally:
                with anyio.CancelScope(shield=True):
                    await runtime.aclose()
                tg.cancel_scope.cancel()

    async def _ready(
        self, runtime: Runtime, tg: TaskGroup, plan: ReplicaPlan | None = None
    ) -> tuple[Replica, Heard]:
        heard = Heard()
        plan = plan or _plan(self.runtime_name)
        runtime.check(plan)
        replica = await runtime.start_replica(plan, heard, tg)
        assert isinstance(replica.id, str) and replica.id
        await heard.until("READY", lambda: any(m[0] == protocol.READY for m in heard.messages))
        return replica, heard

    async def test_a_ready_replica_runs_and_reports_a_result(self, runtime: Runtime) -> None:
        async with self._started(runtime) as tg:
            replica, heard = await self._ready(runtime, tg)
            replica.send(_run("e1", "add", 2, 3))
            done = await heard.until("DONE", lambda: heard.done("e1"))
            _, _, ok, payload, view = done
            assert ok is True
            assert pickle.loads(payload) == 5
            assert view == ("json", "5")
            await replica.stop(5)

    async def test_an_error_is_reported_with_its_type_and_message(self, runtime: Runtime) -> None:
        async with self._started(runtime) as tg:
            replica, heard = await self._ready(runtime, tg)
            replica.send(_run("e1", "fail", "it broke"))
            _, _, ok, error, _ = await heard.until("DONE", lambda: heard.done("e1"))
            assert ok is False
            assert error[0].endswith("ValueError") and error[1] == "it broke"
            await replica.stop(5)

    async def test_messages_keep_their_order_and_every_run_is_answered(
        self, runtime: Runtime
    ) -> None:
        async with self._started(runtime) as tg:
            replica, heard = await self._ready(runtime, tg)
            for i in range(20):
                replica.send(_run(f"e{i}", "add", i, i))
            for i in range(20):
                done = await heard.until("DONE", lambda i=i: heard.done(f"e{i}"))
                assert done[2] is True and pickle.loads(done[3]) == 2 * i
            await replica.stop(5)

    async def test_a_cancel_ends_a_running_execution(self, runtime: Runtime) -> None:
        async with self._started(runtime) as tg:
            replica, heard = await self._ready(runtime, tg)
            replica.send(_run("e1", "linger", 30))
            await anyio.sleep(0.3)
            replica.send((protocol.CANCEL, "e1"))
            _, _, ok, error, _ = await heard.until("DONE", lambda: heard.done("e1"))
            assert ok is False and error[0].endswith("InvocationCancelledError")
            replica.send(_run("e2", "add", 1, 1))  # the replica goes on
            assert (await heard.until("DONE", lambda: heard.done("e2")))[2] is True
            await replica.stop(5)

    async def test_a_stopped_replica_is_reported_once(self, runtime: Runtime) -> None:
        async with self._started(runtime) as tg:
            replica, heard = await self._ready(runtime, tg)
            await replica.stop(5)
            await heard.until("exit", lambda: heard.exits)
            await anyio.sleep(0.2)
            assert len(heard.exits) == 1

    async def test_a_killed_replica_is_reported_once_with_a_reason(self, runtime: Runtime) -> None:
        async with self._started(runtime) as tg:
            replica, heard = await self._ready(runtime, tg)
            replica.send(_run("e1", "linger", 30))
            replica.kill()
            (reason,) = await heard.until("exit", lambda: heard.exits)
            assert reason
            await anyio.sleep(0.2)
            assert len(heard.exits) == 1
            assert heard.done("e1") is None  # what it ran is lost, not reported done

    async def test_an_init_that_raises_is_reported_and_ends_the_replica(
        self, runtime: Runtime
    ) -> None:
        async with self._started(runtime) as tg:
            heard = Heard()
            plan = _plan(self.runtime_name, failing_init=True)
            await runtime.start_replica(plan, heard, tg)
            failed = await heard.until(
                "INIT_FAILED",
                lambda: next((m for m in heard.messages if m[0] == protocol.INIT_FAILED), None),
            )
            etype, emsg, _ = failed[1]
            assert etype.endswith("RuntimeError") and emsg == "cannot start"
            await heard.until("exit", lambda: heard.exits)
            assert not any(m[0] == protocol.READY for m in heard.messages)
