"""A Store kept in a dict: the same contract as sqlite, nothing survives the process."""

from __future__ import annotations

import copy
from collections.abc import Collection

from ..models import ExecutionRecord, ExecutionStatus
from ._writer import GroupCommitStore

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

    async def _open(self) -> None:
        pass

    async def _close(self) -> None:
        pass

    def _snapshot(self, record: ExecutionRecord) -> ExecutionRecord:
        return _copy(record)

    async def _write(self, snapshots: list[ExecutionRecord]) -> None:
        for record in snapshots:
            self._rows[record.id] = record

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
    ) -> list[str]:
        ids = sorted(
            (r.id for r in self._select(function, statuses) if before is None or r.id < before),
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
