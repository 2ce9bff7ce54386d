"""The group-commit writer both store backends share."""

from __future__ import annotations

import hashlib
from abc import abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import anyio
from anyio.abc import TaskGroup, TaskStatus

from ..errors import ConfigurationError, EngineClosedError
from ..models import (
    Deployment,
    ExecutionRecord,
    PackageDefinition,
    PackageRevision,
    ServiceDefinition,
    TriggerRecord,
)
from .abc import CommitListener, Store

T = TypeVar("T")


def next_revision(
    package: PackageDefinition,
    latest: tuple[int, str, int] | None,
    codebase: bytes | None,
    created_at: float,
) -> PackageRevision:
    """The revision after ``latest`` (revision, sha256, size), with ``codebase`` or, with
    None, the latest one's."""
    if codebase is not None:
        sha256, size = hashlib.sha256(codebase).hexdigest(), len(codebase)
    elif latest is not None:
        _, sha256, size = latest
    else:
        raise ConfigurationError(
            f"package {package.name!r} has no revision whose codebase an update could reuse"
        )
    return PackageRevision(
        name=package.name,
        revision=(latest[0] if latest else 0) + 1,
        package=package,
        codebase_sha256=sha256,
        codebase_size=size,
        created_at=datetime.fromtimestamp(created_at, UTC),
    )


def next_version(
    definition: ServiceDefinition, module: str, revision: int, last: int, created_at: float
) -> Deployment:
    """The service version after version ``last`` (0 for a new service)."""
    return Deployment(
        name=definition.name,
        version=last + 1,
        package=definition.package_name,
        revision=revision,
        module=module,
        definition=definition.model_copy(update={"package_revision": revision}),
        created_at=datetime.fromtimestamp(created_at, UTC),
    )


@dataclass(slots=True)
class Batch:
    """One commit's worth of writes, snapshotted on the event loop."""

    executions: list[tuple[str, Any]] = field(default_factory=list)  # (id, snapshot)
    once: dict[str, tuple[str, str]] = field(default_factory=dict)  # execution id -> key
    triggers: list[Any] = field(default_factory=list)
    deleted_triggers: list[str] = field(default_factory=list)

    @property
    def simple(self) -> bool:
        return not (self.once or self.triggers or self.deleted_triggers)


class GroupCommitStore(Store):
    """A Store whose writes gather while the previous commit runs, then are written together.

    Subclasses say how records are snapshotted (called on the event loop, so a snapshot is
    consistent) and how a batch is written; batching, ordering and waiting live here once.
    No timer: the batch is whatever queued during the last commit.
    """

    def __init__(self) -> None:
        self._pending: dict[str, ExecutionRecord] = {}
        self._once: dict[str, tuple[str, str]] = {}
        self._triggers: dict[str, TriggerRecord | None] = {}  # None: delete
        self._wake = anyio.Event()
        self._pending_committed = anyio.Event()
        self._inflight_committed: anyio.Event | None = None
        self._listener: CommitListener | None = None
        self._closing = False
        self._stopped: anyio.Event | None = None
        # Held by each group commit and by each rare direct write, so that a direct write's
        # transaction never interleaves with a commit's.
        self._writing = anyio.Lock()

    @abstractmethod
    async def _open(self) -> None: ...

    @abstractmethod
    async def _close(self) -> None: ...

    @abstractmethod
    def _snapshot(self, record: ExecutionRecord) -> Any: ...

    @abstractmethod
    def _snapshot_trigger(self, trigger: TriggerRecord) -> Any: ...

    @abstractmethod
    async def _write(self, batch: Batch) -> set[str]:
        """Write the batch atomically; return the ids of executions refused by a once key."""

    async def start(self, task_group: TaskGroup, listener: CommitListener | None = None) -> None:
        self._listener = listener
        self._closing = False
        await self._open()
        self._stopped = anyio.Event()
        await task_group.start(self._run_writer, name="store-writer")

    async def aclose(self) -> None:
        if self._stopped is None:
            return
        with anyio.CancelScope(shield=True):
            self._closing = True
            self._wake.set()
            await self._stopped.wait()
            self._stopped = None
            await self._close()

    async def insert(self, records: Sequence[ExecutionRecord]) -> None:
        for record in records:
            self.save(record)
        await self.flush()

    def _check_open(self) -> None:
        if self._stopped is None or self._stopped.is_set():
            raise EngineClosedError("the store is not open")

    def save(self, record: ExecutionRecord) -> None:
        self._check_open()
        self._pending[record.id] = record
        self._wake.set()

    def create(self, record: ExecutionRecord, once: tuple[str, str] | None = None) -> None:
        self.save(record)
        if once is not None:
            self._once[record.id] = once

    def save_trigger(self, trigger: TriggerRecord) -> None:
        self._check_open()
        self._triggers[trigger.id] = trigger
        self._wake.set()

    def delete_trigger(self, trigger_id: str) -> None:
        self._check_open()
        self._triggers[trigger_id] = None
        self._wake.set()

    async def _exclusive(self, work: Callable[[], Awaitable[T]]) -> T:
        """Run ``work`` (a direct write) between two group commits."""
        self._check_open()
        async with self._writing:
            with anyio.CancelScope(shield=True):  # begun, a transaction is finished
                result = await work()
        return result

    def _has_pending(self) -> bool:
        return bool(self._pending or self._triggers)

    async def flush(self) -> None:
        if self._has_pending():
            await self._pending_committed.wait()
        elif self._inflight_committed is not None:
            await self._inflight_committed.wait()

    async def _run_writer(self, *, task_status: TaskStatus[None]) -> None:
        assert self._stopped is not None
        task_status.started()
        try:
            while self._has_pending() or not self._closing:
                await self._wake.wait()
                self._wake = anyio.Event()
                if self._has_pending():
                    await self._commit_pending()
        finally:
            self._stopped.set()

    async def _commit_pending(self) -> None:
        pending, self._pending = self._pending, {}
        once, self._once = self._once, {}
        triggers, self._triggers = self._triggers, {}
        done, self._pending_committed = self._pending_committed, anyio.Event()
        self._inflight_committed = done
        batch = Batch(
            executions=[(r.id, self._snapshot(r)) for r in pending.values()],
            once=once,
            triggers=[self._snapshot_trigger(t) for t in triggers.values() if t is not None],
            deleted_triggers=[i for i, t in triggers.items() if t is None],
        )
        statuses = [(r.id, r.status) for r in pending.values()]
        # A commit that has begun finishes even when the engine is being cancelled.
        with anyio.CancelScope(shield=True):
            async with self._writing:
                refused = await self._write(batch)
        self._inflight_committed = None
        done.set()
        if self._listener is not None:
            written = [s for s in statuses if s[0] not in refused] if refused else statuses
            self._listener(written, refused)
