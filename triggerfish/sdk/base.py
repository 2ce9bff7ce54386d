"""The function handle protocol: what a handle does, whether its function runs in this
process (``FunctionHandle``) or on a daemon (``RemoteFunctionHandle``), and the pickling of
arguments and results both use. It imports no engine: a client needs none."""

from __future__ import annotations

import builtins
import pickle
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable
from typing import Any, Generic, TypeVar

import cloudpickle

from ..errors import SerializationError
from ..models import Execution, ExecutionPage, ExecutionStatus

__all__ = ["BaseFunctionHandle", "load_result", "pack_input"]

#: What ``start_watched`` gives for each execution, and ``result_of`` takes back.
Token = TypeVar("Token")


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


def load_result(blob: bytes, execution_id: str) -> Any:
    """A pickled result; SerializationError if it cannot be rebuilt here (a class that only
    exists where the function ran, say)."""
    try:
        return pickle.loads(blob)
    except Exception as exc:
        raise SerializationError(
            f"the result of {execution_id} cannot be unpickled here: {type(exc).__name__}: {exc}"
        ) from exc


class BaseFunctionHandle(ABC, Generic[Token]):
    """Invokes one function. Every method is a coroutine (``BlockingFunctionHandle`` has the
    same methods without ``await``)."""

    name: str

    @abstractmethod
    async def start(self, *args: Any, **kwargs: Any) -> str:
        """Start an execution; returns its id once it is stored."""

    @abstractmethod
    async def start_many(
        self, calls: Iterable[tuple[tuple[Any, ...], dict[str, Any]]]
    ) -> builtins.list[str]:
        """Start one execution per (args, kwargs), all stored in one commit; ids in order.
        Every input is pickled first: if one cannot be, none is stored."""

    @abstractmethod
    async def get(self, execution_id: str) -> Execution:
        """The execution as it stands now."""

    @abstractmethod
    async def cancel(self, execution_id: str) -> None:
        """Cancel: a queued execution ends CANCELLED at once, a running one goes through
        CANCELLING while it is stopped. Cancelling a finished one does nothing."""

    @abstractmethod
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

    @abstractmethod
    async def await_result(self, execution_id: str, timeout: float | None = None) -> Any:
        """Wait for the final status; the result if SUCCEEDED, else InvocationFailedError,
        InvocationCancelledError or InvocationTimedOutError. TimeoutError after ``timeout``."""

    @abstractmethod
    async def call_remote(self, *args: Any, **kwargs: Any) -> Any:
        """``start`` then ``await_result``."""

    @abstractmethod
    async def start_watched(self, inputs: Iterable[Iterable[Any]]) -> builtins.list[Token]:
        """Start one execution per tuple of positional arguments, each watched from before
        it can finish (what ``map`` and ``starmap`` read their results from)."""

    @abstractmethod
    async def result_of(self, token: Token) -> Any:
        """The result of an execution ``start_watched`` started."""

    @abstractmethod
    async def rerun(self, execution_ids: Iterable[str] | None = None) -> builtins.list[str]:
        """Run this function's FAILED and TIMED_OUT executions again (all, or those given);
        returns the ids that were started again."""

    @abstractmethod
    async def wait_for_completion(self, timeout: float | None = None) -> None:
        """Wait until no execution of this function is unfinished."""

    @abstractmethod
    def iter_results(self) -> AsyncIterator[Any]:
        """Results of this function's SUCCEEDED executions, oldest first."""

    @abstractmethod
    async def statistics(self) -> dict[ExecutionStatus, int]:
        """How many executions of this function are in each status."""

    async def map(self, inputs: Iterable[Any]) -> AsyncIterator[Any]:
        """One execution per input; results in input order, each as soon as it (and those
        before it) are ready. The first failure in that order raises."""
        async for result in self.starmap((item,) for item in inputs):
            yield result

    async def starmap(self, inputs: Iterable[Iterable[Any]]) -> AsyncIterator[Any]:
        """Like ``map`` with each input a tuple of positional arguments."""
        for token in await self.start_watched(inputs):
            yield await self.result_of(token)

    async def results(self) -> builtins.list[Any]:
        """``iter_results`` as a list."""
        return [result async for result in self.iter_results()]
