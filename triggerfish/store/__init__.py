"""Where executions are kept: the Store contract and its sqlite and memory backends."""

from .abc import CommitListener, Store
from .memory import MemoryStore
from .sqlite import SqliteStore

__all__ = ["CommitListener", "MemoryStore", "SqliteStore", "Store"]
