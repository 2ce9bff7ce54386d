"""The Store contract: where executions are kept durably.

One engine owns one store. Writes go through a single writer that commits in groups: every
``save`` of the same execution before the next commit collapses into one row write, and whatever
queued while a commit was running goes into the next one. Readers may see a state a few
milliseconds older than the engine's live one, never a newer one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Sequence

from anyio.abc import TaskGroup

from ..models import ExecutionRecord, ExecutionStatus, TriggerRecord

__all__ = ["CommitListener", "Store"]

#: Told, after each commit, the (id, status) of every execution that commit wrote, and the ids
#: of the new executions it refused because their once key had fired before.
CommitListener = Callable[[Sequence[tuple[str, ExecutionStatus]], Collection[str]], None]


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
    * Reads return copies: changing a returned record never changes the store.
    """

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
    def save(self, record: ExecutionRecord) -> None:
        """Queue the record's state for the next group commit (does not wait)."""

    @abstractmethod
    def create(self, record: ExecutionRecord, once: tuple[str, str] | None = None) -> None:
        """Queue a new execution; with ``once`` (trigger id, key) only if that key never fired."""

    @abstractmethod
    def save_trigger(self, trigger: TriggerRecord) -> None:
        """Queue the trigger's current state for the next group commit."""

    @abstractmethod
    def delete_trigger(self, trigger_id: str) -> None:
        """Queue the trigger's deletion (its fire records stay, as history)."""

    @abstractmethod
    async def list_triggers(self) -> list[TriggerRecord]:
        """Every stored trigger, oldest first."""

    @abstractmethod
    async def flush(self) -> None:
        """Return once everything queued before the call is committed."""

    @abstractmethod
    async def get(self, execution_id: str) -> ExecutionRecord | None:
        """The stored record with that id, or None."""

    @abstractmethod
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
        """Ids newest first, at most ``limit``: those older than the id ``before``, and where
        given, of one function, in some statuses, fired by one trigger, created in
        [``created_after``, ``created_before``) (unix times)."""

    @abstractmethod
    async def find(
        self, *, function: str | None = None, statuses: Collection[ExecutionStatus] | None = None
    ) -> list[ExecutionRecord]:
        """Every record of a function (or all) in the given statuses, oldest first."""

    @abstractmethod
    async def count_by_status(self, *, function: str | None = None) -> dict[ExecutionStatus, int]:
        """How many executions (of a function, or all) are in each status."""
