"""The daemon's entry point in both forms: ``Client``, used with ``async with`` or, blocking,
with ``with`` (as ``entry.py`` does for the ``Engine``)."""

from __future__ import annotations

from .blocking import BlockingClient
from .client import AsyncClient
from .entry import WithBlocking

__all__ = ["Client"]


class Client(AsyncClient, WithBlocking[BlockingClient]):
    """A connection to a triggerfish daemon (see ``AsyncClient``): ``async with client:``,
    or ``with client as c:`` for the same methods without ``await``."""

    def _blocking_form(self) -> BlockingClient:
        return BlockingClient(self)
