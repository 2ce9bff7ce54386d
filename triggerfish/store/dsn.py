"""PostgreSQL connection URLs (DSNs): telling one from a sqlite path, and naming its server in
messages without its password. Apart from the store, so that choosing a store by its name
loads asyncpg only when it is a PostgreSQL one."""

from __future__ import annotations

import urllib.parse

from ..errors import ConfigurationError

__all__ = ["describe_dsn", "is_postgres_dsn"]


def is_postgres_dsn(value: object) -> bool:
    """Whether ``value`` is a PostgreSQL connection URL (``postgresql://`` or
    ``postgres://``)."""
    return isinstance(value, str) and value.startswith(("postgresql://", "postgres://"))


def describe_dsn(dsn: str) -> str:
    """The server a DSN names, for messages: user@host:port/database, never the password."""
    try:
        parts = urllib.parse.urlsplit(dsn)
        host = parts.hostname or urllib.parse.parse_qs(parts.query).get("host", ["localhost"])[0]
        port = parts.port or 5432
    except ValueError as exc:
        raise ConfigurationError(f"not a PostgreSQL URL (postgresql://...): {exc}") from None
    user = f"{parts.username}@" if parts.username else ""
    database = parts.path.lstrip("/") or (parts.username or "postgres")
    return f"{user}{host}:{port}/{database}"
