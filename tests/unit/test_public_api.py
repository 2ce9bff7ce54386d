from __future__ import annotations

import subprocess
import sys

import triggerfish


def test_all_is_sorted_and_every_name_resolves() -> None:
    assert triggerfish.__all__ == sorted(triggerfish.__all__)
    for name in triggerfish.__all__:
        assert getattr(triggerfish, name) is not None, name
    assert set(triggerfish.__all__) <= set(dir(triggerfish))


def test_error_tree() -> None:
    assert issubclass(triggerfish.InvocationFailedError, triggerfish.InvocationError)
    assert issubclass(triggerfish.InvocationCancelledError, triggerfish.InvocationError)
    assert issubclass(triggerfish.InvocationTimedOutError, triggerfish.InvocationError)
    assert issubclass(triggerfish.UnknownFunctionError, triggerfish.ConfigurationError)
    assert issubclass(triggerfish.SerializationError, triggerfish.ConfigurationError)
    for name in ("EngineClosedError", "ExecutionNotFoundError", "InvocationError"):
        assert issubclass(getattr(triggerfish, name), triggerfish.TriggerfishError)
    # A bare instance is what a cancel sends into a running thread.
    assert str(triggerfish.InvocationCancelledError()) == "the execution was cancelled"


def test_the_replica_runner_imports_only_the_standard_library_and_cloudpickle() -> None:
    code = (
        "import sys, triggerfish.engine.replica.runner;from triggerfish import current_context;"
        "heavy = {'pydantic', 'anyio', 'aiosqlite', 'structlog', 'triggerfish.engine.core'};"
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
