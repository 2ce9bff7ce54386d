from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from triggerfish import Engine, MemoryStore, SqliteStore, Store


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite", "memory"])
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Store]:
    """Each store backend; calling the factory again gives the same file (a restart)."""
    if request.param == "sqlite":
        return lambda: SqliteStore(tmp_path / "executions.db")
    return MemoryStore


@pytest.fixture
def make_engine(tmp_path: Path) -> Callable[..., Engine]:
    def make(**options: object) -> Engine:
        options.setdefault("kill_grace", 1.0)
        options.setdefault("drain_timeout", 2.0)
        store = options.pop("store", tmp_path / "engine.db")
        return Engine(store, **options)  # type: ignore[arg-type]

    return make
