"""The function bench/http.py runs, through the daemon (``--app bench_app:setup``) and embedded."""

from __future__ import annotations

from typing import Any

from triggerfish import Engine


def echo(x: Any) -> Any:
    """Returns its argument: a no-op whose result can be checked."""
    return x


def setup(engine: Engine) -> None:
    engine.function(echo, replicas=2, concurrency=64)
