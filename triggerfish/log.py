"""The engine's structured logger.

Events have stable snake_case names (``execution_started``, ``replica_died``...) and bound ids.
It sits on the standard ``logging`` logger named ``triggerfish``, so an application controls
levels and output the usual way; per-execution events are at debug level and cost little when
that level is off.
"""

from __future__ import annotations

import logging
from typing import Any

import structlog

_stdlib = logging.getLogger("triggerfish")

logger: Any = structlog.wrap_logger(
    _stdlib,
    wrapper_class=structlog.stdlib.BoundLogger,
    processors=[
        structlog.stdlib.filter_by_level,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso"),
        structlog.processors.format_exc_info,
        structlog.processors.KeyValueRenderer(key_order=["event"], sort_keys=True),
    ],
)


def debug_enabled() -> bool:
    """Whether per-execution debug events would be written (checked on hot paths)."""
    return _stdlib.isEnabledFor(logging.DEBUG)
