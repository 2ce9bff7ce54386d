"""Triggers: their records, the events that fire them and the cron times that do.

An event trigger fires through the ``EventBus`` when an event matches it: its execution is
created in the same group commit as whatever caused the event, and queued once committed (its
once key may refuse it). A cron trigger fires through the ``CronClock``: each firing is built
ahead of its time (staged) and handed to its pool the moment its time comes, ahead of its
commit (see ``_hand_over``). Times a stopped engine missed are planned by the trigger's misfire
policy at start. Executions' own status changes are events too (resource ``Execution``, action
``statusChanged``), heard from the lifecycle while a trigger listens for them.

Everything here creates executions through the lifecycle and learns of the registry only what
``Functions`` tells.
"""

from __future__ import annotations

import dataclasses
import gc
import pickle
import secrets
import time
from collections import deque
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from anyio.abc import TaskGroup, TaskStatus

from .. import _json
from ..errors import ConfigurationError, StoreUnavailableError, TriggerNotFoundError
from ..log import logger
from ..models import (
    CronTriggerSpec,
    EventTriggerSpec,
    ExecutionRecord,
    ExecutionStatus,
    FunctionSpec,
    TriggerRecord,
    TriggerSpec,
    claim_execution_ids,
    execution_ids_from,
    new_execution_id,
    new_execution_ids,
)
from ..triggers.cron import CronSchedule, missed_times, plan_misfires
from ..triggers.definitions import validate_spec
from .bus import EventBus
from .clock import CronClock
from .events import CronMissed, EventHub, ExecutionStatusChanged, TriggerFired, TriggerSuppressed
from .lifecycle import Functions, Lifecycle, Live, fired, stamp
from .replica.views import JSON, REPR
from .told import Told

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: How many of the fire times a cron trigger missed are looked at one by one (older ones are
#: only counted as missed).
MISFIRE_LIMIT = 10_000
#: The largest result view an Execution statusChanged event carries as its result.
EVENT_RESULT_LIMIT = 64 * 1024


class CronFiring(NamedTuple):
    """A cron firing built ahead of its time, waiting to be created."""

    trigger: TriggerRecord
    record: ExecutionRecord | None  # None: its function is not registered or is paused
    once: tuple[str, str]
    message: str
    id_ns: int  # the time in its id, made ahead (see claim_execution_ids)


def _fired_by(trigger: TriggerRecord) -> str:
    return f"fired by trigger {trigger.spec.name!r}"


def _pickled_input(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bytes:
    return pickle.dumps((args, dict(kwargs)), protocol=pickle.HIGHEST_PROTOCOL)


def status_summary(record: ExecutionRecord) -> dict[str, Any]:
    """An execution as the body of its statusChanged event."""
    body: dict[str, Any] = {
        "id": record.id,
        "function": record.function,
        "service": record.service,
        "status": record.status.value,
        "attempts": record.attempts,
        "parent_id": record.parent_id,
        "trigger_id": record.trigger_id,
        "error": None,
        "result": None,
    }
    if record.error is not None:
        body["error"] = {"type": record.error[0], "message": record.error[1]}
    if record.status is ExecutionStatus.SUCCEEDED and record.result_view is not None:
        # The result as its replica showed it in JSON, never unpickled here; one too
        # large for an event (or with no JSON form) is left out, and its kind says so.
        kind, text = record.result_view
        body["result_encoding"] = kind
        if kind == JSON and len(text) <= EVENT_RESULT_LIMIT:
            try:  # read as input from outside: a replica's text could be anything
                body["result"] = _json.parse(text, "result")
            except ValueError:  # not the JSON its replica claimed
                body["result_encoding"] = REPR
    return body


class Triggering:
    """The triggers of one engine, and every firing."""

    def __init__(
        self, lifecycle: Lifecycle, hub: EventHub, functions: Functions, max_lineage_depth: int
    ) -> None:
        self._lifecycle = lifecycle
        self._hub = hub
        self._functions = functions
        self.records: dict[str, TriggerRecord] = {}
        self._ids: dict[str, str] = {}  # name -> id: names are unique, looked up often
        self.bus: EventBus[Live] = EventBus(
            self._create_triggered, self._suppress, max_lineage_depth
        )
        self.clock: CronClock[CronFiring] = CronClock(self._stage, self._hand_over)
        # The cron time being staged, as text, and the id time of its next firing.
        self._staging: tuple[datetime | None, str, int] = (None, "", 0)
        self._cron_inputs: dict[str, tuple[object, bytes]] = {}  # id -> (spec, pickled input)
        self.cron_lateness: deque[float] = deque(maxlen=100_000)
        self.running = False  # set by the engine once it takes work
        self.leading = False  # this engine runs the cron clock (see lead_changed)
        self._stop_hearing_statuses: Any = None
        self._changed = Told()  # triggers other engines changed, to read again
        self._changing: dict[str, int] = {}  # triggers this engine is storing a change of

    # -- starting -------------------------------------------------------------------------

    async def start(self, task_group: TaskGroup) -> None:
        """Load the stored triggers and start the cron clock; event triggers match from now
        (recovery's status changes are events too). Cron triggers wait for the lead of the
        clock (``lead_changed``)."""
        await task_group.start(self.clock.run, name="cron-clock")
        for trigger in await self._lifecycle.store.list_triggers():
            self._add(trigger)
        self._hear_statuses()

    async def lead_changed(self, leading: bool) -> None:
        """This engine now runs the cron clock (among the engines on its store, one does),
        or no longer does. Taking the lead, it reads the cron triggers' cursors as stored
        and runs what they missed by their policy (for a gap between two leaders too);
        giving it up, it unschedules them."""
        if not leading:
            self.leading = False
            for trigger in self.records.values():
                if isinstance(trigger.spec, CronTriggerSpec):
                    self.clock.unschedule(trigger.id)
            return
        store = self._lifecycle.store
        now = time.time()
        crons = []
        for fresh in await store.list_triggers():
            if fresh.id in self._changing:  # this engine's own change is on its way
                if fresh.id in self.records:  # (not a deletion)
                    crons.append(self.records[fresh.id])
            elif isinstance(fresh.spec, CronTriggerSpec):
                crons.append(self._refreshed(fresh))  # its cursor, as stored
            elif fresh.id not in self.records:  # other changes are heard on their channel
                self._add(fresh)
        self._hear_statuses()
        crons = [t for t in crons if isinstance(t.spec, CronTriggerSpec)]
        # The times since each cursor that were fired, by an engine that stopped (or lost
        # the lead) before it stored the cursor past them: neither run again nor missed.
        keys = {(t.id, when.isoformat()) for t in crons for when in self._since_cursor(t, now)}
        fired = await store.fired_keys(keys) if keys else set()
        self.leading = True
        for trigger in crons:
            done = {datetime.fromisoformat(key) for tid, key in fired if tid == trigger.id}
            self._arm(trigger, now, recovering=True, fired=done)

    @staticmethod
    def _since_cursor(trigger: TriggerRecord, now: float) -> list[datetime]:
        """The fire times of an active cron trigger after its cursor, up to ``now``."""
        spec = trigger.spec
        if not isinstance(spec, CronTriggerSpec) or not spec.active:
            return []
        if trigger.cursor is None or trigger.cursor >= now:
            return []
        schedule = CronSchedule.parse(spec.cron, spec.timezone, spec.start_at, spec.end_at)
        cursor = datetime.fromtimestamp(trigger.cursor, UTC)
        return missed_times(schedule, cursor, datetime.fromtimestamp(now, UTC), MISFIRE_LIMIT).times

    def stop(self) -> None:
        self.running = False

    def _add(self, trigger: TriggerRecord) -> None:
        self.records[trigger.id] = trigger
        self._ids[trigger.spec.name] = trigger.id
        if isinstance(trigger.spec, EventTriggerSpec):
            self.bus.watch(trigger)

    def _refreshed(self, fresh: TriggerRecord) -> TriggerRecord:
        """A trigger as stored: the record this engine keeps, brought up to it."""
        trigger = self.records.get(fresh.id)
        if trigger is None:
            self._add(fresh)
            return fresh
        if trigger.spec.name != fresh.spec.name:
            self._ids.pop(trigger.spec.name, None)
            self._ids[fresh.spec.name] = fresh.id
        for field in dataclasses.fields(TriggerRecord):
            setattr(trigger, field.name, getattr(fresh, field.name))
        return trigger

    async def refresh_counts(self) -> None:
        """On a shared store, the triggers' counts as stored: ``fired`` summed over every
        engine; ``suppressed`` and ``missed`` as the engine that wrote last counted them
        (the cron clock's leader alone counts a cron trigger's). Read before they are shown."""
        store = self._lifecycle.store
        if not store.shared:
            return
        await store.flush()  # this engine's counts so far are in what is read
        for fresh in await store.trigger_counts():
            trigger = self.records.get(fresh.id)
            if trigger is None or trigger.spec != fresh.spec:
                continue  # a change on its way, here or from elsewhere: counted next time
            trigger.fired, trigger.suppressed, trigger.missed = (
                fresh.fired,
                fresh.suppressed,
                fresh.missed,
            )
            trigger.last_suppressed_at = fresh.last_suppressed_at
            trigger.last_suppressed_reason = fresh.last_suppressed_reason
            trigger.last_missed_at = fresh.last_missed_at

    # -- what other engines changed -------------------------------------------------------

    def changed_elsewhere(self, trigger_ids: Sequence[str] | None) -> None:
        """Heard (``Channel.TRIGGERS``): other engines created, changed or deleted these
        triggers (None: some may have gone unheard)."""
        self._changed.add(trigger_ids)

    async def hear_changes(self, *, task_status: TaskStatus[None]) -> None:
        """Read the triggers other engines changed, and make each change take effect here as
        it did there (a store out of reach: read at the next word)."""
        task_status.started()
        while True:
            changed = await self._changed.take()
            store = self._lifecycle.store
            try:
                if changed is None:
                    fresh = await store.list_triggers()
                    looked_at: Collection[str] = set(self.records) | {t.id for t in fresh}
                else:
                    fresh = await store.get_triggers(changed)
                    looked_at = changed
            except StoreUnavailableError as exc:
                logger.warning("trigger_changes_unread", error=str(exc))
                continue
            self._apply(looked_at, fresh)

    def _apply(self, looked_at: Collection[str], fresh: list[TriggerRecord]) -> None:
        now = time.time()
        found = {trigger.id: trigger for trigger in fresh}
        for trigger_id in looked_at:
            if trigger_id in self._changing:
                continue  # this engine's own change is on its way: newer than what was read
            if trigger_id not in found and trigger_id in self.records:
                self._forget(self.records[trigger_id])
                logger.info("trigger_deleted_elsewhere", trigger_id=trigger_id)
        for trigger in fresh:
            mine = self.records.get(trigger.id)
            if trigger.id in self._changing or (mine is not None and mine.spec == trigger.spec):
                continue  # its state moved on (counts, cursor): not a change to act on
            logger.info("trigger_changed_elsewhere", trigger_id=trigger.id)
            self._arm(self._refreshed(trigger), now)

    # -- reading and changing triggers ----------------------------------------------------

    def named(self, name: str) -> TriggerRecord | None:
        trigger_id = self._ids.get(name)
        return None if trigger_id is None else self.records[trigger_id]

    def find(self, trigger: str) -> TriggerRecord:
        """A trigger by id or by name."""
        found = self.records.get(trigger) or self.named(trigger)
        if found is None:
            raise TriggerNotFoundError(f"no trigger has the id or name {trigger!r}")
        return found

    async def put(self, spec: TriggerSpec, trigger_id: str | None = None) -> TriggerRecord:
        """Create a trigger, or replace the spec of ``trigger_id``; stored before returning."""
        self._lifecycle.check_open()
        validate_spec(spec)
        self._functions.spec_of(spec.function)
        clash = self.named(spec.name)
        if clash is not None and clash.id != trigger_id:
            raise ConfigurationError(f"a trigger named {spec.name!r} exists already ({clash.id})")
        now = time.time()
        if trigger_id is None:
            trigger = TriggerRecord(id=f"trg-{secrets.token_hex(6)}", spec=spec, created_at=now)
        else:
            trigger = self.find(trigger_id)
            if type(trigger.spec) is not type(spec):
                raise ConfigurationError("an event trigger cannot become a cron trigger, or back")
            del self._ids[trigger.spec.name]  # added again below: a rename frees it
            trigger.spec = spec
        self.records[trigger.id] = trigger
        self._ids[spec.name] = trigger.id
        self._arm(trigger, now)
        store = self._lifecycle.store
        store.save_trigger(trigger)
        await self._stored(trigger.id)
        logger.info("trigger_saved", trigger_id=trigger.id, trigger=spec.name, active=spec.active)
        return trigger

    async def delete(self, trigger: str) -> None:
        self._lifecycle.check_open()
        found = self.find(trigger)
        self._forget(found)
        store = self._lifecycle.store
        store.delete_trigger(found.id)
        await self._stored(found.id)
        logger.info("trigger_deleted", trigger_id=found.id, trigger=found.spec.name)

    async def _stored(self, trigger_id: str) -> None:
        """Wait until this engine's change of a trigger is committed; meanwhile, what is read
        of it from the store is older than what this engine holds, and left alone."""
        self._changing[trigger_id] = self._changing.get(trigger_id, 0) + 1
        try:
            await self._lifecycle.store.flush()
        finally:
            left = self._changing.pop(trigger_id) - 1
            if left:
                self._changing[trigger_id] = left

    def _forget(self, trigger: TriggerRecord) -> None:
        """A deleted trigger takes effect no more."""
        self.records.pop(trigger.id, None)
        if self._ids.get(trigger.spec.name) == trigger.id:
            del self._ids[trigger.spec.name]
        self.bus.forget(trigger.id)
        self._hear_statuses()
        self.clock.unschedule(trigger.id)
        self._cron_inputs.pop(trigger.id, None)

    def _arm(
        self,
        trigger: TriggerRecord,
        now: float,
        *,
        recovering: bool = False,
        fired: Collection[datetime] = (),
    ) -> None:
        """Make a trigger take effect (or stop, if inactive). A cron trigger is scheduled by
        the engine that leads the cron clock alone; ``recovering``, it runs the times since
        its cursor by its misfire policy, but those ``fired`` already."""
        spec = trigger.spec
        if isinstance(spec, EventTriggerSpec):
            self.bus.watch(trigger)
            self._hear_statuses()
            return
        if not spec.active or not self.leading:
            self.clock.unschedule(trigger.id)
            return
        schedule = CronSchedule.parse(spec.cron, spec.timezone, spec.start_at, spec.end_at)
        now_dt = datetime.fromtimestamp(now, UTC)
        if recovering and trigger.cursor is not None and trigger.cursor < now:
            cursor = datetime.fromtimestamp(trigger.cursor, UTC)
            plan = plan_misfires(
                schedule, spec.misfire, spec.misfire_grace, cursor, now_dt, MISFIRE_LIMIT, fired
            )
            for when in plan.run:
                firing = self._stage(trigger.id, when)
                if firing is not None:
                    self._hand_over([firing], when, recovered=True)
            missed = len(plan.missed) + plan.missed_beyond
            if missed:
                trigger.missed += missed
                trigger.last_missed_at = (plan.missed or plan.run)[-1].timestamp()
                logger.warning(
                    "cron_missed",
                    trigger_id=trigger.id,
                    trigger=spec.name,
                    missed=missed,
                    policy=spec.misfire,
                    ran=len(plan.run),
                )
                if self._hub.wants(CronMissed):
                    self._hub.publish(
                        CronMissed(
                            at=now,
                            trigger_id=trigger.id,
                            trigger=spec.name,
                            missed=missed,
                            policy=spec.misfire,
                        )
                    )
        trigger.cursor = now
        self._lifecycle.store.save_trigger(trigger)
        self.clock.schedule(trigger.id, schedule, now_dt)

    # -- events ---------------------------------------------------------------------------

    async def emit(
        self,
        resource: str,
        action: str,
        body: Any = None,
        resource_id: str | None = None,
        lineage: tuple[str, ...] = (),
    ) -> list[str]:
        """Publish an event; returns the ids of the executions it caused, once committed."""
        self._lifecycle.check_open()
        for name, value in (("resource", resource), ("action", action)):
            if not isinstance(value, str) or not value:
                raise ConfigurationError(f"{name} must be a non-empty string, got {value!r}")
            _json.check(value, name)
        _json.check(body, "body")
        if resource_id is None and isinstance(body, dict) and body.get("id") is not None:
            resource_id = str(body["id"])
        if resource_id is not None:
            _json.check(resource_id, "resource_id")
        created = self.bus.publish(resource, action, body, resource_id, lineage)
        if not created:
            return []
        await self._lifecycle.store.flush(lazy=False)  # the creations, not what waits apart
        self._lifecycle.raise_unstored(created)
        return [live.record.id for live in created if live.fate is None]

    def _hear_statuses(self) -> None:
        """Listen to executions' status changes exactly while a trigger listens for them, so
        that without one they cost nothing."""
        wanted = self.bus.listens_to("Execution", "statusChanged")
        if wanted and self._stop_hearing_statuses is None:
            self._stop_hearing_statuses = self._hub.listen(
                ExecutionStatusChanged, self._status_changed
            )
        elif not wanted and self._stop_hearing_statuses is not None:
            self._stop_hearing_statuses()
            self._stop_hearing_statuses = None

    def _status_changed(self, event: ExecutionStatusChanged) -> None:
        if event.status == event.previous:  # progress, not a change of status
            return
        live = self._lifecycle.live.get(event.execution_id)
        if live is None:
            live = self._lifecycle.placed.get(event.execution_id)
        if live is not None:
            record = live.record
            summary = status_summary(record)
            self.bus.publish("Execution", "statusChanged", summary, record.id, record.lineage)

    def _create_triggered(
        self,
        trigger: TriggerRecord,
        body: Any,
        lineage: tuple[str, ...],
        event: dict[str, Any],
        once: tuple[str, str] | None,
    ) -> Live | None:
        now = time.time()
        record = self._triggered_record(trigger, body, lineage, event)
        if record is None:
            self._not_fired(trigger, now)
            return None
        record.id = new_execution_id()
        stamp(record, _fired_by(trigger), now)
        live = self._lifecycle.adopt(record, born=True)
        self._lifecycle.store.create(record, once)
        return live

    def _function(self, trigger: TriggerRecord) -> FunctionSpec | None:
        return self._functions.spec_for(trigger.spec.function)

    def _triggered_record(
        self, trigger: TriggerRecord, body: Any, lineage: tuple[str, ...], event: dict[str, Any]
    ) -> ExecutionRecord | None:
        """A firing's record, not created yet (no id, no time); None if its function is not
        registered or its service is paused (see _not_fired)."""
        spec = self._function(trigger)
        if spec is None or self._functions.paused(spec.service):
            return None
        if isinstance(trigger.spec, EventTriggerSpec):
            payload = _pickled_input((body,), trigger.spec.input)
        else:  # a cron firing's input is the same every time: pickled once per spec
            cached = self._cron_inputs.get(trigger.id)
            if cached is None or cached[0] is not trigger.spec:
                cached = (trigger.spec, _pickled_input((), trigger.spec.input))
                self._cron_inputs[trigger.id] = cached
            payload = cached[1]
        return ExecutionRecord(
            id="",
            function=spec.name,
            service=spec.service,
            input=payload,
            max_attempts=spec.max_attempts,
            created_at=0.0,
            trigger_id=trigger.id,
            event=event,
            lineage=lineage,
        )

    def _not_fired(self, trigger: TriggerRecord, now: float) -> None:
        """Record why a matching event or a due cron time created no execution."""
        function = trigger.spec.function
        spec = self._function(trigger)
        if spec is None:
            reason = f"function {function!r} is not registered"
            logger.error("trigger_function_missing", trigger_id=trigger.id, function=function)
        else:
            reason = f"service {spec.service!r} is paused"
            logger.info("trigger_service_paused", trigger_id=trigger.id, service=spec.service)
        self._suppress(trigger, reason, now)

    def _suppress(self, trigger: TriggerRecord, reason: str, now: float) -> None:
        trigger.suppressed += 1
        trigger.last_suppressed_reason = reason
        trigger.last_suppressed_at = now
        self._lifecycle.store.save_trigger(trigger)
        if self._hub.wants(TriggerSuppressed):
            self._hub.publish(
                TriggerSuppressed(
                    at=now, trigger_id=trigger.id, trigger=trigger.spec.name, reason=reason
                )
            )

    def count_fired(self, trigger_id: str) -> None:
        """A triggered execution's creation was committed: one more firing (the store
        counted it in the same transaction). The lifecycle's ``Firings``."""
        trigger = self.records.get(trigger_id)
        if trigger is not None:
            trigger.fired += 1

    # -- cron -----------------------------------------------------------------------------

    def _stage(self, trigger_id: str, when: datetime) -> CronFiring | None:
        """Build a cron firing ahead of its time (see CronClock); creates nothing."""
        trigger = self.records.get(trigger_id)
        if trigger is None:
            return None
        staging, scheduled, id_ns = self._staging
        if staging != when:  # thousands of firings share a time: format it once
            scheduled, id_ns = when.isoformat(), (when - EPOCH) // timedelta(microseconds=1) * 1000
        self._staging = (when, scheduled, id_ns + 1)
        event = {"resource": "Cron", "action": "tick", "scheduled": scheduled}
        record = self._triggered_record(trigger, None, (trigger.id,), event)
        if record is not None:
            (record.id,) = execution_ids_from(id_ns, 1)
        return CronFiring(trigger, record, (trigger.id, scheduled), _fired_by(trigger), id_ns)

    def _hand_over(
        self, firings: list[CronFiring], when: datetime, *, recovered: bool = False
    ) -> None:
        """Create staged cron firings, now that ``when`` has come: each is timed on its own,
        in a loop kept to what creating one needs.

        A firing of the clock goes to its pool at once, ahead of its commit: the clock only
        fires times after the engine started, so no fire record can refuse it, and a crash
        before the commit leaves the trigger's cursor before the time (it rides with a later
        commit), so the restart fires it again under the trigger's misfire policy. A firing
        made on ``recovered`` start waits for its commit like an event's: its time may have
        fired before the crash, and its fire record then refuses it."""
        if not (self.running or recovered) or not firings:
            return
        due = when.timestamp()
        # Staged in order, so their ids run from the first to the last.
        if not claim_execution_ids(firings[0].id_ns, firings[-1].id_ns):
            for firing, execution_id in zip(firings, new_execution_ids(len(firings)), strict=True):
                if firing.record is not None:
                    firing.record.id = execution_id
        clock, lateness, paused = time.time, self.cron_lateness.append, self._functions.paused
        created: list[tuple[TriggerRecord, ExecutionRecord, tuple[str, str]]] = []
        collecting = gc.isenabled()
        gc.disable()  # a full collection of a large heap would stall the firings behind it
        try:
            for firing in firings:
                record, now = firing.record, clock()
                if record is None or paused(record.service):
                    self._not_fired(firing.trigger, now)
                    continue
                stamp(record, firing.message, now)
                lateness(now - due)
                created.append((firing.trigger, record, firing.once))
        finally:
            if collecting:
                gc.enable()
        # Queued, adopted and stored after the loop, each for all at once (no await in
        # between, so no pool has run yet, and the first firing is dispatched no later), so
        # that the pools wake before the store's writer does: a commit's snapshots must not
        # stand between a firing and its dispatch. Counted here, where it is dispatched (a
        # recovered one once committed, by count_fired).
        lifecycle, store = self._lifecycle, self._lifecycle.store
        records = [record for _, record, _ in created]
        # On a shared store, a firing waits for its commit as a recovered one does: should
        # another engine have fired the same time (two leaders for a moment, one of them cut
        # off), its fire record refuses one of them before it runs.
        born = recovered or store.shared
        kept = lifecycle.adopt_all(records, born=born)  # on a shared store, maybe not all
        for record in lifecycle.dispatch.enqueue_all(kept):
            lifecycle.not_queued(record)
        # Not recovered, a firing's row and its trigger's cursor linger (see Store.save): a
        # quick job's row is then written once, created, run and finished.
        lazy = not born
        store.create_all(((record, once) for _, record, once in created), lazy=lazy)
        if not born:
            tell = self._hub.wants(TriggerFired)
            for trigger, record, _ in created:
                trigger.fired += 1
                if tell:
                    self._hub.publish(fired(record, trigger.id))
        for firing in firings:
            firing.trigger.cursor = due
        store.save_triggers((firing.trigger for firing in firings), lazy=lazy)
