"""The runtime contract on the process runtime and on the in-process fake."""

from __future__ import annotations

import pytest

from triggerfish.engine.runtimes.abc import Runtime
from triggerfish.engine.runtimes.process import ProcessRuntime
from triggerfish.testing import FakeRuntime
from triggerfish.testing.contract import RuntimeContract


class TestProcessRuntime(RuntimeContract):
    runtime_name = "process"

    @pytest.fixture
    def runtime(self) -> Runtime:
        return ProcessRuntime()


class TestFakeRuntime(RuntimeContract):
    runtime_name = "fake"

    @pytest.fixture
    def runtime(self) -> Runtime:
        return FakeRuntime()
