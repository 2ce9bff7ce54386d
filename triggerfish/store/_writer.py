"""The group-commit writer both store backends share."""

from __future__ import annotations

import hashlib
import itertools
import time
from abc import abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import anyio
from anyio.abc import TaskGroup, TaskStatus

from ..errors import ConfigurationError, EngineClosedError
from ..log import logger
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


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


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
    # New executions a trigger fired (execution id -> trigger id): each one written raises
    # its trigger's count of firings, in the same transaction.
    fired: dict[str, str] = field(default_factory=dict)

    @property
    def simple(self) -> bool:
        """Executions alone: no fire record, no trigger to write with them."""
        return not (
            self.once or self.fired or self.triggers or self.trigger_states or self.deleted_triggers
        )

    triggers: list[Any] = field(default_factory=list)  # whole rows: new or changed specs
    trigger_states: list[Any] = field(default_factory=list)  # counters and cursor only
    deleted_triggers: list[str] = field(default_factory=list)


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
    linger = 0.25  # seconds a lazy save waits for its commit, at most
    lingering_batch = 64  # lazy saves waiting that make a commit of their own

    def __init__(self) -> None:
        self._pending: dict[str, ExecutionRecord] = {}  # wanted soon: the next commit's
        # Lazy saves wait apart, in commits of their own (``lingering_batch`` of them, or
        # all once the oldest waited ``linger``), never in one that someone waits for: an
        # emit's commit that carried the rows of the executions before it took a fifth
        # longer at 1,000 events/s.
        self._lingering: dict[str, ExecutionRecord] = {}
        self._once: dict[str, tuple[str, str]] = {}
        self._fired: dict[str, str] = {}
        self._triggers: dict[str, TriggerRecord | None] = {}  # None: delete
        self._written_specs: dict[str, object] = {}  # trigger id -> the spec its row holds
        # Executions the store could not take: their later saves are dropped, not retried.
        self._unstorable: set[str] = set()
        # Lazy saves (see Store.save) wait, at most ``linger`` seconds: the saves of a quick
        # execution then collapse into one row.
        self._urgent = False  # something queued wants its commit now
        self._linger_until: float | None = None  # when the oldest lazy save stops waiting
        self._wake = anyio.Event()  # set by a save that is not lazy, or by a flush
        self._stirred = anyio.Event()  # set by any save: the idle writer has work
        self._stirring = False  # whether _stirred is set
        # Commits are numbered as they are taken. A flush of executions waits for the commit
        # that will hold the last one queued (the queue is taken in order, batch_limit at a
        # time), not for the queue to drain: under a steady stream of emits it seldom does,
        # and each emit waited out a commit or two more than its own.
        self._taken = 0  # commits of what is wanted soon (lazy ones are not numbered)
        self._committed = 0
        self._lazy_commit: anyio.Event | None = None  # set once the lazy commit under way ends
        self._soon_last = False  # whether the last commit was of what is wanted soon
        self._tickets: dict[int, anyio.Event] = {}  # commit number -> who waits for it
        self._pending_committed = anyio.Event()  # set by each commit that drains the queue
        self._listener: CommitListener | None = None
        self._closing = False
        self._stopped: anyio.Event | None = None
        self._accepting = False  # the writer runs: saves are taken (checked at every save)
        # Held by each group commit and by each rare direct write, so that a direct write's
        # transaction never interleaves with a commit's. Taken without a checkpoint when it
        # is free: a commit that yielded there, its batch made, waited for every task its
        # last commit woke (hundreds of emits) while the store's thread sat idle.
        self._writing = anyio.Lock(fast_acquire=True)

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
    def _trigger_id_of(self, snapshot: Any) -> str:
        """The id of the trigger a trigger snapshot (whole or state only) belongs to."""

    @abstractmethod
    async def _write(self, batch: Batch) -> set[str]:
        """Write the batch atomically; return the ids of executions refused by a once key."""

    async def start(self, task_group: TaskGroup, listener: CommitListener | None = None) -> None:
        self._listener = listener
        self._closing = False
        self._written_specs.clear()  # a reopened store may have lost its rows (":memory:")
        await self._open()
        self._stopped = anyio.Event()
        self._accepting = True
        await task_group.start(self._run_writer, name="store-writer")

    async def aclose(self) -> None:
        if self._stopped is None:
            return
        with anyio.CancelScope(shield=True):
            self._closing = True
            self._wake.set()
            self._stirred.set()
            await self._stopped.wait()
            self._stopped = None
            await self._close()

    async def insert(self, records: Sequence[ExecutionRecord]) -> None:
        for record in records:
            self.save(record)
        await self.flush()

    def _check_open(self) -> None:
        if not self._accepting:
            raise EngineClosedError("the store is not open")

    def save(self, record: ExecutionRecord, *, lazy: bool = False) -> None:
        self._check_open()
        self._queue(record, lazy)
        self._stir(lazy)

    def _queue(self, record: ExecutionRecord, lazy: bool) -> None:
        if lazy and record.id not in self._pending:
            self._lingering[record.id] = record
        else:  # wanted soon, or queued already for a commit that is: it goes with that one
            if self._lingering:
                self._lingering.pop(record.id, None)
            self._pending[record.id] = record

    def _stir(self, lazy: bool) -> None:
        # Called for every save: the events are set only when they are not set already.
        if not lazy:
            if not self._urgent:
                self._urgent = True
                self._wake.set()
        else:
            if self._linger_until is None:
                self._linger_until = time.monotonic() + self.linger
            if len(self._lingering) == self.lingering_batch:
                self._wake.set()  # enough for a commit of their own
        if not self._stirring:
            self._stirring = True
            self._stirred.set()

    def queued(self, execution_id: str) -> bool:
        return execution_id in self._pending or execution_id in self._lingering

    def create(
        self, record: ExecutionRecord, once: tuple[str, str] | None = None, *, lazy: bool = False
    ) -> None:
        self._check_open()
        self._queue_new(record, once, lazy)
        self._stir(lazy)

    def create_all(
        self, created: Iterable[tuple[ExecutionRecord, tuple[str, str] | None]], *, lazy: bool
    ) -> None:
        self._check_open()
        for record, once in created:
            self._queue_new(record, once, lazy)
        self._stir(lazy)

    def _queue_new(self, record: ExecutionRecord, once: tuple[str, str] | None, lazy: bool) -> None:
        self._queue(record, lazy)
        if once is not None:
            self._once[record.id] = once
        if record.trigger_id is not None:
            self._fired[record.id] = record.trigger_id

    def save_trigger(self, trigger: TriggerRecord, *, lazy: bool = False) -> None:
        self._check_open()
        self._triggers[trigger.id] = trigger
        self._stir(lazy)

    def save_triggers(self, triggers: Iterable[TriggerRecord], *, lazy: bool) -> None:
        self._check_open()
        self._triggers.update((trigger.id, trigger) for trigger in triggers)
        self._stir(lazy)

    def delete_trigger(self, trigger_id: str) -> None:
        self._check_open()
        self._triggers[trigger_id] = None
        self._stir(False)

    async def _exclusive(self, work: Callable[[], Awaitable[T]]) -> T:
        """Run ``work`` (a direct write) between two group commits."""
        self._check_open()
        async with self._writing:
            with anyio.CancelScope(shield=True):  # begun, a transaction is finished
                result = await work()
        return result

    def _has_pending(self) -> bool:
        return bool(self._pending or self._lingering or self._triggers)

    def _lingering_due(self) -> bool:
        """Whether the lazy saves waiting go in the next commit (after what is wanted
        soon): enough of them, the oldest has waited ``linger``, the store closes, or
        trigger rows want a commit (they ride only with one that drains the queue)."""
        if not self._lingering:
            return False
        if len(self._lingering) >= self.lingering_batch or self._closing:
            return True
        if self._triggers and self._urgent:
            return True
        return self._linger_until is None or time.monotonic() >= self._linger_until

    async def flush(self, *, lazy: bool = True) -> None:
        lazy_in_flight = self._lazy_commit if lazy else None
        if lazy and self._lingering:  # wanted now: it goes with what is wanted soon
            self._pending.update(self._lingering)
            self._lingering = {}
        everything = lazy and self._triggers
        if (self._pending or everything) and not self._urgent:
            self._urgent = True
            self._wake.set()
        if everything:  # trigger rows ride only with a commit that drains the queue
            await self._pending_committed.wait()
            return
        if self._pending:
            ticket = self._taken - (-len(self._pending) // self.batch_limit)
        elif self._taken > self._committed:
            ticket = self._taken  # the commit in flight
        else:
            return
        if self._committed < ticket:
            event = self._tickets.get(ticket)
            if event is None:
                event = self._tickets[ticket] = anyio.Event()
            await event.wait()
        if lazy_in_flight is not None:  # it holds lazy saves made before the call
            await lazy_in_flight.wait()

    def _reached(self, number: int) -> None:
        self._committed = number
        if self._tickets:
            for ticket in [t for t in self._tickets if t <= number]:
                self._tickets.pop(ticket).set()

    async def _run_writer(self, *, task_status: TaskStatus[None]) -> None:
        assert self._stopped is not None
        task_status.started()
        try:
            while self._has_pending() or not self._closing:
                if not self._has_pending():
                    await self._stirred.wait()
                    self._stirred, self._stirring = anyio.Event(), False
                    continue
                if not (self._urgent or self._closing or self._lingering_due()):
                    deadline = self._linger_until or 0.0  # lazy saves only: let them linger
                    with anyio.move_on_after(deadline - time.monotonic()):
                        await self._wake.wait()
                self._wake = anyio.Event()
                source = self._next_source()
                if source is not None:  # else woken early: what lingers is not due yet
                    await self._commit_pending(source)
        finally:
            self._accepting = False
            self._stopped.set()

    def _next_source(self) -> dict[str, ExecutionRecord] | None:
        """What the next commit takes from: the saves wanted soon, or the lazy ones once due
        (every other commit while both wait: under a steady stream of emits the lazy ones
        must not pile up), an empty queue for trigger rows alone, or None: nothing is due."""
        due = self._lingering_due()
        if self._pending and not (due and self._soon_last):
            return self._pending
        if due:
            return self._lingering
        if self._triggers and not self._lingering:
            return {}
        return None

    def _take_pending(
        self, source: dict[str, ExecutionRecord]
    ) -> tuple[list[ExecutionRecord], dict[str, tuple[str, str]], dict[str, str], bool, bool]:
        """The executions of ``source`` (with their once keys and the triggers that fired
        them) for the next commit, at most ``batch_limit``; whether they are the ones wanted
        soon; and whether that drains the queue."""
        soon = self._soon_last = source is not self._lingering
        other = self._lingering if source is self._pending else self._pending
        if len(source) <= self.batch_limit:
            records = list(source.values())
            source.clear()
        else:
            records = list(itertools.islice(source.values(), self.batch_limit))
            for record in records:
                del source[record.id]
        if not source and not other:  # all that waits is in this one
            once, fired = self._once, self._fired
            self._once, self._fired = {}, {}
        else:
            once, fired = {}, {}
            for record in records:
                key = self._once.pop(record.id, None)
                if key is not None:
                    once[record.id] = key
                trigger_id = self._fired.pop(record.id, None)
                if trigger_id is not None:
                    fired[record.id] = trigger_id
        if not self._pending:
            self._urgent = False
        if not self._lingering:
            self._linger_until = None
        return records, once, fired, soon, not (self._pending or self._lingering)

    async def _commit_pending(self, source: dict[str, ExecutionRecord]) -> None:
        records, once, fired, soon, drained = self._take_pending(source)
        number: int | None = None
        if soon:  # numbered: flushes wait for their number
            self._taken += 1
            number = self._taken
        else:
            lazy_done = self._lazy_commit = anyio.Event()
        if self._unstorable:
            records = [r for r in records if r.id not in self._unstorable]
        if drained:
            # Trigger rows ride with the commit that empties the queue, never before the
            # executions queued with them: a cron cursor must not be stored ahead of its
            # firings (a firing stored twice is refused by its fire record; one never
            # stored would be lost).
            triggers, self._triggers = self._triggers, {}
            drains: anyio.Event | None = self._pending_committed
            self._pending_committed = anyio.Event()
        else:
            triggers, drains = {}, None
        failed: dict[str, str] = {}
        try:
            executions = [(r.id, self._snapshot(r)) for r in records]
            batch = Batch(executions=executions, once=once, fired=fired)
            self._add_triggers(batch, triggers)
        except Exception:  # one record's snapshot fails: find it, commit the others
            for trigger_id in triggers:  # the failed try may have marked specs as written
                self._written_specs.pop(trigger_id, None)
            batch = self._snapshot_apart(records, once, triggers, failed)
            batch.fired = {i: t for i, t in fired.items() if i not in failed}
        statuses = [(r.id, r.status) for r in records]
        # A commit that has begun finishes even when the engine is being cancelled.
        with anyio.CancelScope(shield=True):
            async with self._writing:
                try:
                    refused = await self._write(batch)
                except Exception:
                    refused = await self._write_apart(batch, failed)
        if number is not None:
            self._reached(number)
        else:
            self._lazy_commit = None
            lazy_done.set()
        if drains is not None:
            drains.set()
        if failed:
            self._unstorable.update(i for i in failed if not i.startswith("trg-"))
        if self._listener is not None:
            lost = refused | failed.keys() if failed else refused
            written = [s for s in statuses if s[0] not in lost] if lost else statuses
            self._listener(written, refused, failed)

    def _snapshot_apart(
        self,
        records: list[ExecutionRecord],
        once: dict[str, tuple[str, str]],
        triggers: dict[str, TriggerRecord | None],
        failed: dict[str, str],
    ) -> Batch:
        """The batch of what can be snapshotted, each record on its own; the others go to
        ``failed`` with why (a value no row can hold, such as JSON too deep to write)."""
        batch = Batch()
        for record in records:
            try:
                batch.executions.append((record.id, self._snapshot(record)))
            except Exception as exc:
                failed[record.id] = _why(exc)
                continue
            if record.id in once:
                batch.once[record.id] = once[record.id]
        for trigger_id, trigger in triggers.items():
            try:
                self._add_triggers(batch, {trigger_id: trigger})
            except Exception as exc:
                failed[trigger_id] = _why(exc)
        return batch

    async def _write_apart(self, batch: Batch, failed: dict[str, str]) -> set[str]:
        """A batch whose write failed, written again one execution or trigger at a time, so
        one that the store cannot take fails alone (into ``failed``) and never the writer;
        the refused executions of those written."""
        refused: set[str] = set()
        pieces: list[tuple[str, Batch]] = []
        for execution_id, row in batch.executions:
            key = batch.once.get(execution_id)
            once = {execution_id: key} if key is not None else {}
            trigger_id = batch.fired.get(execution_id)
            fired = {execution_id: trigger_id} if trigger_id is not None else {}
            piece = Batch(executions=[(execution_id, row)], once=once, fired=fired)
            pieces.append((execution_id, piece))
        for row in batch.triggers:
            pieces.append((self._trigger_id_of(row), Batch(triggers=[row])))
        for row in batch.trigger_states:
            pieces.append((self._trigger_id_of(row), Batch(trigger_states=[row])))
        for trigger_id in batch.deleted_triggers:
            pieces.append((trigger_id, Batch(deleted_triggers=[trigger_id])))
        for item_id, piece in pieces:
            try:
                refused |= await self._write(piece)
            except Exception as exc:
                failed[item_id] = _why(exc)
                self._written_specs.pop(item_id, None)
        for item_id, why in failed.items():
            logger.error("store_write_refused", id=item_id, error=why)
        return refused

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
