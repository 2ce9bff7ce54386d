"""Calls a running function makes back into the engine: start, call_remote, await_result,
get, cancel, list and emit, each served in a task of its own and answered with a REPLY to
the replica that asked.

A nested execution records its parent and carries the parent's lineage, so loop protection
sees a chain of calls as it sees a chain of triggers. A bad request from inside a function
fails that call, never the engine.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from anyio.abc import TaskGroup

from .. import _json
from ..errors import InvocationFailedError, TriggerfishError, raise_for_outcome
from ..models import ExecutionQuery, ExecutionRecord
from .lifecycle import Lifecycle
from .replica import protocol
from .scheduler import Slots

#: Publishes an event: (resource, action, body, resource id, lineage) -> created ids.
Emit = Callable[[str, str, Any, str | None, tuple[str, ...]], Awaitable[list[str]]]


def _outcome(record: ExecutionRecord) -> bytes:
    return raise_for_outcome(
        record.id, record.function, record.status.value, record.error, record.result
    )


def _state(record: ExecutionRecord) -> dict[str, Any]:
    """An execution as a nested ``get`` answers it: plain data, its result the pickle the
    replica made (never opened here)."""
    return {
        "id": record.id,
        "function": record.function,
        "status": record.status.value,
        "result": record.result,
        "error": record.error,
        "attempts": record.attempts,
        "failed_attempts": record.failed_attempts,
        "progress": record.progress,
    }


class NestedCalls:
    """Serves the CALL messages of replicas."""

    def __init__(self, lifecycle: Lifecycle, emit: Emit) -> None:
        self._lifecycle = lifecycle
        self._emit = emit
        self._task_group: TaskGroup | None = None

    def start(self, task_group: TaskGroup) -> None:
        self._task_group = task_group

    def receive(self, slots: Slots, message: tuple[Any, ...]) -> None:
        """A CALL from a replica: served in its own task."""
        assert self._task_group is not None
        self._task_group.start_soon(self._serve, slots, message)

    async def _serve(self, slots: Slots, message: tuple[Any, ...]) -> None:
        _, parent_id, request_id, op, payload = message
        lifecycle = self._lifecycle
        parent = lifecycle.live.get(parent_id)
        lineage = parent.record.lineage if parent is not None else ()
        reply: Any
        try:
            if op == "start":
                function, blob = payload
                (live,) = await lifecycle.submit(
                    function, [blob], parent_id=parent_id, lineage=lineage
                )
                reply = live.record.id
            elif op == "call_remote":
                function, blob = payload
                (live,) = await lifecycle.submit(
                    function, [blob], parent_id=parent_id, lineage=lineage, watch=True
                )
                assert live.waiter is not None
                reply = _outcome(await lifecycle.wait_for(live.waiter))
            elif op == "emit":  # the body comes as JSON text: read under the boundary's rules
                resource, action, text, resource_id = payload
                body = _json.parse(text, "body")
                reply = await self._emit(resource, action, body, resource_id, lineage)
            elif op == "await_result":
                child, timeout = payload
                reply = _outcome(await lifecycle.wait(child, timeout))
            elif op == "get":
                reply = _state(await lifecycle.record(str(payload)))
            elif op == "cancel":
                lifecycle.check_open()
                await lifecycle.cancel(str(payload))
                reply = None
            elif op == "list":
                function, offset, limit = payload
                reply = await self._list(str(function), offset, int(limit))
            else:
                raise TriggerfishError(f"unknown nested operation {op!r}")
            answer: tuple[Any, ...] = (protocol.REPLY, request_id, True, reply)
        except InvocationFailedError as exc:
            extra = {
                "execution_id": exc.execution_id,
                "error_type": exc.error_type,
                "error_message": exc.error_message,
                "remote_traceback": exc.remote_traceback,
            }
            answer = (protocol.REPLY, request_id, False, (type(exc).__name__, exc.args[0], extra))
        except (TriggerfishError, TimeoutError) as exc:
            answer = (protocol.REPLY, request_id, False, (type(exc).__name__, str(exc), {}))
        except Exception as exc:  # bad arguments from inside a function fail the call, not us
            refusal = f"the nested {op} was refused: {type(exc).__name__}: {exc}"
            answer = (protocol.REPLY, request_id, False, ("TriggerfishError", refusal, {}))
        slots.replica.send(answer)

    async def _list(self, function: str, offset: str | None, limit: int) -> tuple[Any, ...]:
        """A page of a function's execution ids, newest first, and the next page's offset."""
        if not 1 <= limit <= 1000:
            raise TriggerfishError(f"limit must be from 1 to 1000, not {limit}")
        store = self._lifecycle.store
        spec = self._lifecycle.dispatch.spec_of(function)
        await store.flush()
        query = ExecutionQuery.build(function=spec.name, offset=offset, limit=limit + 1)
        ids = await store.list_ids(query)
        return (tuple(ids[:limit]), ids[limit - 1] if len(ids) > limit else None)
