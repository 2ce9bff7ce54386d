"""What other engines on a shared store told of on a channel, gathered until it is read."""

from __future__ import annotations

from collections.abc import Sequence

import anyio

__all__ = ["Told"]


class Told:
    """Names told of (trigger ids, service names), gathered until read. None told: some may
    have gone unheard (the store was cut off), so everything is to be read again."""

    def __init__(self) -> None:
        self._names: set[str] | None = set()
        self._wake: anyio.Event | None = None

    def add(self, names: Sequence[str] | None) -> None:
        """A ``Store.hear`` handler."""
        if names is None or self._names is None:
            self._names = None
        else:
            self._names.update(names)
        if self._wake is not None:
            self._wake.set()

    async def take(self) -> set[str] | None:
        """Once something was told, what was (None: everything); forgotten from then on."""
        while self._names is not None and not self._names:
            self._wake = anyio.Event()
            await self._wake.wait()
        names, self._names = self._names, set()
        return names
