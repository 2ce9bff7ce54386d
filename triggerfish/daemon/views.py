"""How the API shows executions and results as JSON: bounded, exact, and off the event loop.

The daemon never unpickles a result: a result's pickle is made by user code. What it shows is
the result's JSON view, made by the replica beside the pickle (``engine/replica/views.py``):

* ``result_encoding`` ``json``: ``result`` is the result itself. Its text goes into the answer
  as the replica wrote it, so integers of any size stay exact.
* ``truncated``: its JSON is longer than the view may be (1 MiB for one execution, 64 KiB each
  in a list); ``result`` is the first part of that text, as a string.
* ``repr``: the result has no JSON form (a set, a date, an object of a class); ``result`` says
  what it is.

``result_size`` is the size of the pickled result, which ``Accept: application/x-python-pickle``
returns whole. A view's text is checked to be JSON before it is sent (a replica runs user code
and could send anything); a large one is checked in a worker thread, so that showing a big
result never holds up the event loop.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import anyio.to_thread
import orjson
from fastapi.responses import Response

from ..engine.replica.views import JSON, REPR, TRUNCATED
from ..models import Execution, ExecutionRecord, ExecutionStatus
from .schemas import PICKLE, ExecutionView, Outcome

__all__ = [
    "LIST_RESULT_LIMIT",
    "RESULT_LIMIT",
    "Reply",
    "execution_json",
    "execution_list_json",
    "json_response",
    "outcome",
    "shown_result",
]

#: The most characters of a result one execution's view shows.
RESULT_LIMIT = 1024 * 1024
#: ... and each execution of a list.
LIST_RESULT_LIMIT = 64 * 1024
#: Views longer than this are checked in a worker thread.
_CHECK_INLINE = 64 * 1024
_FINISHED = frozenset(
    {
        ExecutionStatus.SUCCEEDED,
        ExecutionStatus.FAILED,
        ExecutionStatus.TIMED_OUT,
        ExecutionStatus.CANCELLED,
    }
)


class Shown(NamedTuple):
    """A result as a view shows it: ``value`` is JSON (an orjson Fragment) or a string."""

    value: Any
    encoding: str | None
    size: int | None


_NOTHING = Shown(None, None, None)


def _is_json(text: str) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True


async def shown_result(record: ExecutionRecord, limit: int = RESULT_LIMIT) -> Shown:
    """How ``record``'s result is shown (see the module's docstring)."""
    if record.result is None and record.result_view is None:
        return _NOTHING
    size = len(record.result) if record.result is not None else None
    if record.result_view is None:  # stored before results had views
        return Shown(f"a result with no JSON view (ask with Accept: {PICKLE})", REPR, size)
    kind, text = record.result_view
    if kind == JSON and len(text) > limit:
        kind = TRUNCATED
    if kind == TRUNCATED:
        return Shown(text[:limit], TRUNCATED, size)
    if kind != JSON:
        return Shown(text[:limit], REPR, size)
    if len(text) > _CHECK_INLINE:
        valid = await anyio.to_thread.run_sync(_is_json, text)
    else:
        valid = _is_json(text)
    if not valid:
        return Shown(f"a result whose JSON view is damaged (ask with Accept: {PICKLE})", REPR, size)
    return Shown(orjson.Fragment(text), JSON, size)


def _view(record: ExecutionRecord, shown: Shown) -> dict[str, Any]:
    execution = Execution.from_record(record)
    duration = None
    if record.started_at is not None and record.finished_at is not None:
        duration = record.finished_at - record.started_at
    view = ExecutionView(
        id=execution.id,
        function=execution.function,
        service=execution.service,
        status=execution.status,
        result_encoding=shown.encoding,  # type: ignore[arg-type]
        result_size=shown.size,
        error=execution.error,
        attempts=execution.attempts,
        max_attempts=execution.max_attempts,
        num_failed_attempts=execution.num_failed_attempts,
        progress=execution.progress,
        status_log=list(execution.status_log),
        parent_id=execution.parent_id,
        trigger_id=execution.trigger_id,
        event=execution.event,
        lineage=list(execution.lineage),
        created_at=execution.created_at,
        started_at=execution.started_at,
        finished_at=execution.finished_at,
        duration=duration,
        terminated=record.terminated,
        engine_id=execution.engine_id,
    )
    data = view.model_dump(mode="json")
    data["result"] = shown.value
    return data


async def execution_json(record: ExecutionRecord, limit: int = RESULT_LIMIT) -> dict[str, Any]:
    """An execution as the API shows it, ready for ``orjson.dumps``."""
    return _view(record, await shown_result(record, limit))


async def execution_list_json(records: list[ExecutionRecord], offset: str | None) -> dict[str, Any]:
    """A page of executions, each result shown up to ``LIST_RESULT_LIMIT``."""
    return {
        "executions": [await execution_json(r, LIST_RESULT_LIMIT) for r in records],
        "offset": offset,
    }


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """``data`` (which may hold orjson Fragments) as a JSON answer."""
    return Response(orjson.dumps(data), status, headers, "application/json")


class Reply(NamedTuple):
    """An answer as the hot paths build it: status, headers, body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def response(self) -> Response:
        return Response(self.body, self.status, self.headers)


async def outcome(record: ExecutionRecord, accept: str) -> Reply:
    """The answer to "where is my result": the pickled result to a client that takes pickle,
    else an ``Outcome``; 202 while the execution has not finished."""
    finished = record.status in _FINISHED
    headers = {"X-Execution-Id": record.id, "X-Execution-Status": record.status.value}
    if (
        finished
        and record.status is ExecutionStatus.SUCCEEDED
        and record.result is not None
        and PICKLE in accept
    ):
        return Reply(200, {**headers, "Content-Type": PICKLE}, record.result)
    headers["Content-Type"] = "application/json"
    if not finished:
        body = Outcome(id=record.id, status=record.status, finished=False)
        return Reply(202, headers, body.model_dump_json().encode())
    shown = await shown_result(record)
    error = Execution.from_record(record).error
    data = Outcome(
        id=record.id,
        status=record.status,
        finished=True,
        result_encoding=shown.encoding,  # type: ignore[arg-type]
        result_size=shown.size,
        error=error,
    ).model_dump(mode="json")
    data["result"] = shown.value
    return Reply(200, headers, orjson.dumps(data))
