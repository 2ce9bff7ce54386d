"""triggerfish: a self-hostable functions-as-a-service engine.

The names below are loaded on first use, so that a replica, which imports
``triggerfish.engine.replica`` only, starts without loading pydantic, anyio or sqlite.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "AuthenticationError",
    "Client",
    "ConfigurationError",
    "DefinitionError",
    "Deployment",
    "Engine",
    "EngineClosedError",
    "ErrorInfo",
    "Execution",
    "ExecutionContext",
    "ExecutionNotFoundError",
    "ExecutionPage",
    "ExecutionStatus",
    "FunctionHandle",
    "FunctionSpec",
    "ImageBuildError",
    "InvalidInputError",
    "InvocationCancelledError",
    "InvocationError",
    "InvocationFailedError",
    "InvocationTimedOutError",
    "MemoryStore",
    "PackageDefinition",
    "PackageNotFoundError",
    "PackageRevision",
    "RemoteError",
    "SerializationError",
    "ServiceDefinition",
    "ServiceSpec",
    "ServiceState",
    "ServiceStatus",
    "SqliteStore",
    "StatusChange",
    "Store",
    "TriggerNotFoundError",
    "TriggerfishError",
    "UnknownFunctionError",
    "current_context",
    "method",
]

_HOMES = {
    "Engine": "triggerfish.sdk.engine",
    "method": "triggerfish.sdk.marks",
    "FunctionHandle": "triggerfish.sdk.handle",
    "Client": "triggerfish.sdk.client",
    "ExecutionContext": "triggerfish.engine.replica.context",
    "current_context": "triggerfish.engine.replica.context",
    "MemoryStore": "triggerfish.store.memory",
    "SqliteStore": "triggerfish.store.sqlite",
    "Store": "triggerfish.store.abc",
    **dict.fromkeys(
        [
            "Deployment",
            "ErrorInfo",
            "Execution",
            "ExecutionPage",
            "ExecutionStatus",
            "FunctionSpec",
            "PackageDefinition",
            "PackageRevision",
            "ServiceDefinition",
            "ServiceSpec",
            "ServiceState",
            "ServiceStatus",
            "StatusChange",
        ],
        "triggerfish.models",
    ),
    **dict.fromkeys(
        [
            "AuthenticationError",
            "ConfigurationError",
            "DefinitionError",
            "EngineClosedError",
            "ExecutionNotFoundError",
            "ImageBuildError",
            "InvalidInputError",
            "InvocationCancelledError",
            "InvocationError",
            "InvocationFailedError",
            "InvocationTimedOutError",
            "PackageNotFoundError",
            "RemoteError",
            "SerializationError",
            "TriggerNotFoundError",
            "TriggerfishError",
            "UnknownFunctionError",
        ],
        "triggerfish.errors",
    ),
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'triggerfish' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    from .engine.replica.context import ExecutionContext, current_context
    from .errors import (
        AuthenticationError,
        ConfigurationError,
        DefinitionError,
        EngineClosedError,
        ExecutionNotFoundError,
        ImageBuildError,
        InvalidInputError,
        InvocationCancelledError,
        InvocationError,
        InvocationFailedError,
        InvocationTimedOutError,
        PackageNotFoundError,
        RemoteError,
        SerializationError,
        TriggerfishError,
        TriggerNotFoundError,
        UnknownFunctionError,
    )
    from .models import (
        Deployment,
        ErrorInfo,
        Execution,
        ExecutionPage,
        ExecutionStatus,
        FunctionSpec,
        PackageDefinition,
        PackageRevision,
        ServiceDefinition,
        ServiceSpec,
        ServiceState,
        ServiceStatus,
        StatusChange,
    )
    from .sdk.client import Client
    from .sdk.engine import Engine
    from .sdk.handle import FunctionHandle
    from .sdk.marks import method
    from .store.abc import Store
    from .store.memory import MemoryStore
    from .store.sqlite import SqliteStore
