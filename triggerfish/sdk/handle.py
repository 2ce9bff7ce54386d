"""FunctionHandle: start, get, cancel, list, await_result, call_remote, map, starmap and friends."""

from __future__ import annotations

import builtins
import pickle
from collections.abc import AsyncIterator, Iterable
from typing import Any

import anyio

from ..engine.core import EngineCore, Waiter
from ..errors import raise_for_outcome
from ..models import Execution, ExecutionPage, ExecutionQuery, ExecutionRecord, ExecutionStatus
from .base import BaseFunctionHandle, load_result, pack_input


def unpack_result(record: ExecutionRecord) -> Any:
    """The unpickled result, raising the matching InvocationError if it did not succeed."""
    blob = raise_for_outcome(
        record.id, record.function, record.status.value, record.error, record.result
    )
    return load_result(blob, record.id)


def to_execution(record: ExecutionRecord) -> Execution:
    result = None
    if record.result is not None:
        try:
            result = pickle.loads(record.result)
        except Exception as exc:  # a class that only exists in the replica, say
            result = f"<result cannot be unpickled here: {exc}>"
    return Execution.from_record(record, result)


async def list_page(core: EngineCore, query: ExecutionQuery) -> ExecutionPage:
    """One page of execution ids, newest first (see ``FunctionHandle.list``): at most the
    query's limit (50 if it has none)."""
    limit = query.limit or 50
    ids = await core.list_ids(query.replace(limit=limit + 1))
    more = len(ids) > limit
    ids = ids[:limit]
    return ExecutionPage(execution_ids=tuple(ids), offset=ids[-1] if more else None)


class FunctionHandle(BaseFunctionHandle[Waiter]):
    """Invokes one registered function. Every method is a coroutine (see ``BlockingFunctionHandle``
    for the same methods without ``await``)."""

    def __init__(self, core: EngineCore, name: str) -> None:
        self._core = core
        self.name = name

    def __repr__(self) -> str:
        return f"<FunctionHandle {self.name}>"

    async def start(self, *args: Any, **kwargs: Any) -> str:
        """Start an execution; returns its id once it is stored."""
        self._core.spec_of(self.name)
        (execution_id,) = await self._core.submit(self.name, [pack_input(self.name, args, kwargs)])
        return execution_id

    async def start_many(
        self, calls: Iterable[tuple[tuple[Any, ...], dict[str, Any]]]
    ) -> list[str]:
        """Start one execution per (args, kwargs), all stored in one commit. Every input is
        pickled first: if one cannot be, none is stored."""
        self._core.spec_of(self.name)
        blobs = [pack_input(self.name, args, kwargs) for args, kwargs in calls]
        return await self._core.submit(self.name, blobs) if blobs else []

    async def get(self, execution_id: str) -> Execution:
        """The execution as it stands now."""
        return to_execution(await self._core.record(execution_id))

    async def cancel(self, execution_id: str) -> None:
        """Cancel: a queued execution ends CANCELLED at once, a running one goes through
        CANCELLING while it is stopped. Cancelling a finished one does nothing."""
        await self._core.cancel(execution_id)

    async def list(
        self,
        offset: str | None = None,
        limit: int = 50,
        status: ExecutionStatus | str | Iterable[ExecutionStatus | str] | None = None,
    ) -> ExecutionPage:
        """Execution ids newest first, ``limit`` at a time; pass the page's ``offset`` back for
        the next page (None on the last one). For a deployed function named without a
        revision (``resizer.resize``) the executions of every revision are listed; a handle
        with a revision lists that revision's only."""
        query = ExecutionQuery.build(function=self.name, status=status, offset=offset, limit=limit)
        return await list_page(self._core, query)

    async def await_result(self, execution_id: str, timeout: float | None = None) -> Any:
        """Wait for the final status; the result if SUCCEEDED, else InvocationFailedError,
        InvocationCancelledError or InvocationTimedOutError. TimeoutError after ``timeout``."""
        return unpack_result(await self._core.wait(execution_id, timeout))

    async def call_remote(self, *args: Any, **kwargs: Any) -> Any:
        """``start`` then ``await_result``."""
        blob = pack_input(self.name, args, kwargs)
        ((_, waiter),) = await self._core.submit_watched(self.name, [blob])
        return unpack_result(await self._core.wait_for(waiter))

    async def start_watched(self, inputs: Iterable[Iterable[Any]]) -> builtins.list[Waiter]:
        """Start one execution per tuple of positional arguments, each with a waiter
        registered before it can finish (what map and starmap read their results from)."""
        self._core.spec_of(self.name)
        blobs = [pack_input(self.name, tuple(args), {}) for args in inputs]
        if not blobs:
            return []
        return [waiter for _, waiter in await self._core.submit_watched(self.name, blobs)]

    async def result_of(self, waiter: Waiter) -> Any:
        """The result a waiter from ``start_watched`` is waiting for."""
        return unpack_result(await self._core.wait_for(waiter))

    async def rerun(self, execution_ids: Iterable[str] | None = None) -> builtins.list[str]:
        """Run this function's FAILED and TIMED_OUT executions again (all, or those given);
        returns the ids that were started again."""
        return await self._core.rerun(self.name, execution_ids)

    async def wait_for_completion(self, timeout: float | None = None) -> None:
        """Wait until no execution of this function is unfinished."""
        with anyio.fail_after(timeout):
            await self._core.wait_for_completion(self.name)

    async def iter_results(self) -> AsyncIterator[Any]:
        """Results of this function's SUCCEEDED executions, oldest first."""
        query = ExecutionQuery(function=self.name, statuses=frozenset({ExecutionStatus.SUCCEEDED}))
        records = await self._core.find(query)
        for record in records:
            yield unpack_result(record)

    async def statistics(self) -> dict[ExecutionStatus, int]:
        """How many executions of this function are in each status."""
        return await self._core.count_by_status(ExecutionQuery(function=self.name))
