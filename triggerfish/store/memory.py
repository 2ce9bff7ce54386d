"""A Store kept in a dict: the same contract as sqlite, nothing survives the process."""

from __future__ import annotations

import copy
from collections.abc import Collection
from typing import Any

import anyio
import anyio.lowlevel

from ..models import (
    Deployment,
    ExecutionQuery,
    ExecutionRecord,
    ExecutionStatus,
    PackageDefinition,
    PackageRevision,
    ServiceDefinition,
    TriggerRecord,
)
from ._writer import Batch, GroupCommitStore, next_revision, next_version
from .abc import ALL

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
        self._revisions: dict[str, list[PackageRevision]] = {}
        self._codebases: dict[str, bytes] = {}
        self._versions: dict[str, list[Deployment]] = {}
        self._inactive: set[str] = set()
        self._fired_counts: dict[str, int] = {}  # trigger id -> executions it fired, as stored

    async def _open(self) -> None:
        pass

    async def _close(self) -> None:
        pass

    def _snapshot(self, record: ExecutionRecord) -> ExecutionRecord:
        return _copy(record)

    def _snapshot_trigger(self, trigger: TriggerRecord) -> TriggerRecord:
        return copy.copy(trigger)

    _snapshot_trigger_state = _snapshot_trigger  # a copy is as cheap as a part of one

    def _trigger_id_of(self, snapshot: Any) -> str:
        trigger: TriggerRecord = snapshot
        return trigger.id

    async def _write(self, batch: Batch) -> set[str]:
        # A commit is a trip to another thread in a real store: the writer lets the event
        # loop run here too, so that the tasks a commit wakes run before the next one.
        await anyio.lowlevel.checkpoint()
        refused = set()
        for execution_id, key in batch.once.items():
            if key in self._fires:
                refused.add(execution_id)
            else:
                self._fires[key] = execution_id
        for execution_id, record in batch.executions:
            if execution_id not in refused:
                self._rows[execution_id] = record
        for trigger in (*batch.triggers, *batch.trigger_states):
            trigger.fired = self._fired_counts.get(trigger.id, 0)  # the count is the store's own
            self._trigger_rows[trigger.id] = trigger
        for execution_id, trigger_id in batch.fired.items():
            if execution_id not in refused:
                self._fired_counts[trigger_id] = self._fired_counts.get(trigger_id, 0) + 1
                row = self._trigger_rows.get(trigger_id)
                if row is not None:
                    row.fired = self._fired_counts[trigger_id]
        for trigger_id in batch.deleted_triggers:
            self._trigger_rows.pop(trigger_id, None)
        return refused

    async def fired_keys(self, keys: Collection[tuple[str, str]]) -> set[tuple[str, str]]:
        return {key for key in keys if key in self._fires}

    async def list_triggers(self) -> list[TriggerRecord]:
        rows = sorted(self._trigger_rows.values(), key=lambda t: (t.created_at, t.id))
        return [copy.copy(t) for t in rows]

    def _select(self, query: ExecutionQuery) -> list[ExecutionRecord]:
        return [r for r in self._rows.values() if query.matches(r)]

    async def get(self, execution_id: str) -> ExecutionRecord | None:
        record = self._rows.get(execution_id)
        return None if record is None else _copy(record)

    async def list_ids(self, query: ExecutionQuery) -> list[str]:
        ids = sorted((r.id for r in self._select(query)), reverse=True)
        return ids[: query.limit]

    async def find(self, query: ExecutionQuery) -> list[ExecutionRecord]:
        found = sorted(self._select(query), key=lambda r: r.id)[: query.limit]
        return [_copy(r) for r in found]

    # Package and service writes have no await inside: each is atomic on the event loop.

    async def add_package_revision(
        self, package: PackageDefinition, codebase: bytes | None, created_at: float
    ) -> PackageRevision:
        self._check_open()
        revisions = self._revisions.get(package.name, [])
        last = revisions[-1] if revisions else None
        latest = (last.revision, last.codebase_sha256, last.codebase_size) if last else None
        revision = next_revision(package, latest, codebase, created_at)
        if codebase is not None:
            self._codebases.setdefault(revision.codebase_sha256, bytes(codebase))
        self._revisions.setdefault(package.name, []).append(revision)
        return revision

    async def package_revisions(self, name: str) -> list[PackageRevision]:
        return list(self._revisions.get(name, []))

    async def package_names(self) -> list[str]:
        return sorted(self._revisions)

    async def codebase(self, sha256: str) -> bytes | None:
        return self._codebases.get(sha256)

    async def add_service_version(
        self, definition: ServiceDefinition, module: str, revision: int, created_at: float
    ) -> Deployment:
        self._check_open()
        versions = self._versions.setdefault(definition.name, [])
        deployment = next_version(definition, module, revision, len(versions), created_at)
        versions.append(deployment)
        return deployment

    async def service_versions(self, name: str | None = None) -> list[Deployment]:
        names = sorted(self._versions) if name is None else [name]
        return [d for n in names for d in self._versions.get(n, [])]

    async def set_service_active(self, name: str, active: bool) -> None:
        self._check_open()
        if active:
            self._inactive.discard(name)
        else:
            self._inactive.add(name)

    async def inactive_services(self) -> set[str]:
        return set(self._inactive)

    async def count_by_status(self, query: ExecutionQuery = ALL) -> dict[ExecutionStatus, int]:
        counts = dict.fromkeys(ExecutionStatus, 0)
        for record in self._select(query):
            counts[record.status] += 1
        return counts
