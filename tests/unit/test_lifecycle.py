"""The lifecycle's transition table, tried pair by pair on a real (memory) store."""

from __future__ import annotations

import itertools

import anyio
import pytest

from triggerfish import ExecutionStatus, MemoryStore
from triggerfish.engine.events import EventHub, ExecutionStatusChanged
from triggerfish.engine.lifecycle import TRANSITIONS, IllegalTransitionError, Lifecycle, Live
from triggerfish.models import TERMINAL_STATUSES, UNFINISHED_STATUSES, ExecutionRecord

S = ExecutionStatus
PAIRS = list(itertools.product(S, S))
pytestmark = pytest.mark.anyio


def _record(status: ExecutionStatus) -> ExecutionRecord:
    return ExecutionRecord(
        id=f"exe-{status.value}",
        function="f",
        service="f",
        input=b"",
        max_attempts=1,
        created_at=1.0,
        status=status,
    )


@pytest.mark.parametrize(("before", "after"), PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
async def test_every_pair_of_statuses(before: ExecutionStatus, after: ExecutionStatus) -> None:
    store, hub = MemoryStore(), EventHub()
    heard: list[ExecutionStatusChanged] = []
    hub.listen(ExecutionStatusChanged, heard.append)
    lifecycle = Lifecycle(store, hub, "engine-1")
    async with anyio.create_task_group() as tg:
        await store.start(tg)
        live = Live(_record(before))
        if after in TRANSITIONS[before]:
            lifecycle._change(live, after, "moved", 2.0)
            assert live.record.status is after
            assert live.record.status_log[-1] == (2.0, after, None, "moved")
            assert [(e.previous, e.status) for e in heard] == [(before.value, after.value)]
            await store.flush()
            stored = await store.get(live.record.id)
            assert stored is not None and stored.status is after
        else:
            with pytest.raises(IllegalTransitionError, match=f"{before} cannot become {after}"):
                lifecycle._change(live, after, "refused", 2.0)
            assert live.record.status is before
            assert live.record.status_log == []
            assert heard == []
        await store.aclose()


def test_the_table_covers_every_status_and_ends_where_it_should() -> None:
    assert set(TRANSITIONS) == set(S)
    assert set(S) == UNFINISHED_STATUSES | TERMINAL_STATUSES
    assert not UNFINISHED_STATUSES & TERMINAL_STATUSES
    for status in TERMINAL_STATUSES:  # a final status goes nowhere but back for a rerun
        assert TRANSITIONS[status] <= {S.PENDING}
    assert TRANSITIONS[S.SUCCEEDED] == TRANSITIONS[S.CANCELLED] == frozenset()
    for status in UNFINISHED_STATUSES:  # and every unfinished one can end
        assert TRANSITIONS[status] & TERMINAL_STATUSES
