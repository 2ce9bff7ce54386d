from __future__ import annotations

from collections.abc import Iterator

import pytest

from triggerfish.compat._embedded import Embedded


@pytest.fixture(autouse=True, scope="module")
def _stop_the_embedded_engines() -> Iterator[None]:
    """The engines the compat layers start in this process stop after each module, as they
    would at a program's exit: none outlives the module that used it."""
    yield
    Embedded.stop_all()
