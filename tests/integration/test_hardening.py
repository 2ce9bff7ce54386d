"""The engine never unpickles what a replica produced, and a row the store cannot take fails
its own submitter, never the engine."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path

import pytest

import triggerfish
from triggerfish import ConfigurationError

from . import fns

pytestmark = pytest.mark.anyio


async def test_a_pipeline_never_unpickles_a_result_in_the_engine(
    make_engine: Callable[..., triggerfish.Engine], tmp_path: Path
) -> None:
    """A result whose pickle runs code, with a statusChanged trigger listening for it: the
    next step gets the result's JSON view (none: an object of a class), and nothing runs in
    the engine's process."""
    marker = tmp_path / "unpickled-by"
    engine = make_engine()
    engine.function(fns.planted)
    engine.function(fns.result_of)
    engine.add_trigger(
        {
            "name": "after-planted",
            "function": "result_of",
            "resource": "Execution",
            "actions": ["statusChanged"],
            "filter": {"function": "planted", "status": "SUCCEEDED"},
        }
    )
    async with engine:
        execution_id = await engine.handle(fns.planted).start(str(marker))
        record = await engine.core.wait(execution_id, timeout=30)
        await engine.handle(fns.result_of).wait_for_completion(timeout=30)
        (step,) = (await engine.handle(fns.result_of).list()).execution_ids
        outcome = await engine.core.wait(step, timeout=30)
    assert record.result_view is not None and record.result_view[0] == "repr"
    assert "tests.integration.fns.Planted object" in record.result_view[1]
    assert pickle.loads(outcome.result or b"") == [None, "repr"]
    unpicklers = marker.read_text().split() if marker.exists() else []
    assert str(os.getpid()) not in unpicklers  # the engine never ran the planted code


async def test_a_row_the_store_cannot_take_fails_its_submitter_and_nothing_else(
    make_engine: Callable[..., triggerfish.Engine],
) -> None:
    engine = make_engine()
    engine.function(fns.add)
    async with engine:
        core = engine.core
        blob = pickle.dumps(((1, 2), {}))
        with pytest.raises(ConfigurationError, match="could not be stored: UnicodeEncodeError"):
            await core.lifecycle.submit("add", [blob], parent_id="lone \ud800 surrogate")
        assert await engine.handle(fns.add).call_remote(2, 3) == 5  # the engine goes on
        assert core.running
