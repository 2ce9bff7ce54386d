"""Work from the shared queue of a store that several engines share, claimed while this engine
has room for it.

An engine keeps the executions it creates while its pools have room (``Dispatch.room``: what
their replicas run at most, and as many again queued); the rest go to the shared queue, as
does the waiting work of an engine that stops or is gone. This part claims from it
(``Store.claim``) for a function when it may hold work of that function (another engine's
commit told so on ``Channel.WORK``, this engine gave some away, a pool started or resumed,
or everything after a start or an adoption) and the function's pool has room; and again
each time a slot of such a pool frees while its queue runs low (``Dispatch.watch_room``).
A claim that comes back short says the queue holds no more of those functions: they are
claimed again only when told of more. Nothing polls.

On a store of one engine there is no shared queue, and this part does nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import anyio
from anyio.abc import TaskStatus

from ..errors import StoreUnavailableError
from ..log import logger
from .lifecycle import Lifecycle

__all__ = ["Claims"]


class Claims:
    """The lifecycle's ``SharedWork``: claims what this engine has room for."""

    def __init__(self, lifecycle: Lifecycle) -> None:
        self._lifecycle = lifecycle
        # Functions of which the shared queue may hold work, with the number of the latest
        # word of it: a claim that comes back short forgets only what it was told before.
        self._hungry: dict[str, int] = {}
        self._told = 0
        self._wanted: set[str] = set()  # services to claim for
        self._wake = anyio.Event()
        self._functions_changed = True  # the store is to be told what this engine runs

    def may_have_work(self, functions: Iterable[str] | None) -> None:
        """Heard (``Channel.WORK``), or told by the engine: the shared queue may hold work of
        these functions (None: of any)."""
        if not self._lifecycle.store.shared:
            return
        dispatch = self._lifecycle.dispatch
        self._told += 1
        for name in dispatch.functions_of(None) if functions is None else functions:
            spec = dispatch.spec_for(name)
            if spec is None or spec.name != name:  # not run here (or an alias)
                continue
            self._hungry[name] = self._told
            self._wanted.add(spec.service)
            dispatch.watch_room(spec.service, self._room_opened)
        self._wake.set()

    def heard(self, functions: Sequence[str] | None) -> None:
        """``Channel.WORK``'s handler."""
        self.may_have_work(functions)

    def functions_changed(self) -> None:
        """A pool started (or was replaced): the other engines are told what this one runs."""
        if self._lifecycle.store.shared:
            self._functions_changed = True
            self._wake.set()

    def others_changed(self, _: Sequence[str] | None) -> None:
        """``Channel.ENGINES``'s handler: what the other engines run changed. Where another
        engine now runs a function of a service, what this engine holds queued beyond its
        room goes to the shared queue, for whichever has room."""
        dispatch = self._lifecycle.dispatch
        specs = map(dispatch.spec_for, dispatch.functions_of(None))
        for service in {spec.service for spec in specs if spec is not None}:
            self._lifecycle.share_excess(service)

    def _room_opened(self, service: str) -> None:
        self._wanted.add(service)
        self._wake.set()

    async def run(self, *, task_status: TaskStatus[None]) -> None:
        task_status.started()
        store = self._lifecycle.store
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            if self._functions_changed:
                self._functions_changed = False
                try:
                    await store.set_functions(self._lifecycle.dispatch.functions_of(None))
                except StoreUnavailableError as exc:  # told again at the next wake
                    self._functions_changed = True
                    logger.warning("engine_functions_not_told", error=str(exc))
            while self._wanted:
                await self._claim_for(self._wanted.pop())

    async def _claim_for(self, service: str) -> None:
        dispatch = self._lifecycle.dispatch
        functions = dispatch.functions_of(service)
        hungry = [name for name in functions if name in self._hungry]
        if not hungry:
            dispatch.watch_room(service, None)
            return
        room = dispatch.room(service)
        if room <= 0:
            return  # a slot that frees asks again (watch_room)
        told = self._told
        try:
            claimed = await self._lifecycle.store.claim(hungry, room)
        except StoreUnavailableError as exc:  # claimed again at the next word or free slot
            logger.warning("engine_claim_failed", service=service, error=str(exc))
            return
        if claimed:
            self._lifecycle.take(claimed)
        if len(claimed) < room:  # nothing more of these, as of what was told before
            for name in hungry:
                if self._hungry.get(name, 0) <= told:
                    del self._hungry[name]
            if not any(name in self._hungry for name in functions):
                dispatch.watch_room(service, None)
