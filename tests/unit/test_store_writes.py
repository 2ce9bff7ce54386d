"""How the group-commit writer shapes its commits, and the sqlite store's upkeep: bounded
batches, trigger rows never ahead of their firings, the fire records' migration, and
checkpoints on a connection of their own."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from triggerfish import ConfigurationError, SqliteStore, Store
from triggerfish.models import (
    CronTriggerSpec,
    ExecutionRecord,
    ExecutionStatus,
    TriggerRecord,
    new_execution_id,
)
from triggerfish.store import sqlite as sqlite_store
from triggerfish.store._writer import Batch, GroupCommitStore
from triggerfish.store.migrations import MIGRATIONS

pytestmark = pytest.mark.anyio


def record() -> ExecutionRecord:
    return ExecutionRecord(
        id=new_execution_id(),
        function="f",
        service="f",
        input=b"args",
        max_attempts=1,
        created_at=time.time(),
    )


def cron_trigger(trigger_id: str = "trg-c") -> TriggerRecord:
    spec = CronTriggerSpec(name=trigger_id, function="f", cron="* * * * * *")
    return TriggerRecord(id=trigger_id, spec=spec, created_at=1.0)


def spy_on_batches(store: Store) -> list[Batch]:
    """Record each batch the store writes (its own _write still does the writing)."""
    assert isinstance(store, GroupCommitStore)
    batches: list[Batch] = []
    write = store._write

    async def recording(batch: Batch) -> set[str]:
        batches.append(batch)
        return await write(batch)

    store._write = recording  # type: ignore[method-assign]
    return batches


async def test_a_burst_is_committed_in_bounded_batches_with_trigger_rows_last(
    store_factory: Callable[[], Store],
) -> None:
    store = store_factory()
    assert isinstance(store, GroupCommitStore)
    store.batch_limit = 100
    batches = spy_on_batches(store)
    heard: list[int] = []
    async with anyio.create_task_group() as tg:
        await store.start(tg, lambda written, refused, failed: heard.append(len(written)))
        trigger = cron_trigger()
        firings = [record() for _ in range(250)]
        for number, firing in enumerate(firings):
            store.create(firing, (trigger.id, f"2026-01-01T00:00:{number:02d}"))
        trigger.cursor = 42.0
        store.save_trigger(trigger)  # queued with its firings, as a cron hand-over does
        await store.flush()  # returns only once all 250 are committed
        assert heard == [100, 100, 50]
        assert [len(b.executions) for b in batches] == [100, 100, 50]
        assert [len(b.once) for b in batches] == [100, 100, 50]
        # The cursor is written with the last of the firings queued before it, never ahead.
        assert [len(b.triggers) + len(b.trigger_states) for b in batches] == [0, 0, 1]
        for firing in firings:
            assert await store.get(firing.id) is not None
        assert (await store.list_triggers())[0].cursor == 42.0
        await store.aclose()


async def test_a_flush_returns_with_its_own_commits_while_the_queue_never_drains(
    store_factory: Callable[[], Store],
) -> None:
    """Under a steady stream of new executions the queue is never empty; a flush waits for
    the commits that hold what was queued before it, not for the queue to drain."""
    store = store_factory()
    assert isinstance(store, GroupCommitStore)
    store.batch_limit = 10
    commits = 0

    def refill(written: Any, refused: Any, failed: Any) -> None:
        nonlocal commits
        commits += 1
        if commits < 50:  # each commit queues more than the next one takes
            for _ in range(15):
                store.save(record())

    async with anyio.create_task_group() as tg:
        await store.start(tg, refill)
        before = [record() for _ in range(25)]
        for execution in before:
            store.save(execution)
        await store.flush()
        assert commits == 3  # 25 records, 10 a commit: the third holds the last of them
        assert store._pending  # and the queue has not drained
        for execution in before:
            assert await store.get(execution.id) is not None
        await store.aclose()
    assert commits >= 50


async def test_lazy_saves_wait_for_their_time_or_a_flush_of_everything(
    store_factory: Callable[[], Store],
) -> None:
    """A lazy row goes once it has lingered, or with a flush of everything, or with the
    next commit once the record is saved again not lazily; the saves of one execution
    collapse into one row; a flush does not wait."""
    store = store_factory()
    assert isinstance(store, GroupCommitStore)
    batches = spy_on_batches(store)
    store.linger = 0.3
    async with anyio.create_task_group() as tg:
        await store.start(tg)
        quick = record()
        store.create(quick, lazy=True)  # created, then running: neither is waited on
        quick.status = ExecutionStatus.RUNNING
        store.save(quick, lazy=True)
        await anyio.sleep(0.05)
        assert batches == []  # lingering
        quick.status = ExecutionStatus.SUCCEEDED
        store.save(quick)  # a final status someone waits for: into the next commit
        other = record()
        store.save(other, lazy=True)
        await store.flush()
        assert [[i for i, _ in b.executions] for b in batches] == [[quick.id, other.id]]
        stored = await store.get(quick.id)
        assert stored is not None and stored.status is ExecutionStatus.SUCCEEDED

        alone = record()
        store.save(alone, lazy=True)
        begun = time.monotonic()
        with anyio.fail_after(5):
            while await store.get(alone.id) is None:
                await anyio.sleep(0.02)
        assert time.monotonic() - begun >= 0.25  # its linger, nearly all of it

        store.linger = 60.0
        late = record()
        store.save(late, lazy=True)
        with anyio.fail_after(5):  # a flush asks for the commit: no minute's wait
            await store.flush()
        assert await store.get(late.id) is not None
        await store.aclose()


async def test_lazy_saves_wait_apart_from_the_commits_others_wait_for(
    store_factory: Callable[[], Store],
) -> None:
    """A flush of one's own saves (``lazy=False``, as emit and submit do) commits those
    alone: lazy rows wait apart, and go in a commit of their own once ``lingering_batch``
    of them wait."""
    store = store_factory()
    assert isinstance(store, GroupCommitStore)
    batches = spy_on_batches(store)
    store.linger = 60.0
    store.lingering_batch = 4
    async with anyio.create_task_group() as tg:
        await store.start(tg)
        waiting = [record() for _ in range(3)]
        for execution in waiting:
            store.save(execution, lazy=True)
        urgent = record()
        store.create(urgent)
        with anyio.fail_after(5):
            await store.flush(lazy=False)
        assert [[i for i, _ in b.executions] for b in batches] == [[urgent.id]]
        assert await store.get(urgent.id) is not None
        for execution in waiting:
            assert await store.get(execution.id) is None  # still waiting, apart

        fourth = record()
        waiting.append(fourth)
        store.save(fourth, lazy=True)  # the fourth: enough for a commit of their own
        with anyio.fail_after(5):
            while len(batches) < 2:
                await anyio.sleep(0.01)
        assert [i for i, _ in batches[1].executions] == [e.id for e in waiting]

        again = record()
        store.save(again, lazy=True)
        again.status = ExecutionStatus.SUCCEEDED
        store.save(again)  # saved again not lazily: it goes with the next commit
        with anyio.fail_after(5):
            await store.flush(lazy=False)
        stored = await store.get(again.id)
        assert stored is not None and stored.status is ExecutionStatus.SUCCEEDED
        await store.aclose()


async def test_lazy_saves_get_every_other_commit_under_a_steady_stream(
    store_factory: Callable[[], Store],
) -> None:
    """While saves wanted soon keep coming, lazy ones that are due still go, in every other
    commit, never mixed with the others: they do not pile up behind a stream that never
    ends."""
    store = store_factory()
    assert isinstance(store, GroupCommitStore)
    store.batch_limit = 10
    store.lingering_batch = 4
    batches = spy_on_batches(store)
    lazy_ids: set[str] = set()
    commits = 0

    def refill(written: Any, refused: Any, failed: Any) -> None:
        nonlocal commits
        commits += 1
        if commits < 40:
            for _ in range(15):  # more than a commit takes: the stream never drains
                store.save(record())
            for _ in range(5):
                lazy = record()
                lazy_ids.add(lazy.id)
                store.save(lazy, lazy=True)

    async with anyio.create_task_group() as tg:
        await store.start(tg, refill)
        store.save(record())
        with anyio.fail_after(10):
            while commits < 40:
                await anyio.sleep(0.01)
        kinds = []
        for batch in batches[:40]:
            ids = {i for i, _ in batch.executions}
            assert ids <= lazy_ids or not ids & lazy_ids  # never mixed
            kinds.append("lazy" if ids <= lazy_ids else "soon")
        assert kinds[2:40] == ["lazy", "soon"] * 19 or kinds[2:40] == ["soon", "lazy"] * 19
        await store.flush()
        for lazy_id in lazy_ids:
            assert await store.get(lazy_id) is not None
        await store.aclose()


async def test_saving_a_trigger_again_writes_its_state_and_a_new_spec_writes_the_row(
    store_factory: Callable[[], Store],
) -> None:
    store = store_factory()
    batches = spy_on_batches(store)
    trigger = cron_trigger()
    async with anyio.create_task_group() as tg:
        await store.start(tg)
        store.save_trigger(trigger)
        await store.flush()
        trigger.suppressed, trigger.cursor = 7, 99.0  # (fired is counted by the store)
        store.save_trigger(trigger)
        await store.flush()
        trigger.spec = trigger.spec.model_copy(update={"name": "renamed"})
        store.save_trigger(trigger)
        await store.flush()
        assert [(len(b.triggers), len(b.trigger_states)) for b in batches] == [
            (1, 0),
            (0, 1),
            (1, 0),
        ]
        (stored,) = await store.list_triggers()
        assert (stored.spec.name, stored.suppressed, stored.cursor) == ("renamed", 7, 99.0)
        store.delete_trigger(trigger.id)
        await store.flush()
        store.save_trigger(trigger)  # the same id again, after its row was deleted
        await store.flush()
        assert (len(batches[-1].triggers), len(batches[-1].trigger_states)) == (1, 0)
        assert [t.id for t in await store.list_triggers()] == [trigger.id]
        await store.aclose()


async def test_a_reopened_store_writes_a_triggers_whole_row_first(tmp_path: Path) -> None:
    """A ":memory:" database is gone once closed: state-only writes would update nothing."""
    store = SqliteStore(":memory:")
    trigger = cron_trigger()
    for cursor in (1.0, 2.0):
        async with anyio.create_task_group() as tg:
            await store.start(tg)
            trigger.cursor = cursor
            store.save_trigger(trigger)
            await store.flush()
            (stored,) = await store.list_triggers()
            assert stored.cursor == cursor
            await store.aclose()


def _database_at(path: Path, version: int) -> None:
    with sqlite3.connect(path) as connection:
        for script in MIGRATIONS[:version]:
            connection.executescript(script)
        connection.execute(f"PRAGMA user_version={version}")


async def test_fire_records_survive_the_migration_to_key_order(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _database_at(path, 3)  # fires keyed (trigger_id, key)
    with sqlite3.connect(path) as connection:
        connection.execute(
            "INSERT INTO fires (trigger_id, key, execution_id, fired_at) VALUES (?, ?, ?, ?)",
            ("trg-1", "2026-01-01T00:00:00+00:00", "exe-old", 1.0),
        )
    store = SqliteStore(path)
    refusals: list[set[str]] = []
    async with anyio.create_task_group() as tg:
        await store.start(tg, lambda written, refused, failed: refusals.append(set(refused)))
        again, other = record(), record()
        store.create(again, ("trg-1", "2026-01-01T00:00:00+00:00"))
        store.create(other, ("trg-2", "2026-01-01T00:00:00+00:00"))
        await store.flush()
        assert refusals[-1] == {again.id}
        await store.aclose()
    with sqlite3.connect(path) as connection:
        (version,) = connection.execute("PRAGMA user_version").fetchone()
        assert version == len(MIGRATIONS)
        key_columns = [row[2] for row in connection.execute("PRAGMA index_info(fires)")]
        if not key_columns:  # WITHOUT ROWID: the primary key is the table's own index
            key_columns = [
                row[2] for row in connection.execute("PRAGMA index_xinfo(fires)") if row[5]
            ][:2]
        assert key_columns == ["key", "trigger_id"]
        rows = connection.execute("SELECT trigger_id, execution_id FROM fires ORDER BY 1")
        assert rows.fetchall() == [("trg-1", "exe-old"), ("trg-2", other.id)]


async def _fill(store: SqliteStore, commits: int, rows: int) -> list[str]:
    ids = []
    for _ in range(commits):
        batch = [record() for _ in range(rows)]
        ids += [r.id for r in batch]
        await store.insert(batch)
    return ids


async def test_checkpoints_run_beside_the_writer(tmp_path: Path) -> None:
    """The writer's connection never checkpoints (wal_autocheckpoint=0); the checkpointer's
    does, so the database file itself grows while the store is open."""
    path = tmp_path / "executions.db"
    store = SqliteStore(path)
    async with anyio.create_task_group() as tg:
        await store.start(tg)
        empty = path.stat().st_size
        await _fill(store, commits=10, rows=1000)
        with anyio.fail_after(10):
            while path.stat().st_size < empty + 1_000_000:  # ~10,000 rows copied back
                await anyio.sleep(0.05)
        (autocheckpoint,) = await store._conn.execute_fetchall("PRAGMA wal_autocheckpoint")
        assert autocheckpoint == (0,)
        await store.aclose()


async def test_a_long_wal_is_restarted_between_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_store, "_WAL_RESTART_PAGES", 1)
    store = SqliteStore(tmp_path / "executions.db")
    restarts: list[Any] = []
    restart = store._restart_wal

    async def counted() -> None:
        restarts.append(1)
        await restart()

    store._restart_wal = counted  # type: ignore[method-assign]
    async with anyio.create_task_group() as tg:
        await store.start(tg)
        ids = await _fill(store, commits=6, rows=1000)
        with anyio.fail_after(10):
            while not restarts:
                await anyio.sleep(0.05)
        ids += await _fill(store, commits=2, rows=1000)  # writes go on after a restart
        assert all([await store.get(i) is not None for i in ids[::500]])
        assert sum((await store.count_by_status()).values()) == len(ids)
        await store.aclose()


async def test_a_record_the_store_cannot_write_fails_alone_and_never_the_writer(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "t.db")
    heard: list[tuple[set[str], dict[str, str]]] = []
    good, bad, later = record(), record(), record()
    bad.function = "lone \ud800 surrogate"  # no UTF-8 text column can hold it
    async with anyio.create_task_group() as tg:
        await store.start(
            tg, lambda written, refused, failed: heard.append(({i for i, _ in written}, failed))
        )
        await store.insert([good, bad])
        store.save(bad)  # a later save of it is dropped, not retried
        await store.insert([later])
        assert heard[0][0] == {good.id}
        assert list(heard[0][1]) == [bad.id]
        assert "UnicodeEncodeError" in heard[0][1][bad.id]
        assert heard[-1] == ({later.id}, {})
        assert await store.get(good.id) is not None
        assert await store.get(later.id) is not None
        assert await store.get(bad.id) is None
        await store.aclose()


async def test_a_trigger_the_store_cannot_snapshot_fails_alone(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "t.db")
    heard: list[dict[str, str]] = []
    fine, broken = cron_trigger("trg-fine"), cron_trigger("trg-broken")
    # A spec that no validation made: its JSON cannot be written.
    broken.spec = broken.spec.model_construct(**{**dict(broken.spec), "input": {"x": object()}})
    async with anyio.create_task_group() as tg:
        await store.start(tg, lambda written, refused, failed: heard.append(dict(failed)))
        store.save_trigger(fine)
        store.save_trigger(broken)
        await store.insert([record()])
        assert list(heard[0]) == ["trg-broken"]
        assert [t.id for t in await store.list_triggers()] == ["trg-fine"]
        await store.aclose()


def test_a_commits_rows_go_in_statements_of_many_rows_each_binding_little() -> None:
    """Rows stay in order, a statement binds at most _SMALL_BINDING bytes of large values, and
    a row larger than that goes alone: few trips through sqlite, a bounded statement cache."""
    limit = sqlite_store._SMALL_BINDING

    def row(n: int, size: int) -> tuple[Any, ...]:
        values: list[Any] = [f"exe-{n}"] + [None] * (sqlite_store.NCOLS - 1)
        values[4] = b"x" * size  # the input column
        return tuple(values)

    rows = [row(n, size) for n, size in enumerate([100] * 300 + [limit * 2] + [limit // 3] * 4)]
    statements = sqlite_store._statements_of(rows)
    assert [r for chunk in statements for r in chunk] == rows
    assert all(
        sum(map(sqlite_store._bound_size, chunk)) <= limit for chunk in statements if len(chunk) > 1
    )
    big = [chunk for chunk in statements if any(len(r[4]) > limit for r in chunk)]
    assert big == [[rows[300]]]
    assert [len(chunk) for chunk in statements] == [300, 1, 3, 1]
    small = [row(n, 10) for n in range(sqlite_store._ROWS_PER_STATEMENT + 5)]
    assert [len(c) for c in sqlite_store._statements_of(small)] == [
        sqlite_store._ROWS_PER_STATEMENT,
        5,
    ]


async def test_a_file_of_a_newer_schema_is_refused_with_its_version(tmp_path: Path) -> None:
    path = tmp_path / "newer.db"
    with sqlite3.connect(path) as connection:
        connection.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 5}")
    store = SqliteStore(path)
    async with anyio.create_task_group() as tg:
        with pytest.raises(ConfigurationError, match=f"schema version {len(MIGRATIONS) + 5}"):
            await store.start(tg)
