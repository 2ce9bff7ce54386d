"""The group-commit writer both store backends share."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from ..errors import EngineClosedError
from ..models import ExecutionRecord
from .abc import CommitListener, Store


class GroupCommitStore(Store):
    """A Store whose writes gather while the previous commit runs, then are written together.

    Subclasses say how a record is snapshotted (``_snapshot``, called on the event loop, so the
    snapshot is consistent) and how a batch is written (``_write``); batching, ordering and
    waiting live here once. No timer: the batch is whatever queued during the last commit.
    """

    def __init__(self) -> None:
        self._pending: dict[str, ExecutionRecord] = {}
        self._wake = anyio.Event()
        self._pending_committed = anyio.Event()
        self._inflight_committed: anyio.Event | None = None
        self._listener: CommitListener | None = None
        self._closing = False
        self._stopped: anyio.Event | None = None

    @abstractmethod
    async def _open(self) -> None: ...

    @abstractmethod
    async def _close(self) -> None: ...

    @abstractmethod
    def _snapshot(self, record: ExecutionRecord) -> Any: ...

    @abstractmethod
    async def _write(self, snapshots: list[Any]) -> None: ...

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

    def save(self, record: ExecutionRecord) -> None:
        if self._stopped is None or self._stopped.is_set():
            raise EngineClosedError("the store is not open")
        self._pending[record.id] = record
        self._wake.set()

    async def flush(self) -> None:
        if self._pending:
            await self._pending_committed.wait()
        elif self._inflight_committed is not None:
            await self._inflight_committed.wait()

    async def _run_writer(self, *, task_status: TaskStatus[None]) -> None:
        assert self._stopped is not None
        task_status.started()
        try:
            while self._pending or not self._closing:
                await self._wake.wait()
                self._wake = anyio.Event()
                if self._pending:
                    await self._commit_pending()
        finally:
            self._stopped.set()

    async def _commit_pending(self) -> None:
        batch, self._pending = self._pending, {}
        done, self._pending_committed = self._pending_committed, anyio.Event()
        self._inflight_committed = done
        snapshots = [self._snapshot(record) for record in batch.values()]
        written = [(record.id, record.status) for record in batch.values()]
        # A commit that has begun finishes even when the engine is being cancelled.
        with anyio.CancelScope(shield=True):
            await self._write(snapshots)
        self._inflight_committed = None
        done.set()
        if self._listener is not None:
            self._listener(written)
