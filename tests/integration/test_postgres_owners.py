"""Engines on one PostgreSQL database own their executions: an engine that is gone (its own
lock free) has its unfinished work adopted by one that runs, never while it runs; a gone
engine that comes back writes nothing more; an unfinished row changes only by its owner."""

from __future__ import annotations

import dataclasses
import pickle
import time
from typing import Any

import anyio
import asyncpg
import pytest

import triggerfish
from triggerfish import ExecutionStatus, PostgresStore, StoreUnavailableError
from triggerfish.models import ExecutionRecord, new_execution_ids
from triggerfish.store import leases, sharing
from triggerfish.store.abc import Channel
from triggerfish.store.postgres import _UPSERT, _columns
from triggerfish.store.rows import execution_row

from . import fns

pytestmark = pytest.mark.anyio

GONE = "gone-engine"


def _record(function: str, service: str, a: int, **changes: Any) -> ExecutionRecord:
    (execution_id,) = new_execution_ids(1)
    record = ExecutionRecord(
        id=execution_id,
        function=function,
        service=service,
        input=pickle.dumps(((a, a), {})),
        max_attempts=2,
        created_at=time.time(),
        **{"engine_id": GONE, **changes},
    )
    record.status_log.append((record.created_at, record.status, None, ""))
    return record


def _engine(dsn: str) -> triggerfish.Engine:
    """An engine that checks its lease often (every 0.2 s), running ``fns.add``."""
    engine = triggerfish.Engine(PostgresStore(dsn, lease=0.6))
    engine.function(fns.add)
    return engine


async def _rows(dsn: str, sql: str) -> list[Any]:
    connection = await asyncpg.connect(dsn)
    try:
        return list(await connection.fetch(sql))
    finally:
        await connection.close()


async def _owners(dsn: str) -> dict[str, tuple[str | None, str]]:
    rows = await _rows(dsn, "SELECT id, engine_id, status FROM executions")
    return {execution_id: (owner, status) for execution_id, owner, status in rows}


async def test_the_work_of_a_gone_engine_is_adopted_once_its_lock_is_free_and_not_before(
    postgres_dsn: str,
) -> None:
    engine = _engine(postgres_dsn)
    async with engine:
        handle = engine.handle(fns.add)
        spec = engine._core.spec_of(handle.name)
        other = await asyncpg.connect(postgres_dsn)  # another engine, by its row and lock
        try:
            await leases.join(other, leases.Member(GONE, "elsewhere", 1, 10.0))
            records = [_record(spec.name, spec.service, a) for a in range(3)]
            records.append(
                _record(spec.name, spec.service, 3, status=ExecutionStatus.RUNNING, attempts=1)
            )
            rows = [execution_row(r) for r in records]
            await other.execute(_UPSERT, *_columns(rows), GONE)
            await anyio.sleep(1.5)  # several renewals: each looks for engines that are gone
            before = await _owners(postgres_dsn)
        finally:
            await other.close()  # the other engine is gone: its lock with its connection
        with anyio.fail_after(20):
            while True:
                done = [await handle.get(r.id) for r in records]
                if all(e.status is ExecutionStatus.SUCCEEDED for e in done):
                    break
                await anyio.sleep(0.1)
        engines = [row[0] for row in await _rows(postgres_dsn, "SELECT id FROM engines")]
    assert before == {r.id: (GONE, r.status.value) for r in records}  # its own while it ran
    assert [e.result for e in done] == [0, 2, 4, 6]
    assert {e.engine_id for e in done} == {engine.engine_id}
    lost = done[-1]  # it was running on the gone engine: that attempt is lost, as at a restart
    assert lost.attempts == 2
    assert any("EngineStoppedError" in change.message for change in lost.status_log)
    assert engines == [engine.engine_id]  # the gone engine's row went with its work


async def test_an_engine_whose_row_was_removed_by_an_adopter_writes_nothing_more(
    postgres_dsn: str,
) -> None:
    engine = _engine(postgres_dsn)
    async with engine:
        handle = engine.handle(fns.add)
        assert await handle.call_remote(1, 2) == 3
        connection = await asyncpg.connect(postgres_dsn)
        try:  # what an engine that adopted its work does (it found this one gone)
            await connection.execute("DELETE FROM engines WHERE id = $1", engine.engine_id)
        finally:
            await connection.close()
        await anyio.sleep(0.5)  # past a renewal: it finds its row gone
        with pytest.raises(StoreUnavailableError, match="another engine"):
            await handle.start(2, 3)
    owners = await _owners(postgres_dsn)
    assert len(owners) == 1  # the refused execution is nowhere


async def test_a_row_changes_only_by_its_owner_and_a_rerun_claims_it_first(
    postgres_dsn: str,
) -> None:
    store = PostgresStore(postgres_dsn)

    async def written_by(engine_id: str, record: ExecutionRecord) -> ExecutionRecord:
        """What a commit of another engine, ``engine_id``, does with ``record``."""
        connection = await asyncpg.connect(postgres_dsn)
        try:
            await connection.execute(_UPSERT, *_columns([execution_row(record)]), engine_id)
        finally:
            await connection.close()
        stored = await store.get(record.id)
        assert stored is not None
        return stored

    async with anyio.create_task_group() as tg:
        await store.start(tg)
        assert store.engine_id is not None
        record = _record("f", "s", 1, engine_id=store.engine_id)
        await store.insert([record])
        stranger = dataclasses.replace(record, engine_id="another", status=ExecutionStatus.RUNNING)
        unchanged = await written_by("another", stranger)
        record.status = ExecutionStatus.FAILED
        store.save(record)  # its owner's write
        await store.flush()
        failed = await store.get(record.id)
        stranger.status = ExecutionStatus.PENDING  # a late write of another engine: refused
        still_failed = await written_by("another", stranger)
        claimed = await store.claim_reruns([record.id, "exe-none"])  # this engine reruns it
        twice = await store.claim_reruns([record.id])  # a second rerun at once claims nothing
        rerun = await store.get(record.id)
        await store.aclose()
    assert unchanged.status is ExecutionStatus.PENDING
    assert unchanged.engine_id == store.engine_id
    assert failed is not None and failed.status is ExecutionStatus.FAILED
    assert still_failed.status is ExecutionStatus.FAILED
    assert claimed == {record.id} and twice == set()
    assert rerun is not None and rerun.status is ExecutionStatus.PENDING
    assert rerun.engine_id == store.engine_id


async def test_await_result_hears_of_an_execution_another_engine_finished_or_left(
    postgres_dsn: str,
) -> None:
    """Waiting on one engine for another's execution: woken by the other's commit
    (LISTEN/NOTIFY), or, if the other engine is gone, by this one adopting and running it."""
    engine = _engine(postgres_dsn)
    async with engine:
        handle = engine.handle(fns.add)
        spec = engine._core.spec_of(handle.name)
        finished, left = (_record(spec.name, spec.service, a) for a in (20, 30))
        results: dict[str, int] = {}

        async def wait(record: ExecutionRecord) -> None:
            results[record.id] = await handle.await_result(record.id, timeout=20)

        other = await asyncpg.connect(postgres_dsn)
        try:
            await leases.join(other, leases.Member(GONE, "elsewhere", 1, 10.0))
            rows = [execution_row(finished), execution_row(left)]
            await other.execute(_UPSERT, *_columns(rows), GONE)
            async with anyio.create_task_group() as tg:
                tg.start_soon(wait, finished)
                tg.start_soon(wait, left)
                await anyio.sleep(1.0)  # renewals come and go: the other engine runs
                waited = dict(results)
                finished.status = ExecutionStatus.SUCCEEDED
                finished.result = pickle.dumps(41)
                async with other.transaction():  # what the other engine's commit does
                    await other.execute(_UPSERT, *_columns([execution_row(finished)]), GONE)
                    channel = sharing.channel_name(Channel.FINISHED)
                    for notice in sharing.payloads(GONE, [finished.id]):
                        await other.execute("SELECT pg_notify($1, $2)", channel, notice)
                with anyio.fail_after(2):
                    while finished.id not in results:
                        await anyio.sleep(0.01)
                assert left.id not in results  # its engine still runs it
                await other.close()  # gone: this engine adopts ``left`` and runs it
        finally:
            if not other.is_closed():
                await other.close()
    assert waited == {}
    assert results == {finished.id: 41, left.id: 60}
