"""The group-commit writer both store backends share."""

from __future__ import annotations

import hashlib
import itertools
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
    triggers: list[Any] = field(default_factory=list)  # whole rows: new or changed specs
    trigger_states: list[Any] = field(default_factory=list)  # counters and cursor only
    deleted_triggers: list[str] = field(default_factory=list)

    @property
    def simple(self) -> bool:
        return not (self.once or self.triggers or self.trigger_states or self.deleted_triggers)


class GroupCommitStore(Store):
    """A Store whose writes gather while the previous commit runs, then are written together.

    Subclasses say how records are snapshotted (called on the event loop, so a snapshot is
    consistent) and how a batch is written; batching, ordering and waiting live here once.
    No timer: the batch is whatever queued during the last commit, up to ``batch_limit``
    executions. The limit makes a burst (a thousand cron firings due at once) a pipeline:
    the first few hundred are committed, and go to replicas, while the next are committed.

    A trigger is saved whole only when its spec is not the one written last (specs are
    frozen, so identity tells): the frequent saves, a cron cursor each second and a counter
    after each firing, write its state alone.
    """

    batch_limit = 256  # executions per commit, at most

    def __init__(self) -> None:
        self._pending: dict[str, ExecutionRecord] = {}
        self._once: dict[str, tuple[str, str]] = {}
        self._triggers: dict[str, TriggerRecord | None] = {}  # None: delete
        self._written_specs: dict[str, object] = {}  # trigger id -> the spec its row holds
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
    def _snapshot_trigger_state(self, trigger: TriggerRecord) -> Any:
        """The trigger's counters and cursor, for a row whose spec is already written."""

    @abstractmethod
    async def _write(self, batch: Batch) -> set[str]:
        """Write the batch atomically; return the ids of executions refused by a once key."""

    async def start(self, task_group: TaskGroup, listener: CommitListener | None = None) -> None:
        self._listener = listener
        self._closing = False
        self._written_specs.clear()  # a reopened store may have lost its rows (":memory:")
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
                if not self._has_pending():
                    await self._wake.wait()
                self._wake = anyio.Event()
                if self._has_pending():
                    await self._commit_pending()
        finally:
            self._stopped.set()

    def _take_pending(self) -> tuple[list[ExecutionRecord], dict[str, tuple[str, str]], bool]:
        """The executions (with their once keys) for the next commit: all that are queued, or
        the first ``batch_limit`` of them; and whether that drains the queue."""
        if len(self._pending) <= self.batch_limit:
            records = list(self._pending.values())
            once, self._pending, self._once = self._once, {}, {}
            return records, once, True
        records = list(itertools.islice(self._pending.values(), self.batch_limit))
        once = {}
        for record in records:
            del self._pending[record.id]
            key = self._once.pop(record.id, None)
            if key is not None:
                once[record.id] = key
        return records, once, False

    async def _commit_pending(self) -> None:
        records, once, drained = self._take_pending()
        if drained:
            # Trigger rows ride with the commit that empties the queue, never before the
            # executions queued with them: a cron cursor must not be stored ahead of its
            # firings (a firing stored twice is refused by its fire record; one never
            # stored would be lost).
            triggers, self._triggers = self._triggers, {}
            done, self._pending_committed = self._pending_committed, anyio.Event()
        else:
            triggers, done = {}, anyio.Event()  # flush() waits for the commit that drains
        self._inflight_committed = done
        batch = Batch(executions=[(r.id, self._snapshot(r)) for r in records], once=once)
        self._add_triggers(batch, triggers)
        statuses = [(r.id, r.status) for r in records]
        # A commit that has begun finishes even when the engine is being cancelled.
        with anyio.CancelScope(shield=True):
            async with self._writing:
                refused = await self._write(batch)
        self._inflight_committed = None
        done.set()
        if self._listener is not None:
            written = [s for s in statuses if s[0] not in refused] if refused else statuses
            self._listener(written, refused)

    def _add_triggers(self, batch: Batch, triggers: dict[str, TriggerRecord | None]) -> None:
        written = self._written_specs
        for trigger_id, trigger in triggers.items():
            if trigger is None:
                batch.deleted_triggers.append(trigger_id)
                written.pop(trigger_id, None)
            elif written.get(trigger_id) is trigger.spec:
                batch.trigger_states.append(self._snapshot_trigger_state(trigger))
            else:
                batch.triggers.append(self._snapshot_trigger(trigger))
                written[trigger_id] = trigger.spec
