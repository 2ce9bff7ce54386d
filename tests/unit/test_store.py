"""The Store contract, run against every backend."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import anyio
import anyio.lowlevel
import pytest

from triggerfish import ExecutionStatus, MemoryStore, Store
from triggerfish.models import ExecutionQuery as Q
from triggerfish.models import ExecutionRecord, new_execution_id

pytestmark = pytest.mark.anyio
S = ExecutionStatus


def _change(record: ExecutionRecord, status: ExecutionStatus, message: str, now: float) -> None:
    """What the engine's lifecycle does to a record, as far as the store sees it."""
    record.status = status
    record.status_log.append((now, status, record.progress, message))


def record(function: str = "f", **changes: object) -> ExecutionRecord:
    rec = ExecutionRecord(
        id=new_execution_id(),
        function=function,
        service=function,
        input=b"args",
        max_attempts=1,
        created_at=time.time(),
    )
    for key, value in changes.items():
        setattr(rec, key, value)
    return rec


async def test_insert_commits_and_reads_back_copies(store_factory: Callable[[], Store]) -> None:
    store = store_factory()
    async with anyio.create_task_group() as tg:
        await store.start(tg)
        rec = record(result=b"r", error=("T", "m", "tb"), parent_id="p")
        _change(rec, S.RUNNING, "go", 1.5)
        rec.logs = [*rec.logs, (2.0, "stdout", "hi\n")]
        await store.insert([rec])
        got = await store.get(rec.id)
        assert got is not None and got is not rec
        assert (got.status, got.result, got.error, got.parent_id) == (
            S.RUNNING,
            b"r",
            ("T", "m", "tb"),
            "p",
        )
        assert got.status_log == [(1.5, S.RUNNING, None, "go")]
        assert got.logs == [(2.0, "stdout", "hi\n")]
        got.status_log.append((3.0, S.FAILED, None, ""))
        again = await store.get(rec.id)
        assert again is not None and len(again.status_log) == 1
        assert await store.get("exe-missing") is None
        await store.aclose()


async def test_saves_before_a_commit_collapse_to_the_latest_state(
    store_factory: Callable[[], Store],
) -> None:
    store = store_factory()
    commits: list[Sequence[tuple[str, ExecutionStatus]]] = []
    async with anyio.create_task_group() as tg:
        await store.start(tg, lambda written, refused, failed: commits.append(written))
        rec = record()
        store.save(rec)
        _change(rec, S.RUNNING, "", 0.0)
        store.save(rec)
        _change(rec, S.SUCCEEDED, "", 0.0)
        store.save(rec)
        await store.flush()
        assert commits == [[(rec.id, S.SUCCEEDED)]]  # one write of the latest state
        stored = await store.get(rec.id)
        assert stored is not None and stored.status is S.SUCCEEDED
        await store.aclose()


async def test_flush_waits_for_a_commit_already_in_flight(
    store_factory: Callable[[], Store],
) -> None:
    store = store_factory()
    async with anyio.create_task_group() as tg:
        await store.start(tg)
        records = [record() for _ in range(3000)]
        for rec in records:
            store.save(rec)
        await anyio.lowlevel.checkpoint()  # let the writer take the batch
        await store.flush()
        counts = await store.count_by_status()
        assert counts[S.PENDING] == 3000
        await store.aclose()


async def test_listing_paging_filters_and_counts(store_factory: Callable[[], Store]) -> None:
    store = store_factory()
    async with anyio.create_task_group() as tg:
        await store.start(tg)
        f_records = [record("f") for _ in range(5)]
        g_record = record("g", status=S.FAILED)
        f_records[1].status = S.SUCCEEDED
        await store.insert([*f_records, g_record])
        ids = [r.id for r in f_records]
        assert await store.list_ids(Q(function="f")) == ids[::-1]
        assert await store.list_ids(Q(function="f", limit=2)) == ids[:-3:-1]
        assert await store.list_ids(Q(function="f", before=ids[2])) == ids[1::-1]
        assert await store.list_ids(Q(statuses=frozenset({S.FAILED}))) == [g_record.id]
        assert await store.list_ids(Q()) == [g_record.id, *ids[::-1]]
        found = await store.find(Q(function="f", statuses=frozenset({S.PENDING})))
        assert [r.id for r in found] == [ids[0], *ids[2:]]
        counts = await store.count_by_status(Q(function="f"))
        assert counts[S.PENDING] == 4 and counts[S.SUCCEEDED] == 1 and counts[S.FAILED] == 0
        await store.aclose()


async def test_listing_by_trigger_and_creation_time(store_factory: Callable[[], Store]) -> None:
    store = store_factory()
    async with anyio.create_task_group() as tg:
        await store.start(tg)
        old = record("f", created_at=1000.0, trigger_id="trg-1")
        middle = record("f", created_at=2000.0, trigger_id="trg-2")
        new = record("g", created_at=3000.0, trigger_id="trg-1")
        await store.insert([old, middle, new])
        assert await store.list_ids(Q(trigger_id="trg-1")) == [new.id, old.id]
        assert await store.list_ids(Q(created_after=2000.0)) == [new.id, middle.id]
        assert await store.list_ids(Q(created_before=2000.0)) == [old.id]
        window = await store.list_ids(Q(created_after=1500.0, created_before=2500.0))
        assert window == [middle.id]
        assert await store.list_ids(Q(function="g", trigger_id="trg-2")) == []
        await store.aclose()


async def test_close_commits_what_is_queued_and_a_reopened_store_has_it(
    store_factory: Callable[[], Store],
) -> None:
    store = store_factory()
    async with anyio.create_task_group() as tg:
        await store.start(tg)
        rec = record()
        store.save(rec)
        await store.aclose()  # no flush: closing must commit it
    # A sqlite or PostgreSQL store reopens its file or database; the memory store can only
    # be started again.
    reopened = store if isinstance(store, MemoryStore) else store_factory()
    assert reopened is not store or isinstance(store, MemoryStore)
    async with anyio.create_task_group() as tg:
        await reopened.start(tg)
        stored = await reopened.get(rec.id)
        await reopened.aclose()
    assert stored is not None and stored.id == rec.id


async def test_save_after_close_is_refused(store_factory: Callable[[], Store]) -> None:
    from triggerfish import EngineClosedError

    store = store_factory()
    async with anyio.create_task_group() as tg:
        await store.start(tg)
        await store.aclose()
    with pytest.raises(EngineClosedError):
        store.save(record())


async def test_once_keys_refuse_a_second_execution_in_one_commit_and_after_reopening(
    store_factory: Callable[[], Store],
) -> None:
    store = store_factory()
    refusals: list[set[str]] = []
    async with anyio.create_task_group() as tg:
        await store.start(tg, lambda written, refused, failed: refusals.append(set(refused)))
        first, twin, other = record(), record(), record()
        store.create(first, ("trg-1", "item-1"))
        store.create(twin, ("trg-1", "item-1"))  # same key, same commit
        store.create(other, ("trg-1", "item-2"))
        await store.flush()
        assert refusals[-1] == {twin.id}
        assert await store.get(twin.id) is None and await store.get(other.id) is not None
        await store.aclose()
    reopened = store if isinstance(store, MemoryStore) else store_factory()
    async with anyio.create_task_group() as tg:
        await reopened.start(tg, lambda written, refused, failed: refusals.append(set(refused)))
        late = record()
        reopened.create(late, ("trg-1", "item-1"))  # fired before the restart
        fresh = record()
        reopened.create(fresh, ("trg-2", "item-1"))  # another trigger, same resource
        await reopened.flush()
        assert refusals[-1] == {late.id}
        assert await reopened.get(fresh.id) is not None
        await reopened.aclose()


async def test_creations_and_triggers_queued_together_are_as_if_queued_one_by_one(
    store_factory: Callable[[], Store],
) -> None:
    """``create_all`` and ``save_triggers``, as a cron second's hand-over uses them: once
    keys refuse, firings are counted, trigger states are stored; closed, they are refused."""
    from triggerfish import EngineClosedError
    from triggerfish.models import CronTriggerSpec, TriggerRecord

    store = store_factory()
    triggers = [
        TriggerRecord(
            id=f"trg-{i}",
            spec=CronTriggerSpec(name=f"c{i}", function="f", cron="* * * * *"),
            created_at=1.0,
        )
        for i in range(3)
    ]
    refusals: list[set[str]] = []
    async with anyio.create_task_group() as tg:
        await store.start(tg, lambda written, refused, failed: refusals.append(set(refused)))
        store.save_triggers(triggers, lazy=False)
        await store.flush()
        firings = [record() for _ in triggers]
        twin = record()
        for execution, trigger in zip([*firings, twin], [*triggers, triggers[0]], strict=True):
            execution.trigger_id = trigger.id
        keys = [(t.id, "2026-01-01T00:00:00+00:00") for t in triggers]
        store.create_all([*zip(firings, keys, strict=True), (twin, keys[0])], lazy=True)
        for trigger in triggers:
            trigger.cursor = 1767225600.0
        store.save_triggers(triggers, lazy=True)
        await store.flush()
        assert refusals[-1] == {twin.id}
        assert [await store.get(f.id) is not None for f in firings] == [True] * 3
        assert [(t.fired, t.cursor) for t in await store.list_triggers()] == [(1, 1767225600.0)] * 3
        await store.aclose()
    with pytest.raises(EngineClosedError):
        store.create_all([(record(), None)], lazy=False)
    with pytest.raises(EngineClosedError):
        store.save_triggers(triggers, lazy=False)


async def test_triggers_are_kept_updated_and_deleted(store_factory: Callable[[], Store]) -> None:
    from triggerfish.models import CronTriggerSpec, EventTriggerSpec, TriggerRecord

    store = store_factory()
    event = TriggerRecord(
        id="trg-a",
        spec=EventTriggerSpec(name="a", function="f", resource="Item", actions=("Created",)),
        created_at=1.0,
    )
    cron = TriggerRecord(
        id="trg-b", spec=CronTriggerSpec(name="b", function="f", cron="* * * * *"), created_at=2.0
    )
    async with anyio.create_task_group() as tg:
        await store.start(tg)
        store.save_trigger(event)
        store.save_trigger(cron)
        await store.flush()
        event.suppressed, event.last_suppressed_reason = 3, "loop"
        cron.cursor, cron.missed = 123.5, 4
        store.save_trigger(event)
        store.save_trigger(cron)
        await store.flush()
        await store.aclose()
    reopened = store if isinstance(store, MemoryStore) else store_factory()
    async with anyio.create_task_group() as tg:
        await reopened.start(tg)
        loaded = await reopened.list_triggers()
        assert [t.id for t in loaded] == ["trg-a", "trg-b"]
        assert loaded[0].spec == event.spec and loaded[1].spec == cron.spec
        assert (loaded[0].suppressed, loaded[0].last_suppressed_reason) == (3, "loop")
        assert (loaded[1].cursor, loaded[1].missed) == (123.5, 4)
        reopened.delete_trigger("trg-a")
        await reopened.flush()
        assert [t.id for t in await reopened.list_triggers()] == ["trg-b"]
        await reopened.aclose()


async def test_a_triggers_firings_are_counted_in_the_commit_that_stores_them(
    store_factory: Callable[[], Store],
) -> None:
    """No save of the trigger after its firings: the count is stored with them, so a crash
    right after their commit cannot lose it. A firing its once key refused is not counted."""
    from triggerfish.models import EventTriggerSpec, TriggerRecord

    store = store_factory()
    trigger = TriggerRecord(
        id="trg-count",
        spec=EventTriggerSpec(name="count", function="f", resource="Item", actions=("Created",)),
        created_at=1.0,
    )
    async with anyio.create_task_group() as tg:
        await store.start(tg)
        store.save_trigger(trigger)
        await store.flush()
        fired = [record(), record(), record()]
        for execution in fired:
            execution.trigger_id = trigger.id
        store.create(fired[0], (trigger.id, "item-1"))
        store.create(fired[1], (trigger.id, "item-1"))  # refused: item-1 has had its run
        store.create(fired[2])  # an Always firing: no once key
        await store.flush()
        (stored,) = await store.list_triggers()
        assert stored.fired == 2
        await store.aclose()
    reopened = store if isinstance(store, MemoryStore) else store_factory()
    told: list[tuple[set[str], set[str]]] = []
    async with anyio.create_task_group() as tg:
        await reopened.start(
            tg, lambda written, refused, failed: told.append((set(refused), set(failed)))
        )
        (stored,) = await reopened.list_triggers()
        assert stored.fired == 2
        late = record()  # a commit whose every firing is refused counts none, and fails none
        late.trigger_id = trigger.id
        reopened.create(late, (trigger.id, "item-1"))
        await reopened.flush()
        (stored,) = await reopened.list_triggers()
        assert stored.fired == 2 and await reopened.get(late.id) is None
        assert told[-1] == ({late.id}, set())  # refused, not failed
        assert await reopened.fired_keys({(trigger.id, "item-1"), (trigger.id, "x")}) == {
            (trigger.id, "item-1")
        }
        await reopened.aclose()


@pytest.mark.parametrize("bystanders", [0, 20])  # a few trigger rows, and many
async def test_firings_of_many_triggers_in_one_commit_are_each_counted(
    store_factory: Callable[[], Store], bystanders: int
) -> None:
    """One statement raises every trigger's count: each by its own firings, none by a
    refused one, and a trigger with no firing is left as it was."""
    from triggerfish.models import EventTriggerSpec, TriggerRecord

    store = store_factory()
    triggers = [
        TriggerRecord(
            id=f"trg-{i}",
            spec=EventTriggerSpec(
                name=f"t{i}", function="f", resource="Item", actions=("Created",)
            ),
            created_at=1.0,
        )
        for i in range(4 + bystanders)
    ]
    async with anyio.create_task_group() as tg:
        await store.start(tg)
        for trigger in triggers:
            store.save_trigger(trigger)
        await store.flush()
        for trigger in triggers[4:]:  # fired once each, in the same commit as the others
            execution = record()
            execution.trigger_id = trigger.id
            store.create(execution)
        for i, trigger in enumerate(triggers[:3]):
            for n in range(i + 1):
                execution = record()
                execution.trigger_id = trigger.id
                store.create(execution, (trigger.id, f"item-{n}"))
        refused = record()
        refused.trigger_id = "trg-2"
        store.create(refused, ("trg-2", "item-0"))  # item-0 fired trg-2 in this commit already
        triggers[0].suppressed, triggers[0].cursor = 5, 7.5  # its state, in the same commit
        store.save_trigger(triggers[0])
        triggers[3].cursor = 9.0  # a state and no firing
        store.save_trigger(triggers[3])
        await store.flush()
        stored = {t.id: t for t in await store.list_triggers()}
        assert {i: t.fired for i, t in stored.items()} == {
            "trg-0": 1,
            "trg-1": 2,
            "trg-2": 3,
            "trg-3": 0,
            **{t.id: 1 for t in triggers[4:]},
        }
        assert (stored["trg-0"].suppressed, stored["trg-0"].cursor) == (5, 7.5)
        assert (stored["trg-1"].suppressed, stored["trg-1"].cursor) == (0, None)
        assert stored["trg-3"].cursor == 9.0
        assert await store.get(refused.id) is None
        await store.aclose()
