"""A daemon app with a fault planted in the engine: the commit of a finished ``explode``
execution raises inside the store's writer task, as an engine bug would. No input can do this
(the tests of hostile input check that); it is how the daemon's answer to a failed engine is
tested: exit at once, non-zero, never half alive."""

from __future__ import annotations

import time
from typing import Any

from triggerfish import Engine


def explode() -> str:
    return "boom"


def linger(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def setup(engine: Engine) -> None:
    engine.function(replicas=1, concurrency=2)(explode)
    engine.function(replicas=1, concurrency=32, max_attempts=3)(linger)
    core = engine.core
    heard = core.lifecycle.committed

    def committed(written: Any, refused: Any, failed: Any) -> None:
        heard(written, refused, failed)
        for execution_id, status in written:
            record = core.lifecycle.live.get(execution_id)
            if status == "SUCCEEDED" and record is None and _is_explode(execution_id):
                raise RuntimeError("a fault planted in the engine")

    def _is_explode(execution_id: str) -> bool:
        return execution_id in exploding

    exploding: set[str] = set()
    submit = core.submit_watched

    async def watched(function: str, inputs: Any, **options: Any) -> Any:
        pairs = await submit(function, inputs, **options)
        if function == "explode":
            exploding.update(i for i, _ in pairs)
        return pairs

    core.submit_watched = watched  # type: ignore[method-assign]
    core.lifecycle.committed = committed  # type: ignore[method-assign]
