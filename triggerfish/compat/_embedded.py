"""The engine a compat layer runs code on when the program gives it none."""

from __future__ import annotations

import atexit
import threading
import weakref
from collections.abc import Callable
from typing import ClassVar

from ..sdk.blocking import BlockingEngine
from ..sdk.engine import AsyncEngine
from ..sdk.entry import Engine

__all__ = ["Embedded"]


class Embedded:
    """An engine in this program (an in-memory store, process replicas), given its functions
    by ``setup``, started the first time it is needed and stopped when the program exits."""

    #: Every one made in this program (see ``stop_all``).
    made: ClassVar[weakref.WeakSet[Embedded]] = weakref.WeakSet()

    def __init__(self, setup: Callable[[AsyncEngine], None]) -> None:
        self._setup = setup
        self._lock = threading.Lock()
        self._running: BlockingEngine | None = None
        Embedded.made.add(self)

    @classmethod
    def stop_all(cls) -> None:
        """Stop every engine running here (a test suite between its modules: an engine
        that runs holds the process's settings, such as the collector's pacing); each
        starts again when it is needed."""
        for embedded in list(cls.made):
            embedded.stop()

    def running(self) -> BlockingEngine:
        with self._lock:
            if self._running is None:
                engine = Engine()
                self._setup(engine)
                self._running = BlockingEngine(engine).__enter__()
                atexit.register(self.stop)
            return self._running

    def apply(self, change: Callable[[AsyncEngine], None]) -> None:
        """Make a change (register a function) on the engine if it runs, on its event loop;
        if it does not, ``setup`` is to make it when it starts."""
        with self._lock:
            running = self._running
            if running is not None:
                running.portal.call(_sync, change, running.engine)

    def stop(self) -> None:
        running, self._running = self._running, None
        if running is not None:
            running.__exit__(None, None, None)


async def _sync(change: Callable[[AsyncEngine], None], engine: AsyncEngine) -> None:
    change(engine)
