"""What the two SQL stores share above the group commit: every read, and the rare direct
writes (package revisions, service versions, a service's active flag), written once in SQL
both sqlite and PostgreSQL run. Statements are written with ``?`` placeholders; a store whose
driver numbers them (``$1``) rewrites them in ``_read`` and in its transactions.

A backend says how to read (``_read``), how to run a transaction (``_direct``: an object with
``fetch_one`` and ``run``), and how two engines numbering the same package or service at
once take turns (``_lock_name``: nothing for sqlite, whose write transactions are serial
already)."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Collection, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

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
from ._writer import GroupCommitStore, next_revision, next_version
from .abc import ALL, Channel
from .rows import (
    COLUMNS,
    deployment_from,
    execution_from,
    execution_row,
    limit_clause,
    revision_from,
    trigger_from,
    trigger_id_of,
    trigger_row,
    trigger_state_row,
    where_clause,
)

__all__ = ["Direct", "SqlStore"]

#: What ``_lock_name`` serializes: the numbering of a package's revisions, of a service's
#: versions.
PACKAGE, SERVICE = 1, 2
_TRIGGER_COLUMNS = "id, spec, created_at, stats, cursor, fired"


class Direct(Protocol):
    """A direct write's transaction (statements with ``?`` placeholders)."""

    async def fetch_one(self, sql: str, *params: Any) -> Sequence[Any] | None: ...

    async def run(self, sql: str, *params: Any) -> None: ...


class SqlStore(GroupCommitStore):
    """A group-commit store on SQL tables of the shared layout (see rows.py)."""

    @abstractmethod
    async def _read(self, sql: str, *params: Any) -> list[Sequence[Any]]:
        """Every row ``sql`` selects."""

    @abstractmethod
    def _direct(self) -> AbstractAsyncContextManager[Direct]:
        """A transaction for a direct write, committed when the block ends well."""

    async def _lock_name(self, db: Direct, kind: int, name: str) -> None:
        """Hold ``name`` of ``kind`` for the rest of the transaction, against another engine
        numbering the same one; nothing where write transactions are serial already."""

    async def _tell_in(self, db: Direct, channel: str, messages: Sequence[str]) -> None:
        """Tell other engines ``messages`` on ``channel`` (see ``Channel``) with the
        transaction's commit; nothing where no other engine shares the store."""

    # -- the group commit's snapshots: the shared rows ------------------------------------

    def _snapshot(self, record: ExecutionRecord) -> tuple[Any, ...]:
        return execution_row(record)

    def _snapshot_trigger(self, trigger: TriggerRecord) -> tuple[Any, ...]:
        return trigger_row(trigger)

    def _snapshot_trigger_state(self, trigger: TriggerRecord) -> tuple[Any, ...]:
        return trigger_state_row(trigger)

    def _trigger_id_of(self, snapshot: Any) -> str:
        return trigger_id_of(snapshot)

    # -- reads ----------------------------------------------------------------------------

    async def list_triggers(self) -> list[TriggerRecord]:
        rows = await self._read(f"SELECT {_TRIGGER_COLUMNS} FROM triggers ORDER BY created_at, id")
        return self._triggers_read(rows)

    async def trigger_counts(self) -> list[TriggerRecord]:
        rows = await self._read(f"SELECT {_TRIGGER_COLUMNS} FROM triggers ORDER BY created_at, id")
        return [trigger_from(*row) for row in rows]

    async def fired_keys(self, keys: Collection[tuple[str, str]]) -> set[tuple[str, str]]:
        wanted = set(keys)
        by_key = sorted({key for _, key in wanted})
        found: set[tuple[str, str]] = set()
        for start in range(0, len(by_key), 500):
            chunk = by_key[start : start + 500]
            marks = ", ".join("?" for _ in chunk)
            rows = await self._read(
                f"SELECT trigger_id, key FROM fires WHERE key IN ({marks})", *chunk
            )
            found.update(pair for pair in ((row[0], row[1]) for row in rows) if pair in wanted)
        return found

    async def get_triggers(self, trigger_ids: Collection[str]) -> list[TriggerRecord]:
        if not trigger_ids:
            return []
        marks = ", ".join("?" for _ in trigger_ids)
        rows = await self._read(
            f"SELECT {_TRIGGER_COLUMNS} FROM triggers WHERE id IN ({marks}) "
            "ORDER BY created_at, id",
            *trigger_ids,
        )
        return self._triggers_read(rows)

    def _triggers_read(self, rows: list[Sequence[Any]]) -> list[TriggerRecord]:
        """Triggers from their rows, whose specs count as written: a later save of one
        writes its state alone, never its spec again (on a shared store, a spec another
        engine changed meanwhile would go back)."""
        triggers = [trigger_from(*row) for row in rows]
        for trigger in triggers:
            self._written_specs[trigger.id] = trigger.spec
        return triggers

    async def get(self, execution_id: str) -> ExecutionRecord | None:
        found = await self._read(f"SELECT {COLUMNS} FROM executions WHERE id = ?", execution_id)
        return execution_from(found[0]) if found else None

    async def get_many(self, execution_ids: Collection[str]) -> list[ExecutionRecord]:
        if not execution_ids:
            return []
        marks = ", ".join("?" for _ in execution_ids)
        rows = await self._read(
            f"SELECT {COLUMNS} FROM executions WHERE id IN ({marks})", *execution_ids
        )
        return [execution_from(row) for row in rows]

    async def list_ids(self, query: ExecutionQuery) -> list[str]:
        where, params = where_clause(query)
        rows = await self._read(
            f"SELECT id FROM executions {where} ORDER BY id DESC{limit_clause(query)}", *params
        )
        return [row[0] for row in rows]

    async def find(self, query: ExecutionQuery) -> list[ExecutionRecord]:
        where, params = where_clause(query)
        rows = await self._read(
            f"SELECT {COLUMNS} FROM executions {where} ORDER BY id{limit_clause(query)}", *params
        )
        return [execution_from(row) for row in rows]

    async def count_by_status(self, query: ExecutionQuery = ALL) -> dict[ExecutionStatus, int]:
        where, params = where_clause(query.replace(limit=None))
        rows = await self._read(
            f"SELECT status, COUNT(*) FROM executions {where} GROUP BY status", *params
        )
        counts = dict.fromkeys(ExecutionStatus, 0)
        for status, count in rows:
            counts[ExecutionStatus(status)] = count
        return counts

    # -- packages and deployed services --------------------------------------------------

    async def add_package_revision(
        self, package: PackageDefinition, codebase: bytes | None, created_at: float
    ) -> PackageRevision:
        async def write() -> PackageRevision:
            async with self._direct() as db:
                await self._lock_name(db, PACKAGE, package.name)
                latest = await db.fetch_one(
                    "SELECT revision, codebase_sha256, codebase_size FROM package_revisions "
                    "WHERE name = ? ORDER BY revision DESC LIMIT 1",
                    package.name,
                )
                revision = next_revision(
                    package, tuple(latest) if latest else None, codebase, created_at
                )
                if codebase is not None:
                    await db.run(
                        "INSERT INTO codebases (sha256, data) VALUES (?, ?) ON CONFLICT DO NOTHING",
                        revision.codebase_sha256,
                        codebase,
                    )
                await db.run(
                    "INSERT INTO package_revisions (name, revision, package, codebase_sha256, "
                    "codebase_size, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    package.name,
                    revision.revision,
                    package.model_dump_json(by_alias=True),
                    revision.codebase_sha256,
                    revision.codebase_size,
                    created_at,
                )
            return revision

        return await self._exclusive(write)

    async def package_revisions(self, name: str) -> list[PackageRevision]:
        rows = await self._read(
            "SELECT revision, package, codebase_sha256, codebase_size, created_at "
            "FROM package_revisions WHERE name = ? ORDER BY revision",
            name,
        )
        return [revision_from(name, row) for row in rows]

    async def package_names(self) -> list[str]:
        rows = await self._read("SELECT DISTINCT name FROM package_revisions ORDER BY name")
        return [row[0] for row in rows]

    async def codebase(self, sha256: str) -> bytes | None:
        rows = await self._read("SELECT data FROM codebases WHERE sha256 = ?", sha256)
        return bytes(rows[0][0]) if rows else None

    async def add_service_version(
        self, definition: ServiceDefinition, module: str, revision: int, created_at: float
    ) -> Deployment:
        async def write() -> Deployment:
            async with self._direct() as db:
                await self._lock_name(db, SERVICE, definition.name)
                (last,) = await db.fetch_one(
                    "SELECT COALESCE(MAX(version), 0) FROM service_versions WHERE name = ?",
                    definition.name,
                ) or (0,)
                deployment = next_version(definition, module, revision, last, created_at)
                await db.run(
                    "INSERT INTO service_versions (name, version, package, revision, module, "
                    "definition, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    deployment.name,
                    deployment.version,
                    deployment.package,
                    revision,
                    module,
                    deployment.definition.model_dump_json(by_alias=True),
                    created_at,
                )
                await db.run(
                    "INSERT INTO services (name, active) VALUES (?, 1) ON CONFLICT DO NOTHING",
                    definition.name,
                )
                await self._tell_in(db, Channel.SERVICES, [definition.name])
            return deployment

        return await self._exclusive(write)

    async def service_versions(self, name: str | None = None) -> list[Deployment]:
        where, params = ("WHERE name = ?", (name,)) if name is not None else ("", ())
        rows = await self._read(
            "SELECT name, version, package, revision, module, definition, created_at "
            f"FROM service_versions {where} ORDER BY name, version",
            *params,
        )
        return [deployment_from(row) for row in rows]

    async def set_service_active(self, name: str, active: bool) -> None:
        async def write() -> None:
            async with self._direct() as db:
                await db.run(
                    "INSERT INTO services (name, active) VALUES (?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET active = excluded.active",
                    name,
                    int(active),
                )
                await self._tell_in(db, Channel.SERVICES, [name])

        await self._exclusive(write)

    async def inactive_services(self) -> set[str]:
        rows = await self._read("SELECT name FROM services WHERE active = 0")
        return {row[0] for row in rows}
