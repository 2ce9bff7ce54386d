"""The context a function sees while it runs: its ids, progress updates, nested invocations.

Reached through ``triggerfish.current_context()``. Called outside an execution (the function
called locally, in a test say) it returns a local context whose progress updates do nothing,
so decorated functions stay plain callable Python.
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import contextvars
import json
import pickle
from collections.abc import Callable
from typing import Any

import cloudpickle

Requester = Callable[[str, str, Any], "concurrent.futures.Future[Any]"]


class Progress:
    """``update(percent, message)`` records progress in the status log and restarts the timeout."""

    def __init__(self, send: Callable[[int, str], None] | None) -> None:
        self._send = send

    def update(self, percent: int | float, message: str = "") -> None:
        percent = int(percent)
        if not 0 <= percent <= 100:
            raise ValueError(f"progress percent must be between 0 and 100, got {percent}")
        if self._send is not None:
            self._send(percent, str(message))


class ExecutionContext:
    """What a running function knows of itself and can ask of the engine.

    ``execution_id`` and ``attempt`` name this run (None and 0 outside an execution).
    ``start``/``call_remote``/``await_result`` invoke other functions by name from a sync
    function, ``get``/``cancel``/``list`` look at and stop executions, and ``emit``
    publishes an event; async functions use the ``a``-prefixed coroutines. Nested
    executions are recorded with this one as their parent.
    """

    def __init__(
        self,
        execution_id: str | None = None,
        function: str | None = None,
        attempt: int = 0,
        progress: Progress | None = None,
        requester: Requester | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.execution_id = execution_id
        self.function = function
        self.attempt = attempt
        self.progress = progress or Progress(None)
        self._requester = requester
        self._loop = loop

    def _request(self, op: str, payload: Any) -> concurrent.futures.Future[Any]:
        if self._requester is None:
            raise RuntimeError(
                "nested invocations work only inside an execution run by triggerfish"
            )
        return self._requester(op, self.execution_id or "", payload)

    def _blocking(self, op: str, payload: Any) -> Any:
        if self._loop is not None and _running_loop() is self._loop:
            raise RuntimeError(
                f"{op} blocks; inside an async function use 'await context.a{op}(...)'"
            )
        return self._request(op, payload).result()

    async def _async(self, op: str, payload: Any) -> Any:
        return await asyncio.wrap_future(self._request(op, payload))

    def start(self, function: str, /, *args: Any, **kwargs: Any) -> str:
        """Start ``function`` as a child execution; returns its id."""
        return str(self._blocking("start", (function, cloudpickle.dumps((args, kwargs)))))

    def await_result(self, execution_id: str, timeout: float | None = None) -> Any:
        """Wait for a child's result (raises as ``FunctionHandle.await_result`` does)."""
        return pickle.loads(self._blocking("await_result", (execution_id, timeout)))

    def call_remote(self, function: str, /, *args: Any, **kwargs: Any) -> Any:
        """Start ``function`` and wait for its result."""
        blob = self._blocking("call_remote", (function, cloudpickle.dumps((args, kwargs))))
        return pickle.loads(blob)

    def get(self, execution_id: str) -> dict[str, Any]:
        """An execution as it stands now: its ``id``, ``function``, ``status`` (a status's
        value), ``result`` (unpickled; None until there is one), ``error`` (type, message,
        traceback, or None), ``attempts``, ``failed_attempts`` and ``progress``."""
        return _state(self._blocking("get", execution_id))

    def cancel(self, execution_id: str) -> None:
        """Cancel an execution (as ``FunctionHandle.cancel`` does)."""
        self._blocking("cancel", execution_id)

    def list(
        self, function: str, offset: str | None = None, limit: int = 50
    ) -> tuple[builtins.list[str], str | None]:
        """A page of ``function``'s execution ids, newest first, and the offset of the next
        page (None on the last one)."""
        ids, after = self._blocking("list", (function, offset, limit))
        return builtins.list(ids), after

    async def aget(self, execution_id: str) -> dict[str, Any]:
        return _state(await self._async("get", execution_id))

    async def acancel(self, execution_id: str) -> None:
        await self._async("cancel", execution_id)

    async def alist(
        self, function: str, offset: str | None = None, limit: int = 50
    ) -> tuple[builtins.list[str], str | None]:
        ids, after = await self._async("list", (function, offset, limit))
        return builtins.list(ids), after

    def emit(
        self, resource: str, action: str, body: Any = None, resource_id: str | None = None
    ) -> builtins.list[str]:
        """Publish an event from inside the function (it carries this execution's lineage, so
        loop protection sees it); returns the ids of the executions it caused."""
        return builtins.list(
            self._blocking("emit", (resource, action, _event_json(body), resource_id))
        )

    async def aemit(
        self, resource: str, action: str, body: Any = None, resource_id: str | None = None
    ) -> builtins.list[str]:
        return builtins.list(
            await self._async("emit", (resource, action, _event_json(body), resource_id))
        )

    async def astart(self, function: str, /, *args: Any, **kwargs: Any) -> str:
        return str(await self._async("start", (function, cloudpickle.dumps((args, kwargs)))))

    async def aawait_result(self, execution_id: str, timeout: float | None = None) -> Any:
        return pickle.loads(await self._async("await_result", (execution_id, timeout)))

    async def acall_remote(self, function: str, /, *args: Any, **kwargs: Any) -> Any:
        blob = await self._async("call_remote", (function, cloudpickle.dumps((args, kwargs))))
        return pickle.loads(blob)


def _state(answer: dict[str, Any]) -> dict[str, Any]:
    """A nested ``get``'s answer, its result unpickled (it came as the pickle it was made)."""
    blob = answer.get("result")
    return {**answer, "result": pickle.loads(blob) if blob is not None else None}


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


_LOCAL = ExecutionContext()
current: contextvars.ContextVar[ExecutionContext] = contextvars.ContextVar(
    "triggerfish_execution_context"
)


def current_context() -> ExecutionContext:
    """The context of the execution running in this thread or task (a local one outside)."""
    return current.get(_LOCAL)


def _event_json(body: Any) -> str:
    """An event's body goes to the engine as JSON text, made here: the engine reads what a
    replica sends as plain data only, never rebuilding an object of a class."""
    try:
        return json.dumps(body, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"the event body must be JSON: {exc}") from None
