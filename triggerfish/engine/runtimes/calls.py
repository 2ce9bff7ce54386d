"""What the two runtimes on a Docker engine (local containers, Swarm services) share: the
calls under way on their Docker client, which their close waits for, and the removal of the
replicas that engines now gone left behind."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Collection, Iterator
from typing import TypeVar

import anyio

from ...log import logger

__all__ = ["ClientCalls", "remove_left"]

T = TypeVar("T")


class ClientCalls:
    """Calls under way that use a runtime's Docker client (a replica's start, until its
    replica's run has begun; a removal of what other engines left): the runtime's close
    sets ``closed``, then waits for them (``wait``), so that none uses the client once it
    is closed, and none begins after."""

    def __init__(self) -> None:
        self.closed = False
        self._count = 0
        self._done: anyio.Event | None = None  # made by a wait, set by the last call's end

    @contextlib.contextmanager
    def call(self, client: T | None, broken: str) -> Iterator[T]:
        """``client``, for one call; OSError(``broken``) if there is none or it closes."""
        if client is None or self.closed:
            raise OSError(broken)
        self._count += 1
        try:
            yield client
        finally:
            self._count -= 1
            if not self._count and self._done is not None:
                self._done.set()
                self._done = None

    async def wait(self) -> None:
        """Return once no call is under way."""
        while self._count:
            if self._done is None:
                self._done = anyio.Event()
            await self._done.wait()


async def remove_left(
    own: str,
    engine_ids: Collection[str],
    call: Callable[[], contextlib.AbstractContextManager[object]],
    remove: Callable[[list[str], str], Awaitable[int]],
    what: str,
) -> int:
    """``Runtime.remove_left_by`` on a Docker engine: ``remove`` what ``engine_ids`` left
    (never ``own``, whose replicas live), within one ``call``; how many were removed. What
    cannot be removed (the Docker engine out of reach, the runtime not started) is logged
    as ``<what>_not_removed``, not raised; what was, as ``<what>_left_removed``."""
    gone = sorted(set(engine_ids) - {own})
    if not gone:
        return 0
    try:
        with call():
            removed = await remove(gone, "left_by")
    except OSError as exc:
        logger.warning(f"{what}_not_removed", which="left_by", error=str(exc))
        return 0
    logger.info(f"{what}_left_removed", engine_ids=gone, count=removed)
    return removed
