"""The Store contract: where executions are kept durably.

One engine writes a store's executions, or, on a shared one (PostgreSQL), each of several
engines writes those it owns. Writes go through a single writer that commits in groups: every
``save`` of the same execution before the next commit collapses into one row write, and whatever
queued while a commit was running goes into the next one. Readers may see a state a few
milliseconds older than the engine's live one, never a newer one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

import anyio
from anyio.abc import TaskGroup, TaskStatus

from ..models import (
    UNFINISHED_STATUSES,
    Deployment,
    ExecutionQuery,
    ExecutionRecord,
    ExecutionStatus,
    PackageDefinition,
    PackageRevision,
    ServiceDefinition,
    TriggerRecord,
)

__all__ = ["Adopted", "Channel", "CommitListener", "Heard", "LeadChanged", "Store"]

#: The query that selects every execution.
ALL = ExecutionQuery()

#: Told, after each commit, the (id, status) of every execution that commit wrote; the ids of
#: the new executions it refused because their once key had fired before; and the executions
#: (and triggers) it could not write at all, by id, with why.
CommitListener = Callable[
    [Sequence[tuple[str, ExecutionStatus]], Collection[str], Mapping[str, str]], None
]
#: Told what other engines on a shared store said on a channel (see ``Store.hear``); None:
#: some may have gone unheard (the store was cut off), so look at everything again.
Heard = Callable[[Sequence[str] | None], None]
#: Told when this engine starts (True) or stops (False) leading the cron clock.
LeadChanged = Callable[[bool], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Adopted:
    """What ``Store.take_unfinished`` took: executions, and the engines that left them."""

    executions: list[ExecutionRecord]
    #: The engines that are gone whose work was taken (on a store of one engine: none).
    engines: tuple[str, ...] = ()


class Channel:
    """What engines on one store tell each other, by channel (see ``Store.hear``)."""

    #: Ids of executions whose final status a commit wrote (told with that commit).
    FINISHED = "finished"
    #: Functions of which a commit put executions in the shared queue (told with it).
    WORK = "work"
    #: Ids of triggers a commit created, changed or deleted (told with it).
    TRIGGERS = "triggers"
    #: Names of deployed services that were deployed, paused or resumed (told with it).
    SERVICES = "services"
    #: ``<engine id> <execution id>``: the owner is asked to cancel one it holds.
    CANCEL = "cancel"
    #: Engine events as JSON, for the subscribers of the engines that watch (see WATCHING).
    EVENTS = "events"
    #: An engine began or stopped watching other engines' events.
    WATCHING = "watching"
    #: An engine joined, left, or changed the functions it runs (its handlers hear None,
    #: once the store knows what runs elsewhere: see ``Store.runs_elsewhere``).
    ENGINES = "engines"


class Store(ABC):
    """Durable home of execution records.

    Duties of every implementation:

    * ``start`` opens (and migrates) the store and starts its writer in the given task group;
      ``aclose`` commits everything queued and releases the store. Neither loses a queued write.
    * ``insert`` returns only once every record it was given is committed.
    * ``save`` never blocks: it queues the record's current state for the next group commit.
      The state written is the record as it is when the commit is prepared, so the latest
      change always wins and a record is written at most once per commit.
    * ``create`` with a once key writes the key's fire record and the execution in one
      transaction, and refuses the execution (tells the listener) if the key fired before,
      also within the same commit and across restarts.
    * Trigger records are saved and deleted through the same writer, in the same commits.
    * The commit listener is called after each commit, in commit order, with what was written.
    * A record or trigger the store cannot write (a value no row holds) fails alone: the rest
      of its commit is written, the listener is told of it with why, and later saves of that
      execution are dropped. The writer itself never fails of what it was given.
    * Reads return copies: changing a returned record never changes the store.
    * A ``function`` filter names a function; the executions of its pinned revisions
      (``name@1``, ``name@2``... the functions of a deployed service) count as its own, while
      ``name@2`` selects that revision only.
    * Packages, their revisions and the versions of deployed services are rare writes: each
      such method writes in a transaction of its own, between two group commits (never inside
      one), and returns once it is committed. Revision and version numbers are given by the
      store, 1 for the first and one more than the last after that, so two concurrent writers
      never get the same number.
    """

    #: The id the store gives the engine on it, where the store names its engines itself (a
    #: shared database's row of this engine); None: the engine chooses one.
    engine_id: str | None = None
    #: Whether other engines write this store too: work is shared among them (see ``claim``)
    #: and a waiter may wait for another's work.
    shared: bool = False

    @abstractmethod
    async def start(self, task_group: TaskGroup, listener: CommitListener | None = None) -> None:
        """Open the store and start its writer in ``task_group``; ``listener`` hears of commits."""

    @abstractmethod
    async def aclose(self) -> None:
        """Commit what is queued, stop the writer, release the store."""

    @abstractmethod
    async def insert(self, records: Sequence[ExecutionRecord]) -> None:
        """Write new records; returns once they are committed."""

    @abstractmethod
    def save(self, record: ExecutionRecord, *, lazy: bool = False) -> None:
        """Queue the record's state for the next group commit (does not wait).

        ``lazy``: the commit need not come soon. The row waits apart, a fraction of a
        second at most, so that the saves of a quick execution collapse into one row; a
        flush of everything, or a later save of the record that is not lazy, takes it into
        the next commit. For what a crash may lose and the engine
        redo: a running attempt, its output, a cron firing that its trigger's cursor fires
        again; never for what someone waits on."""

    @abstractmethod
    def create(
        self, record: ExecutionRecord, once: tuple[str, str] | None = None, *, lazy: bool = False
    ) -> None:
        """Queue a new execution; with ``once`` (trigger id, key) only if that key never fired.
        ``lazy`` as for ``save``."""

    @abstractmethod
    def save_trigger(self, trigger: TriggerRecord, *, lazy: bool = False) -> None:
        """Queue the trigger's current state for the next group commit (``lazy`` as for
        ``save``)."""

    def create_all(
        self, created: Iterable[tuple[ExecutionRecord, tuple[str, str] | None]], *, lazy: bool
    ) -> None:
        """``create`` for each (record, once) pair: a cron second's firings at once."""
        for record, once in created:
            self.create(record, once, lazy=lazy)

    def save_triggers(self, triggers: Iterable[TriggerRecord], *, lazy: bool) -> None:
        """``save_trigger`` for each trigger."""
        for trigger in triggers:
            self.save_trigger(trigger, lazy=lazy)

    @abstractmethod
    async def fired_keys(self, keys: Collection[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of these (trigger id, once key) pairs have a fire record: the cron times
        that were fired (a cron firing's key is its scheduled time)."""

    @abstractmethod
    def delete_trigger(self, trigger_id: str) -> None:
        """Queue the trigger's deletion (its fire records stay, as history)."""

    @abstractmethod
    async def list_triggers(self) -> list[TriggerRecord]:
        """Every stored trigger, oldest first."""

    async def trigger_counts(self) -> list[TriggerRecord]:
        """Every stored trigger, read for its counts alone: a later save of one of them by
        this engine writes the spec the engine holds, as if this read had not happened."""
        return await self.list_triggers()

    async def get_triggers(self, trigger_ids: Collection[str]) -> list[TriggerRecord]:
        """The stored triggers of these ids (those that exist), oldest first."""
        wanted = set(trigger_ids)
        return [trigger for trigger in await self.list_triggers() if trigger.id in wanted]

    @abstractmethod
    async def flush(self, *, lazy: bool = True) -> None:
        """Return once everything queued before the call is committed. With ``lazy=False``,
        lazy saves and trigger rows may go on waiting for their own commit: what a caller
        that waits for its own saves (made not lazily) asks."""

    @abstractmethod
    async def get(self, execution_id: str) -> ExecutionRecord | None:
        """The stored record with that id, or None."""

    def queued(self, execution_id: str) -> bool:
        """Whether a save of the execution waits for a later commit than the one the commit
        listener is being told of now."""
        return False

    async def get_many(self, execution_ids: Collection[str]) -> list[ExecutionRecord]:
        """The stored records of these ids (those that exist), in no order."""
        found = [await self.get(execution_id) for execution_id in execution_ids]
        return [record for record in found if record is not None]

    @abstractmethod
    async def list_ids(self, query: ExecutionQuery) -> list[str]:
        """The ids of the executions ``query`` selects, newest first, at most its limit."""

    @abstractmethod
    async def find(self, query: ExecutionQuery) -> list[ExecutionRecord]:
        """The records ``query`` selects, oldest first, at most its limit."""

    # -- packages and deployed services --------------------------------------------------

    @abstractmethod
    async def add_package_revision(
        self, package: PackageDefinition, codebase: bytes | None, created_at: float
    ) -> PackageRevision:
        """Store the next revision of ``package.name`` with ``codebase`` (a zip), or with None
        the codebase of its latest revision (ConfigurationError if it has none). Codebases are
        kept once per content (sha256), however many revisions share one."""

    @abstractmethod
    async def package_revisions(self, name: str) -> list[PackageRevision]:
        """Every revision of a package, oldest first; empty if there is no such package."""

    @abstractmethod
    async def package_names(self) -> list[str]:
        """The names of every stored package, sorted."""

    @abstractmethod
    async def codebase(self, sha256: str) -> bytes | None:
        """The codebase with that sha256, as it was stored; None if there is none."""

    @abstractmethod
    async def add_service_version(
        self, definition: ServiceDefinition, module: str, revision: int, created_at: float
    ) -> Deployment:
        """Store the next version of service ``definition.name``, pinned to package revision
        ``revision``. A new service starts active; a known one keeps its active flag."""

    @abstractmethod
    async def service_versions(self, name: str | None = None) -> list[Deployment]:
        """Every version of a service (or of all), by name then version."""

    @abstractmethod
    async def set_service_active(self, name: str, active: bool) -> None:
        """Mark a deployed service active or paused (kept across restarts)."""

    @abstractmethod
    async def inactive_services(self) -> set[str]:
        """The names of the deployed services that are paused."""

    # -- several engines on one store -----------------------------------------------------

    async def take_unfinished(self) -> Adopted:
        """The unfinished executions that no running engine owns (all of them, where one
        engine owns the store: what its last run left), oldest first; from now on this
        engine's. A store shared by engines makes them this engine's in the store first, in
        one transaction, so that two engines never take the same one; it takes the RUNNING
        ones of engines that are gone (their attempts are lost), puts their PENDING ones in
        the shared queue, and names the engines."""
        return Adopted(await self.find(ExecutionQuery(statuses=UNFINISHED_STATUSES)))

    async def lapsed(self) -> None:
        """Return when another engine on the store may have left work behind (its lease
        lapsed): ``take_unfinished`` takes it. A store of one engine never returns."""
        await anyio.sleep_forever()

    async def claim(self, functions: Collection[str], limit: int) -> list[ExecutionRecord]:
        """At most ``limit`` PENDING executions of ``functions`` from the shared queue (those
        no engine owns: ``engine_id`` None), oldest first, made this engine's in one
        statement, so that two engines never claim the same one. A claim whose answer was
        lost with its connection is answered by the next: the executions this engine owns
        and may not know of come with it (the engine skips those it holds). A store of one
        engine has no shared queue: nothing."""
        return []

    async def claim_ids(self, execution_ids: Collection[str]) -> list[ExecutionRecord]:
        """``claim`` for these executions alone: those still in the shared queue."""
        return []

    async def claim_reruns(self, execution_ids: Collection[str]) -> set[str]:
        """Of these executions, those that are FAILED or TIMED_OUT, made this engine's (and
        PENDING) in one statement, to run again: two engines never rerun the same one. A
        store of one engine claims nothing: all of them."""
        return set(execution_ids)

    async def ask_to_cancel(self, execution_id: str) -> str | None:
        """Mark an unfinished execution that another engine owns for cancelling, and ask its
        owner (``Channel.CANCEL``); the engine that holds it next cancels it if its owner
        is gone first. The owner's id, or None if it is unfinished here, final or unknown."""
        return None

    async def asked_to_cancel(self) -> list[str]:
        """The unfinished executions this engine owns that another engine asked it to cancel
        (see ``ask_to_cancel``): read when some asks may have gone unheard."""
        return []

    def hear(  # noqa: B027 (shared stores only)
        self, channel: str, handler: Heard, *, on_demand: bool = False
    ) -> None:
        """Call ``handler`` with what other engines on a shared store tell on ``channel`` (see
        ``Channel``), never what this engine tells; with None when some may have gone
        unheard. Register before ``start``. ``on_demand``: only while ``hear_now`` says so
        (what nobody here waits for is not worth receiving). A store of one engine hears
        nothing."""

    async def hear_now(self, channel: str, hearing: bool) -> None:  # noqa: B027 (as above)
        """Begin (or stop) hearing an ``on_demand`` channel: from the moment this returns,
        what is told on it is heard."""

    def tell(self, channel: str, messages: Sequence[str]) -> None:  # noqa: B027 (as above)
        """Tell ``messages`` (each a line of text) to the other engines, soon, in order, not
        in a commit. A store of one engine has nobody to tell."""

    def runs_elsewhere(self, function: str) -> bool:
        """Whether another running engine on the store runs ``function``, as the engines
        last said (``set_functions``): only then does work of it that this engine has no
        room for go to the shared queue. False on a store of one engine."""
        return False

    async def set_functions(self, functions: Collection[str]) -> None:  # noqa: B027 (as above)
        """Say which functions this engine runs, and tell the others (``Channel.ENGINES``)."""

    async def set_watching(self, kinds: Collection[str]) -> None:  # noqa: B027 (as above)
        """Say which kinds of other engines' events this engine's subscribers want (none:
        it watches nothing), and tell the others on ``Channel.WATCHING``."""

    async def watched(self) -> set[str]:
        """The kinds of events the other engines' subscribers want of this one."""
        return set()

    async def lead(self, changed: LeadChanged, *, task_status: TaskStatus[None]) -> None:
        """Run until cancelled: await ``changed(True)`` whenever this engine becomes the one
        engine on the store that runs the cron clock, ``changed(False)`` when it stops
        being it (a lost connection), and try again. ``task_status`` is told once the first
        try is over, led or waiting. A store of one engine leads at once, for good."""
        await changed(True)
        task_status.started()
        await anyio.sleep_forever()

    @abstractmethod
    async def count_by_status(self, query: ExecutionQuery = ALL) -> dict[ExecutionStatus, int]:
        """How many of the executions ``query`` selects (its limit aside) are in each status."""
