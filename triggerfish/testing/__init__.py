"""What tests of code built on triggerfish (and triggerfish's own) use: an in-process runtime.

``FakeRuntime`` runs replicas inside the engine's own process, as tasks on its event loop: it
speaks the replica protocol to the engine as a real runtime does (READY, DONE, INIT_FAILED; a
replica that ends is reported once), so the engine's statuses, retries, timeouts, cancels and
replica losses can be tested without starting a process::

    from triggerfish import Engine
    from triggerfish.testing import FakeRuntime

    runtime = FakeRuntime()
    engine = Engine(runtime=runtime)  # "process" services run on it

What it does not do, unlike a real replica: it captures no output (``print`` goes to the
test's own stdout), has no execution context (progress, nested calls), and cannot stop a
synchronous function that is running: on a cancel it reports the execution cancelled at once
and leaves the thread to finish on its own. A function named in ``stubborn`` ignores cancels
(as a function stuck in C code does), so the engine's kill grace ends its replica.
``replica.die(reason)`` makes a replica end as if it crashed.

``triggerfish.testing.contract.RuntimeContract`` is the test suite every runtime passes.
"""

from __future__ import annotations

import inspect
import itertools
import pickle
from collections.abc import Callable, Collection
from typing import Any

import anyio
import cloudpickle
from anyio.abc import TaskGroup

from ..engine.replica import protocol, views
from ..engine.replica.runner import _error_triple
from ..engine.runtimes.abc import Replica, ReplicaListener, ReplicaPlan, Runtime
from ..errors import ConfigurationError, InvocationCancelledError

__all__ = ["FakeReplica", "FakeRuntime"]

_ids = itertools.count(1)


class FakeReplica(Replica):
    """One in-process replica: its functions run as tasks (sync ones in worker threads)."""

    def __init__(self, runtime: FakeRuntime, plan: ReplicaPlan, listener: ReplicaListener) -> None:
        self.id = f"fake-{next(_ids)}"
        self._runtime = runtime
        self._plan = plan
        self._listener = listener
        self._functions: dict[str, Callable[..., Any]] = {}
        self._running: dict[str, tuple[anyio.CancelScope, str]] = {}  # id -> (scope, function)
        self._task_group: TaskGroup | None = None
        self._ended = anyio.Event()
        self.exit_reason: str | None = None

    # -- Replica --------------------------------------------------------------------------

    def send(self, message: tuple[Any, ...]) -> None:
        if self.exit_reason is not None or self._task_group is None:
            return
        kind = message[0]
        if kind == protocol.RUN:
            _, execution_id, function, blob, _attempt = message
            scope = anyio.CancelScope()
            self._running[execution_id] = (scope, function)
            self._task_group.start_soon(self._run, scope, execution_id, function, blob)
        elif kind == protocol.CANCEL:
            running = self._running.get(message[1])
            if running is not None and running[1] not in self._runtime.stubborn:
                running[0].cancel()

    async def stop(self, grace: float) -> None:
        self._end("stopped")

    def kill(self) -> None:
        self._end("killed by the engine")

    def die(self, reason: str = "died (killed by the test)") -> None:
        """End as a crashed replica does: what it ran is lost, and the engine is told."""
        self._end(reason)

    # -- its life -------------------------------------------------------------------------

    async def run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        async with anyio.create_task_group() as tg:
            self._task_group = tg
            task_status.started()
            tg.start_soon(self._init)
            await self._ended.wait()
            tg.cancel_scope.cancel()
        self._runtime.replicas.remove(self)
        assert self.exit_reason is not None
        self._listener.replica_exited(self, self.exit_reason)

    async def _init(self) -> None:
        await anyio.sleep(self._runtime.init_delay)
        try:
            spec = cloudpickle.loads(self._plan.init_payload)
            if spec["kind"] == "class":
                instance = spec["target"](**spec["init_params"])
                self._functions = {n: getattr(instance, a) for n, a in spec["methods"].items()}
            else:
                self._functions = dict(spec["functions"])
        except Exception as exc:
            self._listener.replica_messages(self, [(protocol.INIT_FAILED, _error_triple(exc))])
            self._end("its initialization failed")
            return
        self._listener.replica_messages(self, [(protocol.READY, 0)])

    async def _run(
        self, scope: anyio.CancelScope, execution_id: str, function: str, blob: bytes
    ) -> None:
        target = self._functions[function]
        done: tuple[Any, ...]
        with scope:
            try:
                args, kwargs = protocol.load_input(blob)
                if inspect.iscoroutinefunction(target):
                    value = await target(*args, **kwargs)
                else:
                    value = await anyio.to_thread.run_sync(
                        lambda: target(*args, **kwargs), abandon_on_cancel=True
                    )
                view = views.NULL if value is None else views.result_view(value, views.VIEW_LIMIT)
                done = (protocol.DONE, execution_id, True, _dumps(value), view)
            except Exception as exc:
                done = (protocol.DONE, execution_id, False, _error_triple(exc), None)
        if scope.cancelled_caught:
            cancelled = InvocationCancelledError("cancelled")
            done = (protocol.DONE, execution_id, False, _error_triple(cancelled), None)
        self._running.pop(execution_id, None)
        if self.exit_reason is None:
            self._listener.replica_messages(self, [done])

    def _end(self, reason: str) -> None:
        if self.exit_reason is None:
            self.exit_reason = reason
            self._ended.set()


def _dumps(value: Any) -> bytes:
    try:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        return bytes(cloudpickle.dumps(value))


class FakeRuntime(Runtime):
    """Replicas in this process (see the module's doc). ``init_delay`` seconds pass before a
    replica is ready; ``stubborn`` names functions that ignore cancels."""

    def __init__(self, *, init_delay: float = 0.0, stubborn: Collection[str] = ()) -> None:
        self.init_delay = init_delay
        self.stubborn = frozenset(stubborn)
        self.replicas: list[FakeReplica] = []
        self.started = 0  # replicas started so far

    @classmethod
    def for_engine(cls, engine_id: str) -> FakeRuntime:
        """The factory the runtime registry knows it by: services may name ``"fake"``."""
        return cls()

    def check(self, plan: ReplicaPlan) -> None:
        if cloudpickle.loads(plan.init_payload)["kind"] not in ("function", "class"):
            raise ConfigurationError(
                f"service {plan.service.name!r}: the fake runtime runs functions and classes "
                "registered in this process, not codebases"
            )

    async def start_replica(
        self, plan: ReplicaPlan, listener: ReplicaListener, task_group: TaskGroup
    ) -> Replica:
        replica = FakeReplica(self, plan, listener)
        self.replicas.append(replica)
        self.started += 1
        await task_group.start(replica.run, name=f"replica-{replica.id}")
        return replica

    async def aclose(self) -> None:
        for replica in list(self.replicas):
            replica.kill()
