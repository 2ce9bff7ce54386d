"""The blocking form: the same engine and handle methods without ``await``, for scripts and
notebooks. The engine runs on an event loop in a background thread (an anyio blocking portal);
each call hands its coroutine to that loop and waits for the answer."""

from __future__ import annotations

import builtins
import functools
import inspect
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from types import TracebackType
from typing import TYPE_CHECKING, Any

from anyio.from_thread import BlockingPortal, start_blocking_portal

from ..errors import EngineClosedError
from ..models import Execution, ExecutionPage, ExecutionStatus, ServiceStatus
from .base import BaseFunctionHandle
from .engine import AsyncEngine

if TYPE_CHECKING:  # the client (and aiohttp) load only where a client is used
    from .client import AsyncClient


class BlockingFunctionHandle:
    """``FunctionHandle``'s methods, blocking."""

    def __init__(self, portal: BlockingPortal, handle: BaseFunctionHandle[Any]) -> None:
        self._portal = portal
        self._handle = handle
        self.name = handle.name

    def __repr__(self) -> str:
        return f"<BlockingFunctionHandle {self.name}>"

    def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self._portal.call(functools.partial(method, *args, **kwargs))

    def start(self, *args: Any, **kwargs: Any) -> str:
        return str(self._call(self._handle.start, *args, **kwargs))

    def start_many(
        self, calls: Iterable[tuple[tuple[Any, ...], dict[str, Any]]]
    ) -> builtins.list[str]:
        ids: builtins.list[str] = self._call(self._handle.start_many, builtins.list(calls))
        return ids

    def get(self, execution_id: str) -> Execution:
        result: Execution = self._call(self._handle.get, execution_id)
        return result

    def cancel(self, execution_id: str) -> None:
        self._call(self._handle.cancel, execution_id)

    def list(
        self,
        offset: str | None = None,
        limit: int = 50,
        status: ExecutionStatus | str | Iterable[ExecutionStatus | str] | None = None,
    ) -> ExecutionPage:
        page: ExecutionPage = self._call(self._handle.list, offset, limit, status)
        return page

    def await_result(self, execution_id: str, timeout: float | None = None) -> Any:
        return self._call(self._handle.await_result, execution_id, timeout)

    def call_remote(self, *args: Any, **kwargs: Any) -> Any:
        return self._call(self._handle.call_remote, *args, **kwargs)

    def map(self, inputs: Iterable[Any]) -> Iterator[Any]:
        return self.starmap((item,) for item in inputs)

    def starmap(self, inputs: Iterable[Iterable[Any]]) -> Iterator[Any]:
        waiters = self._call(self._handle.start_watched, [tuple(args) for args in inputs])
        for waiter in waiters:
            yield self._call(self._handle.result_of, waiter)

    def rerun(self, execution_ids: Iterable[str] | None = None) -> builtins.list[str]:
        ids: builtins.list[str] = self._call(self._handle.rerun, execution_ids)
        return ids

    def wait_for_completion(self, timeout: float | None = None) -> None:
        self._call(self._handle.wait_for_completion, timeout)

    def results(self) -> builtins.list[Any]:
        results: builtins.list[Any] = self._call(self._handle.results)
        return results

    def iter_results(self) -> Iterator[Any]:
        yield from self.results()

    def statistics(self) -> dict[ExecutionStatus, int]:
        stats: dict[ExecutionStatus, int] = self._call(self._handle.statistics)
        return stats


class BlockingEngine:
    """What ``with Engine(...) as engine:`` gives: handles whose methods block."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._stack = ExitStack()
        self._portal: BlockingPortal | None = None

    def __enter__(self) -> BlockingEngine:
        portal = self._stack.enter_context(start_blocking_portal())
        try:
            self._stack.enter_context(portal.wrap_async_context_manager(self._engine))
        except BaseException:
            self._stack.close()
            raise
        self._portal = portal
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._portal = None
        self._stack.__exit__(exc_type, exc, tb)

    @property
    def portal(self) -> BlockingPortal:
        if self._portal is None:
            raise EngineClosedError("the engine is not running")
        return self._portal

    @property
    def engine(self) -> AsyncEngine:
        """The engine itself (its coroutines run through ``portal``)."""
        return self._engine

    def handle(self, function: Callable[..., Any] | str) -> BlockingFunctionHandle:
        return BlockingFunctionHandle(self.portal, self._engine.handle(function))

    get_function = handle

    def get(self, execution_id: str) -> Execution:
        result: Execution = self.portal.call(self._engine.get, execution_id)
        return result

    def service_status(self, name: str) -> ServiceStatus:
        return self._engine.service_status(name)

    def emit(
        self, resource: str, action: str, body: Any = None, resource_id: str | None = None
    ) -> list[str]:
        ids: list[str] = self.portal.call(
            functools.partial(self._engine.emit, resource, action, body, resource_id)
        )
        return ids

    @property
    def triggers(self) -> Any:
        """``engine.triggers`` with its coroutine methods made blocking."""
        return _Blocking(self.portal, self._engine.triggers)


class _Blocking:
    """Any object's coroutine methods, called through the portal."""

    def __init__(self, portal: BlockingPortal, target: Any) -> None:
        self._portal = portal
        self._target = target

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._target, name)
        if not inspect.iscoroutinefunction(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._portal.call(functools.partial(attribute, *args, **kwargs))

        return call


class BlockingClient(_Blocking):
    """What ``with Client(...) as client:`` gives: the client's methods, blocking."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self._stack = ExitStack()
        super().__init__(None, client)  # type: ignore[arg-type]

    def __enter__(self) -> BlockingClient:
        portal = self._stack.enter_context(start_blocking_portal())
        try:
            self._stack.enter_context(portal.wrap_async_context_manager(self._client))
        except BaseException:
            self._stack.close()
            raise
        self._portal = portal
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.__exit__(exc_type, exc, tb)

    def function(
        self, name: str, function: str | None = None, revision: int | None = None
    ) -> BlockingFunctionHandle:
        return BlockingFunctionHandle(self._portal, self._client.function(name, function, revision))

    handle = function

    def stream_lines(self, path: str) -> Iterator[str]:
        """``Client.stream_lines``, a line at a time through the portal."""
        lines = self._client.stream_lines(path)
        try:
            while True:
                try:
                    yield self._portal.call(lines.__anext__)
                except StopAsyncIteration:
                    return
        finally:
            self._portal.call(lines.aclose)
