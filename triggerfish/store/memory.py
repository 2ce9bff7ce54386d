"""A Store kept in a dict: the same contract as sqlite, nothing survives the process."""

from __future__ import annotations

import copy
from collections.abc import Collection

from ..models import ExecutionRecord, ExecutionStatus, TriggerRecord
from ._writer import Batch, GroupCommitStore

__all__ = ["MemoryStore"]


def _copy(record: ExecutionRecord) -> ExecutionRecord:
    clone = copy.copy(record)
    clone.status_log = list(record.status_log)
    clone.logs = list(record.logs)
    return clone


class MemoryStore(GroupCommitStore):
    """Executions in memory, written in the same groups as sqlite so both behave alike."""

    def __init__(self) -> None:
        super().__init__()
        self._rows: dict[str, ExecutionRecord] = {}
        self._fires: dict[tuple[str, str], str] = {}
        self._trigger_rows: dict[str, TriggerRecord] = {}

    async def _open(self) -> None:
        pass

    async def _close(self) -> None:
        pass

    def _snapshot(self, record: ExecutionRecord) -> ExecutionRecord:
        return _copy(record)

    def _snapshot_trigger(self, trigger: TriggerRecord) -> TriggerRecord:
        return copy.copy(trigger)

    async def _write(self, batch: Batch) -> set[str]:
        refused = set()
        for execution_id, key in batch.once.items():
            if key in self._fires:
                refused.add(execution_id)
            else:
                self._fires[key] = execution_id
        for execution_id, record in batch.executions:
            if execution_id not in refused:
                self._rows[execution_id] = record
        for trigger in batch.triggers:
            self._trigger_rows[trigger.id] = trigger
        for trigger_id in batch.deleted_triggers:
            self._trigger_rows.pop(trigger_id, None)
        return refused

    async def list_triggers(self) -> list[TriggerRecord]:
        rows = sorted(self._trigger_rows.values(), key=lambda t: (t.created_at, t.id))
        return [copy.copy(t) for t in rows]

    def _select(
        self, function: str | None, statuses: Collection[ExecutionStatus] | None
    ) -> list[ExecutionRecord]:
        wanted = None if statuses is None else {ExecutionStatus(s) for s in statuses}
        return [
            r
            for r in self._rows.values()
            if (function is None or r.function == function)
            and (wanted is None or r.status in wanted)
        ]

    async def get(self, execution_id: str) -> ExecutionRecord | None:
        record = self._rows.get(execution_id)
        return None if record is None else _copy(record)

    async def list_ids(
        self,
        *,
        function: str | None = None,
        statuses: Collection[ExecutionStatus] | None = None,
        before: str | None = None,
        limit: int = 50,
        trigger_id: str | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
    ) -> list[str]:
        ids = sorted(
            (
                r.id
                for r in self._select(function, statuses)
                if (before is None or r.id < before)
                and (trigger_id is None or r.trigger_id == trigger_id)
                and (created_after is None or r.created_at >= created_after)
                and (created_before is None or r.created_at < created_before)
            ),
            reverse=True,
        )
        return ids[:limit]

    async def find(
        self, *, function: str | None = None, statuses: Collection[ExecutionStatus] | None = None
    ) -> list[ExecutionRecord]:
        return [_copy(r) for r in sorted(self._select(function, statuses), key=lambda r: r.id)]

    async def count_by_status(self, *, function: str | None = None) -> dict[ExecutionStatus, int]:
        counts = dict.fromkeys(ExecutionStatus, 0)
        for record in self._select(function, None):
            counts[record.status] += 1
        return counts
