"""FunctionHandle: start, get, cancel, list, await_result, call_remote, map, starmap and friends."""

from __future__ import annotations

import builtins
import pickle
from collections.abc import AsyncIterator, Iterable
from datetime import datetime
from typing import Any

import anyio
import cloudpickle

from ..engine.core import EngineCore, Waiter, raise_for_outcome
from ..errors import ConfigurationError, SerializationError
from ..models import Execution, ExecutionPage, ExecutionRecord, ExecutionStatus, belongs_to


def pack_input(function: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    """Pickle a call's arguments, naming the one that cannot be pickled.

    Plain pickle first (several times faster); cloudpickle for what it cannot do (lambdas,
    functions and classes defined in ``__main__`` or inside functions).
    """
    try:
        return pickle.dumps((args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        pass
    try:
        return bytes(cloudpickle.dumps((args, kwargs)))
    except Exception as exc:
        named = [(f"argument {i}", a) for i, a in enumerate(args)] + [
            (f"argument {k!r}", v) for k, v in kwargs.items()
        ]
        for label, value in named:
            try:
                cloudpickle.dumps(value)
            except Exception:
                raise SerializationError(
                    f"{label} of {function}() cannot be pickled ({type(value).__name__}): {exc}"
                ) from exc
        raise SerializationError(f"the arguments of {function}() cannot be pickled: {exc}") from exc


def unpack_result(record: ExecutionRecord) -> Any:
    """The unpickled result, raising the matching InvocationError if it did not succeed."""
    return load_result(raise_for_outcome(record), record.id)


def load_result(blob: bytes, execution_id: str) -> Any:
    """A pickled result; SerializationError if it cannot be rebuilt here (a class that only
    exists where the function ran, say)."""
    try:
        return pickle.loads(blob)
    except Exception as exc:
        raise SerializationError(
            f"the result of {execution_id} cannot be unpickled here: {type(exc).__name__}: {exc}"
        ) from exc


def to_execution(record: ExecutionRecord) -> Execution:
    result = None
    if record.result is not None:
        try:
            result = pickle.loads(record.result)
        except Exception as exc:  # a class that only exists in the replica, say
            result = f"<result cannot be unpickled here: {exc}>"
    return Execution.from_record(record, result)


def _statuses(
    status: ExecutionStatus | str | Iterable[ExecutionStatus | str] | None,
) -> list[ExecutionStatus] | None:
    if status is None:
        return None
    try:
        if isinstance(status, str):
            return [ExecutionStatus(status)]
        return [ExecutionStatus(s) for s in status]
    except ValueError as exc:
        known = ", ".join(s.value for s in ExecutionStatus)
        raise ConfigurationError(f"status: {exc} (known: {known})") from None


async def list_page(
    core: EngineCore,
    *,
    function: str | None = None,
    status: ExecutionStatus | str | Iterable[ExecutionStatus | str] | None = None,
    trigger_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    offset: str | None = None,
    limit: int = 50,
) -> ExecutionPage:
    """One page of execution ids, newest first (see ``FunctionHandle.list``)."""
    if limit < 1:
        raise ConfigurationError(f"limit must be at least 1, got {limit}")
    statuses = _statuses(status)
    await core.store.flush()
    ids = await core.store.list_ids(
        function=function,
        statuses=statuses,
        before=offset,
        limit=limit + 1,
        trigger_id=trigger_id,
        created_after=None if since is None else since.timestamp(),
        created_before=None if until is None else until.timestamp(),
    )
    more = len(ids) > limit
    ids = ids[:limit]
    return ExecutionPage(execution_ids=tuple(ids), offset=ids[-1] if more else None)


class FunctionHandle:
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
        return await list_page(
            self._core, function=self.name, status=status, offset=offset, limit=limit
        )

    async def await_result(self, execution_id: str, timeout: float | None = None) -> Any:
        """Wait for the final status; the result if SUCCEEDED, else InvocationFailedError,
        InvocationCancelledError or InvocationTimedOutError. TimeoutError after ``timeout``."""
        return unpack_result(await self._core.wait(execution_id, timeout))

    async def call_remote(self, *args: Any, **kwargs: Any) -> Any:
        """``start`` then ``await_result``."""
        blob = pack_input(self.name, args, kwargs)
        ((_, waiter),) = await self._core.submit_watched(self.name, [blob])
        return unpack_result(await self._core.wait_for(waiter))

    async def map(self, inputs: Iterable[Any]) -> AsyncIterator[Any]:
        """One execution per input; results in input order, each as soon as it (and those
        before it) are ready. The first failure in that order raises."""
        async for result in self.starmap((item,) for item in inputs):
            yield result

    async def starmap(self, inputs: Iterable[Iterable[Any]]) -> AsyncIterator[Any]:
        """Like ``map`` with each input a tuple of positional arguments."""
        for waiter in await self.start_watched(inputs):
            yield await self.result_of(waiter)

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
            while True:
                unfinished = [
                    r.id for r in self._core.live.values() if belongs_to(r.function, self.name)
                ]
                if not unfinished:
                    return
                for execution_id in unfinished:
                    await self._core.wait(execution_id)

    async def iter_results(self) -> AsyncIterator[Any]:
        """Results of this function's SUCCEEDED executions, oldest first."""
        await self._core.store.flush()
        records = await self._core.store.find(
            function=self.name, statuses=[ExecutionStatus.SUCCEEDED]
        )
        for record in records:
            yield unpack_result(record)

    async def results(self) -> builtins.list[Any]:
        """``iter_results`` as a list."""
        return [result async for result in self.iter_results()]

    async def statistics(self) -> dict[ExecutionStatus, int]:
        """How many executions of this function are in each status."""
        await self._core.store.flush()
        return await self._core.store.count_by_status(function=self.name)
