"""The two entry points, each in both forms: ``Engine`` (embedded) and ``Client`` (a daemon),
used with ``async with`` or, blocking, with ``with``.

They are the async classes with a blocking ``__enter__``; they live here, above both forms,
so that the async modules never import the blocking one (which imports them).
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from .blocking import BlockingClient, BlockingEngine
from .client import AsyncClient
from .engine import AsyncEngine

__all__ = ["Client", "Engine"]

Blocking = TypeVar("Blocking", BlockingEngine, BlockingClient)


class _WithBlocking(Generic[Blocking]):
    """``with x as blocking:``: the blocking form, entered, until the block ends."""

    _blocking: Blocking | None = None

    def _blocking_form(self) -> Blocking:
        raise NotImplementedError

    def __enter__(self) -> Blocking:
        self._blocking = self._blocking_form()
        return self._blocking.__enter__()

    def __exit__(self, *exc_info: Any) -> None:
        blocking, self._blocking = self._blocking, None
        if blocking is not None:
            blocking.__exit__(*exc_info)


class Engine(AsyncEngine, _WithBlocking[BlockingEngine]):
    """An embedded triggerfish engine (see ``AsyncEngine``): ``async with engine:``, or
    ``with engine as e:`` for the same methods without ``await`` (the engine then runs on an
    event loop in a background thread)."""

    def _blocking_form(self) -> BlockingEngine:
        return BlockingEngine(self)


class Client(AsyncClient, _WithBlocking[BlockingClient]):
    """A connection to a triggerfish daemon (see ``AsyncClient``): ``async with client:``,
    or ``with client as c:`` for the same methods without ``await``."""

    def _blocking_form(self) -> BlockingClient:
        return BlockingClient(self)
