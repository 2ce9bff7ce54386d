"""The collector's pacing: raised while an engine runs, given back when the last one stops,
and never against what the application chose."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from triggerfish import Engine, SqliteStore
from triggerfish.engine import collector
from triggerfish.testing import FakeRuntime


@pytest.fixture(autouse=True)
def thresholds() -> Iterator[None]:
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*before)


def test_the_first_engine_raises_it_and_the_last_gives_it_back() -> None:
    collector.engine_started()
    assert gc.get_threshold() == (collector.YOUNG_THRESHOLD, 10, 10)
    collector.engine_started()
    collector.engine_stopped()
    assert gc.get_threshold() == (collector.YOUNG_THRESHOLD, 10, 10)  # one still runs
    collector.engine_stopped()
    assert gc.get_threshold() == (700, 10, 10)


def test_a_higher_threshold_of_the_application_is_kept() -> None:
    gc.set_threshold(50_000, 5, 5)
    collector.engine_started()
    assert gc.get_threshold() == (50_000, 5, 5)
    collector.engine_stopped()
    assert gc.get_threshold() == (50_000, 5, 5)


def test_a_collector_turned_off_stays_off() -> None:
    gc.set_threshold(0)
    collector.engine_started()
    assert gc.get_threshold()[0] == 0
    collector.engine_stopped()
    assert gc.get_threshold()[0] == 0


def test_thresholds_changed_while_it_ran_are_not_overwritten() -> None:
    collector.engine_started()
    gc.set_threshold(2_000, 10, 10)  # the application decided, meanwhile
    collector.engine_stopped()
    assert gc.get_threshold() == (2_000, 10, 10)


@pytest.mark.anyio
async def test_an_engine_paces_it_while_it_runs(tmp_path: Path) -> None:
    engine = Engine(SqliteStore(tmp_path / "gc.db"), runtime=FakeRuntime())
    async with engine:
        assert gc.get_threshold()[0] == collector.YOUNG_THRESHOLD
    assert gc.get_threshold() == (700, 10, 10)
