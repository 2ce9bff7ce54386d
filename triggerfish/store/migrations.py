"""The sqlite schema, as numbered steps; ``PRAGMA user_version`` records the last one applied."""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE executions (
        id TEXT PRIMARY KEY,
        function TEXT NOT NULL,
        service TEXT NOT NULL,
        status TEXT NOT NULL,
        input BLOB NOT NULL,
        max_attempts INTEGER NOT NULL,
        attempts INTEGER NOT NULL,
        failed_attempts INTEGER NOT NULL,
        result BLOB,
        error TEXT,
        progress INTEGER,
        status_log TEXT NOT NULL,
        logs TEXT NOT NULL,
        parent_id TEXT,
        created_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL
    ) WITHOUT ROWID;
    CREATE INDEX executions_by_function ON executions (function, id);
    CREATE INDEX executions_by_status ON executions (status, function);
    """,
)

MIGRATIONS += (
    """
    ALTER TABLE executions ADD COLUMN trigger_id TEXT;
    ALTER TABLE executions ADD COLUMN event TEXT;
    ALTER TABLE executions ADD COLUMN lineage TEXT;
    CREATE TABLE fires (
        trigger_id TEXT NOT NULL,
        key TEXT NOT NULL,
        execution_id TEXT NOT NULL,
        fired_at REAL NOT NULL,
        PRIMARY KEY (trigger_id, key)
    ) WITHOUT ROWID;
    CREATE TABLE triggers (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        spec TEXT NOT NULL,
        created_at REAL NOT NULL,
        stats TEXT NOT NULL,
        cursor REAL
    ) WITHOUT ROWID;
    """,
)

MIGRATIONS += (
    """
    CREATE TABLE codebases (
        sha256 TEXT PRIMARY KEY,
        data BLOB NOT NULL
    );
    CREATE TABLE package_revisions (
        name TEXT NOT NULL,
        revision INTEGER NOT NULL,
        package TEXT NOT NULL,
        codebase_sha256 TEXT NOT NULL REFERENCES codebases (sha256),
        codebase_size INTEGER NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (name, revision)
    ) WITHOUT ROWID;
    CREATE TABLE service_versions (
        name TEXT NOT NULL,
        version INTEGER NOT NULL,
        package TEXT NOT NULL,
        revision INTEGER NOT NULL,
        module TEXT NOT NULL,
        definition TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (name, version)
    ) WITHOUT ROWID;
    CREATE TABLE services (
        name TEXT PRIMARY KEY,
        active INTEGER NOT NULL
    ) WITHOUT ROWID;
    """,
)

# Fire records keyed by (key, trigger) rather than (trigger, key): a cron key is the scheduled
# time, the same for every trigger due that second, so a second's thousand fire records land
# together at the end of the tree instead of on a thousand scattered pages (each one a page
# more for the commit and the WAL to write).
MIGRATIONS += (
    """
    CREATE TABLE fires_by_key (
        trigger_id TEXT NOT NULL,
        key TEXT NOT NULL,
        execution_id TEXT NOT NULL,
        fired_at REAL NOT NULL,
        PRIMARY KEY (key, trigger_id)
    ) WITHOUT ROWID;
    INSERT INTO fires_by_key (trigger_id, key, execution_id, fired_at)
        SELECT trigger_id, key, execution_id, fired_at FROM fires;
    DROP TABLE fires;
    ALTER TABLE fires_by_key RENAME TO fires;
    """,
)

# A result's JSON view, made by the replica beside its pickle (kind: json, truncated or repr):
# what the API shows and pipelines read, so that nothing here unpickles what a replica made.
MIGRATIONS += (
    """
    ALTER TABLE executions ADD COLUMN result_view_kind TEXT;
    ALTER TABLE executions ADD COLUMN result_view TEXT;
    """,
)

# A trigger's count of firings in a column of its own, raised in the transaction that stores
# the executions it fired: a count saved with the trigger's state, a commit later, was lost by
# a crash in between, while the executions ran after the restart.
MIGRATIONS += (
    """
    ALTER TABLE triggers ADD COLUMN fired INTEGER NOT NULL DEFAULT 0;
    UPDATE triggers SET fired = COALESCE(json_extract(stats, '$.fired'), 0);
    """,
)

# The engine that ran an execution's latest attempt: with several engines on one store, what
# tells whose attempt a lost one was.
MIGRATIONS += ("ALTER TABLE executions ADD COLUMN engine_id TEXT;",)
