"""The shared queue of engines on one PostgreSQL database, and what they tell each other.

An execution that no engine owns (``engine_id`` NULL) and that is PENDING is in the shared
queue: its creator had no room for it, or its owner stopped or is gone. Any engine that runs
its function and has room claims it (``CLAIM``): one statement picks the oldest with
``FOR UPDATE SKIP LOCKED`` and makes them the claimer's, so two engines claiming at once never
take the same one, and neither waits for the other's rows. A claim holds the claimer's own
``engines`` row (``FOR KEY SHARE``): an engine whose work is being adopted (its row removed)
claims nothing.

Engines tell each other things on channels (``Channel`` in abc.py) with NOTIFY, each channel
``triggerfish_<name>``. A payload is the sender's engine id, then its messages, one a line;
a notification holds less than 8,000 bytes, so many messages go in several.
"""

from __future__ import annotations

from collections.abc import Sequence

from .rows import COLUMNS

__all__ = [
    "CLAIM",
    "CLAIM_IDS",
    "OWNED_WAITING",
    "SCHEMA",
    "SCHEMA_FUNCTIONS",
    "channel_name",
    "payloads",
    "read_payload",
]

#: The step of the schema (see postgres.MIGRATIONS) that gives the shared queue its index,
#: an execution the mark of a cancel asked of another engine, and an engine the kinds of
#: other engines' events its subscribers watch.
SCHEMA = """
    CREATE INDEX executions_shared ON executions (function, id)
        WHERE engine_id IS NULL AND status = 'PENDING';
    ALTER TABLE executions ADD COLUMN cancel_requested BOOLEAN NOT NULL DEFAULT false;
    ALTER TABLE engines ADD COLUMN watching TEXT[] NOT NULL DEFAULT '{}';
"""
#: The step after it: the functions each engine runs (see Store.runs_elsewhere).
SCHEMA_FUNCTIONS = """
    ALTER TABLE engines ADD COLUMN functions TEXT[] NOT NULL DEFAULT '{}';
"""

_RETURNED = ", ".join(f"x.{column}" for column in COLUMNS.split(", ")) + ", x.cancel_requested"
_MINE = "WITH me AS (SELECT 1 FROM engines WHERE id = $1 FOR KEY SHARE), picked AS ("
_TAKE = (
    ") UPDATE executions AS x SET engine_id = $1 FROM picked WHERE x.id = picked.id "
    f"RETURNING {_RETURNED}"
)
#: Claim, for engine $1, at most $3 executions of the functions $2 from the shared queue.
CLAIM = (
    _MINE + "SELECT id FROM executions WHERE engine_id IS NULL AND status = 'PENDING' "
    "AND function = ANY($2::text[]) AND EXISTS (SELECT 1 FROM me) "
    "ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED" + _TAKE
)
#: Claim, for engine $1, the executions $2 that are still in the shared queue.
CLAIM_IDS = (
    _MINE + "SELECT id FROM executions WHERE engine_id IS NULL AND status = 'PENDING' "
    "AND id = ANY($2::text[]) AND EXISTS (SELECT 1 FROM me) FOR UPDATE SKIP LOCKED" + _TAKE
)
#: What engine $1 owns and has not run: after a claim whose answer was lost, some of it may
#: be unknown to the engine.
OWNED_WAITING = (
    f"SELECT {_RETURNED} FROM executions AS x WHERE x.engine_id = $1 AND x.status = 'PENDING'"
)

_PREFIX = "triggerfish_"
_PAYLOAD_BYTES = 7900  # a notification's payload is below 8000 bytes


def channel_name(channel: str) -> str:
    """The NOTIFY channel of one of ``Channel``'s."""
    return _PREFIX + channel


def payloads(sender: str, messages: Sequence[str]) -> list[str]:
    """The payloads that tell ``messages`` (lines without a newline) from ``sender``, each
    within the server's limit (a message longer than that goes alone, and the server refuses
    it: the sender keeps each message well below)."""
    found: list[str] = []
    lines = [sender]
    size = len(sender.encode())
    for message in messages:
        more = 1 + len(message.encode())
        if size + more > _PAYLOAD_BYTES and len(lines) > 1:
            found.append("\n".join(lines))
            lines, size = [sender], len(sender.encode())
        lines.append(message)
        size += more
    if len(lines) > 1:
        found.append("\n".join(lines))
    return found


def read_payload(payload: str) -> tuple[str, list[str]]:
    """The sender and the messages of a payload."""
    sender, _, rest = payload.partition("\n")
    return sender, rest.split("\n")
