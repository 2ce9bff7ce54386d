from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from triggerfish import Engine, MemoryStore, PostgresStore, SqliteStore, Store

from . import postgres


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def postgres_dsn() -> Iterator[str]:
    """A new, empty database on the tests' PostgreSQL server (skips where there is none)."""
    admin, why = postgres.server()
    if admin is None:
        pytest.skip(why or "no PostgreSQL server")
    dsn = postgres.new_database(admin)
    yield dsn
    postgres.drop_database(admin, dsn)


@pytest.fixture(params=["sqlite", "memory", "postgres"])
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Store]:
    """Each store backend; calling the factory again gives the same file or database (a
    restart)."""
    if request.param == "sqlite":
        return lambda: SqliteStore(tmp_path / "executions.db")
    if request.param == "postgres":
        dsn = request.getfixturevalue("postgres_dsn")
        return lambda: PostgresStore(dsn)
    return MemoryStore


@pytest.fixture(params=["sqlite", "postgres"])
def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """What an engine (or an app in a subprocess) is given for each durable store: a sqlite
    file's path, or a new PostgreSQL database's URL."""
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_dsn"))
    return str(tmp_path / "engine.db")


@pytest.fixture
def make_engine(tmp_path: Path) -> Callable[..., Engine]:
    def make(**options: object) -> Engine:
        options.setdefault("kill_grace", 1.0)
        options.setdefault("drain_timeout", 2.0)
        store = options.pop("store", tmp_path / "engine.db")
        return Engine(store, **options)  # type: ignore[arg-type]

    return make
