"""The embedded entry point in both forms: ``Engine``, used with ``async with`` or, blocking,
with ``with`` (``remote.py`` does the same for the daemon's ``Client``).

It is the async class with a blocking ``__enter__``; it lives here, above both forms, so that
the async modules never import the blocking one (which imports them).
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from .blocking import BlockingClient, BlockingEngine
from .engine import AsyncEngine

__all__ = ["Engine", "WithBlocking"]

Blocking = TypeVar("Blocking", BlockingEngine, BlockingClient)


class WithBlocking(Generic[Blocking]):
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


class Engine(AsyncEngine, WithBlocking[BlockingEngine]):
    """An embedded triggerfish engine (see ``AsyncEngine``): ``async with engine:``, or
    ``with engine as e:`` for the same methods without ``await`` (the engine then runs on an
    event loop in a background thread)."""

    def _blocking_form(self) -> BlockingEngine:
        return BlockingEngine(self)
