"""The PostgreSQL store on a real server: chosen by its URL, clear at start when it cannot
connect, migrations under concurrency, a newer schema refused, and a connection lost mid-run
taken up again with nothing lost."""

from __future__ import annotations

import contextlib
import socket
import urllib.parse
from typing import Any

import anyio
import anyio.abc
import asyncpg
import pytest

import triggerfish
from triggerfish import (
    ConfigurationError,
    ExecutionStatus,
    PostgresStore,
    StoreUnavailableError,
)

from . import fns

pytestmark = pytest.mark.anyio


async def _scalar(dsn: str, sql: str) -> Any:
    connection = await asyncpg.connect(dsn)
    try:
        return await connection.fetchval(sql)
    finally:
        await connection.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _changed(dsn: str, *, password: str | None = None, port: int | None = None) -> str:
    """The DSN with another password, or through another port of 127.0.0.1."""
    parts = urllib.parse.urlsplit(dsn)
    host = parts.hostname if port is None else "127.0.0.1"
    netloc = f"{parts.username}:{password or parts.password}@{host}:{port or parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


async def test_an_engine_given_a_postgresql_url_keeps_its_executions_there(
    postgres_dsn: str,
) -> None:
    engine = triggerfish.Engine(postgres_dsn)
    engine.function(fns.add)
    async with engine:
        handle = engine.handle(fns.add)
        results = [r async for r in handle.starmap((i, i) for i in range(20))]
        (execution_id, *_) = (await handle.list()).execution_ids
        connection = await asyncpg.connect(postgres_dsn)
        try:  # the engine is named by its row, and its executions say it ran them
            (row,) = await connection.fetch("SELECT id FROM engines")
        finally:
            await connection.close()
    assert results == [2 * i for i in range(20)]
    assert row[0] == engine.engine_id
    assert isinstance(engine._core.store, PostgresStore)
    restarted = triggerfish.Engine(postgres_dsn)
    restarted.function(fns.add)
    async with restarted:
        handle = restarted.handle(fns.add)
        stored = await handle.get(execution_id)
        counts = await handle.statistics()
    assert stored.status is ExecutionStatus.SUCCEEDED and stored.result == 38
    assert stored.engine_id == engine.engine_id != restarted.engine_id
    assert counts[ExecutionStatus.SUCCEEDED] == 20


async def test_an_unreachable_server_is_one_clear_error_naming_it_without_the_password() -> None:
    port = _free_port()  # nothing listens there
    engine = triggerfish.Engine(f"postgresql://app:s3cret-pw@127.0.0.1:{port}/jobs")
    with pytest.raises(StoreUnavailableError) as caught:
        async with engine:
            pass
    message = str(caught.value)
    assert f"app@127.0.0.1:{port}/jobs" in message
    assert "s3cret-pw" not in message


async def test_a_failed_login_is_one_clear_error_without_the_password(postgres_dsn: str) -> None:
    engine = triggerfish.Engine(_changed(postgres_dsn, password="wrong-Password-9"))
    with pytest.raises(StoreUnavailableError) as caught:
        async with engine:
            pass
    message = str(caught.value)
    assert "password authentication failed" in message
    assert "127.0.0.1" in message and "wrong-Password-9" not in message


def test_a_malformed_url_is_refused_naming_what_is_wrong() -> None:
    with pytest.raises(ConfigurationError, match="not a PostgreSQL URL"):
        triggerfish.Engine("postgresql://app@127.0.0.1:notaport/jobs")


async def test_engines_starting_at_once_migrate_once_and_all_run(postgres_dsn: str) -> None:
    stores = [PostgresStore(postgres_dsn) for _ in range(3)]
    async with anyio.create_task_group() as tg:
        with anyio.fail_after(20):
            async with anyio.create_task_group() as starting:
                for store in stores:
                    starting.start_soon(store.start, tg)
        connection = await asyncpg.connect(postgres_dsn)
        try:
            versions = await connection.fetch("SELECT version FROM triggerfish_schema")
            running = {row[0] for row in await connection.fetch("SELECT id FROM engines")}
        finally:
            await connection.close()
        for store in stores:
            await store.aclose()
    assert sorted(v[0] for v in versions) == list(range(1, len(versions) + 1))
    assert running == {store.engine_id for store in stores}  # all three run at once
    connection = await asyncpg.connect(postgres_dsn)
    try:
        assert await connection.fetchval("SELECT count(*) FROM engines") == 0  # each left
    finally:
        await connection.close()


async def test_the_work_an_engine_leaves_at_its_stop_is_run_by_another(postgres_dsn: str) -> None:
    """Executions still queued when an engine stops go to the shared queue, and an engine
    still running on the database runs them, while the first is gone."""
    first = triggerfish.Engine(postgres_dsn, drain_timeout=0)
    first.function(fns.sleep_then, replicas=1, concurrency=1)
    second = triggerfish.Engine(postgres_dsn)
    second.function(fns.sleep_then, replicas=1, concurrency=1)
    async with second:
        async with first:
            handle = first.handle(fns.sleep_then)
            queued = [await handle.start(0.2, i) for i in range(40)]  # more than it keeps
        results = [await second.handle(fns.sleep_then).await_result(i, timeout=60) for i in queued]
        done = [await second.handle(fns.sleep_then).get(i) for i in queued]
    assert results == list(range(40))
    ran_by = {e.engine_id for e in done}
    assert second.engine_id in ran_by  # what the first left, run by the second
    assert ran_by <= {first.engine_id, second.engine_id}


async def test_an_engine_alone_keeps_its_work_and_shares_it_once_another_runs_its_function(
    postgres_dsn: str,
) -> None:
    """Nobody else runs the function: the engine keeps all it is given (no round trip
    through the shared queue). Another engine starts running it: what the first holds
    queued beyond its room goes to the shared queue, and the second runs part of it."""
    first = triggerfish.Engine(postgres_dsn)
    first.function(fns.sleep_then, replicas=1, concurrency=1)
    second = triggerfish.Engine(postgres_dsn)
    second.function(fns.sleep_then, replicas=1, concurrency=1)
    async with first:
        handle = first.handle(fns.sleep_then)
        ids = await handle.start_many(((0.05, i), {}) for i in range(80))
        shared = await _scalar(
            postgres_dsn, "SELECT count(*) FROM executions WHERE engine_id IS NULL"
        )
        async with second:
            results = [await handle.await_result(i, timeout=60) for i in ids]
            done = [await handle.get(i) for i in ids]
    assert shared == 0  # all of it kept while the first ran alone
    assert results == list(range(80))
    assert {e.engine_id for e in done} == {first.engine_id, second.engine_id}


async def test_map_through_one_engine_gets_every_result_wherever_it_ran(
    postgres_dsn: str,
) -> None:
    first = triggerfish.Engine(postgres_dsn)
    second = triggerfish.Engine(postgres_dsn)
    for engine in (first, second):
        engine.function(fns.sleep_then, replicas=1, concurrency=1)
    async with first, second:
        handle = first.handle(fns.sleep_then)
        with anyio.fail_after(20):  # the first hears that the second runs the function
            while not first._core.store.runs_elsewhere(handle.name):
                await anyio.sleep(0.01)
        results = [r async for r in handle.starmap((0.02, i) for i in range(100))]
        page = await handle.list(limit=100)
        ran_on = {(await handle.get(i)).engine_id for i in page.execution_ids}
    assert results == list(range(100))
    assert ran_on == {first.engine_id, second.engine_id}


async def test_a_pool_holding_more_than_its_room_gives_all_it_is_given_to_the_queue(
    postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After an adoption, a pool may hold more than its room: what is started then goes
    to the shared queue whole, and runs (here on the same engine, once room opens)."""
    first = triggerfish.Engine(postgres_dsn)
    second = triggerfish.Engine(postgres_dsn)
    for engine in (first, second):
        engine.function(fns.add)
    async with first, second:
        handle = first.handle(fns.add)
        with anyio.fail_after(20):
            while not first._core.store.runs_elsewhere(handle.name):
                await anyio.sleep(0.01)
        registry = first._core.registry
        room = registry.room
        monkeypatch.setattr(registry, "room", lambda service: room(service) - 10_000)
        ids = await handle.start_many(((i, i), {}) for i in range(5))
        monkeypatch.setattr(registry, "room", room)
        results = [await handle.await_result(i, timeout=30) for i in ids]
    assert results == [0, 2, 4, 6, 8]


def test_a_lease_must_be_positive() -> None:
    with pytest.raises(ConfigurationError, match="lease must be a positive"):
        PostgresStore("postgresql://app@127.0.0.1/jobs", lease=0)


async def test_a_database_of_a_newer_schema_is_refused_with_its_version(postgres_dsn: str) -> None:
    async with anyio.create_task_group() as tg:
        store = PostgresStore(postgres_dsn)
        await store.start(tg)
        await store.aclose()
    connection = await asyncpg.connect(postgres_dsn)
    try:
        await connection.execute("INSERT INTO triggerfish_schema VALUES (999)")
    finally:
        await connection.close()
    engine = triggerfish.Engine(postgres_dsn)
    with pytest.raises(ConfigurationError, match="schema version 999, newer than"):
        async with engine:
            pass


async def test_a_connection_lost_mid_run_is_opened_again_and_nothing_is_lost(
    postgres_dsn: str,
) -> None:
    engine = triggerfish.Engine(postgres_dsn)
    engine.function(fns.add)
    admin = await asyncpg.connect(postgres_dsn)
    try:
        async with engine:
            handle = engine.handle(fns.add)
            first = [await handle.start(i, 1) for i in range(50)]
            # Every connection of the engine is cut, as a server restart or a network fault
            # would: the writer's and the readers' alike.
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            second = [await handle.start(i, 2) for i in range(50)]
            await handle.wait_for_completion(timeout=60)
            counts = await handle.statistics()
            results = [await handle.await_result(i, timeout=10) for i in first + second]
    finally:
        await admin.close()
    assert counts[ExecutionStatus.SUCCEEDED] == 100
    assert results == [i + 1 for i in range(50)] + [i + 2 for i in range(50)]


class Outage:
    """A TCP relay between the store and the server that can fail like a network: ``cut``
    drops every connection and refuses new ones until ``mend``."""

    def __init__(self, dsn: str) -> None:
        parts = urllib.parse.urlsplit(dsn)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self._dsn = dsn
        self.port = 0
        self.down = False
        self._streams: set[anyio.abc.SocketStream] = set()

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        task_status.started()
        async with listener:
            await listener.serve(self._relay)

    async def _relay(self, client: anyio.abc.SocketStream) -> None:
        if self.down:
            await client.aclose()
            return
        try:
            server = await anyio.connect_tcp(*self.upstream)
        except BaseException:
            await anyio.aclose_forcefully(client)
            raise
        self._streams |= {client, server}

        async def pipe(source: anyio.abc.SocketStream, sink: anyio.abc.SocketStream) -> None:
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                async for chunk in source:
                    await sink.send(chunk)
            with contextlib.suppress(Exception):
                await sink.aclose()

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(pipe, client, server)
                tg.start_soon(pipe, server, client)
        except (anyio.ClosedResourceError, ExceptionGroup):
            pass
        finally:
            self._streams -= {client, server}
            await anyio.aclose_forcefully(client)
            await anyio.aclose_forcefully(server)

    async def cut(self) -> None:
        self.down = True
        for stream in list(self._streams):
            await stream.aclose()

    def mend(self) -> None:
        self.down = False

    @property
    def dsn(self) -> str:
        """The server's DSN through the relay (once it serves)."""
        return _changed(self._dsn, port=self.port)


async def test_starts_during_a_short_outage_wait_for_the_server_and_none_is_lost(
    postgres_dsn: str,
) -> None:
    outage = Outage(postgres_dsn)
    async with anyio.create_task_group() as tg:
        await tg.start(outage.serve)
        engine = triggerfish.Engine(outage.dsn)
        engine.function(fns.add)
        async with engine:
            handle = engine.handle(fns.add)
            before = [await handle.start(i, 1) for i in range(20)]
            await outage.cut()
            tg.start_soon(_mend_after, outage, 1.5)
            begun = anyio.current_time()
            during = [await handle.start(i, 2) for i in range(20)]  # wait for the server
            waited = anyio.current_time() - begun
            await outage.cut()  # and a read waits for the server too
            tg.start_soon(_mend_after, outage, 1.0)
            read = await handle.get(before[0])
            assert read.status is ExecutionStatus.SUCCEEDED
            results = [await handle.await_result(i, timeout=30) for i in before + during]
        tg.cancel_scope.cancel()
    assert waited >= 1.0  # start() returned only once its execution was stored
    assert results == [i + 1 for i in range(20)] + [i + 2 for i in range(20)]
    stored = await _scalar(
        postgres_dsn, "SELECT count(*) FROM executions WHERE status = 'SUCCEEDED'"
    )
    assert stored == 40


async def _mend_after(outage: Outage, seconds: float) -> None:
    await anyio.sleep(seconds)
    outage.mend()


async def test_a_start_while_the_server_stays_away_raises_rather_than_claims_success(
    postgres_dsn: str,
) -> None:
    outage = Outage(postgres_dsn)
    async with anyio.create_task_group() as tg:
        await tg.start(outage.serve)
        store = PostgresStore(outage.dsn)
        store.reconnect_for = 1.0
        engine = triggerfish.Engine(store)
        engine.function(fns.add)
        async with engine:
            handle = engine.handle(fns.add)
            assert await handle.call_remote(1, 1) == 2
            await outage.cut()
            with pytest.raises(StoreUnavailableError, match="cannot use PostgreSQL at"):
                await handle.start(1, 2)
            outage.mend()
            assert await handle.call_remote(2, 2) == 4  # and it carries on once it is back
        tg.cancel_scope.cancel()
