"""triggerfish: a self-hostable functions-as-a-service engine.

The names below are loaded on first use, so that a replica, which imports
``triggerfish.engine.replica`` only, starts without loading pydantic, anyio or sqlite.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "AttemptFailure",
    "AttemptTimeoutError",
    "AuthenticationError",
    "Client",
    "ConfigurationError",
    "CronMissed",
    "DefinitionError",
    "Deployment",
    "Engine",
    "EngineClosedError",
    "EngineEvent",
    "EngineStoppedError",
    "ErrorInfo",
    "Execution",
    "ExecutionContext",
    "ExecutionCreated",
    "ExecutionFinished",
    "ExecutionLogged",
    "ExecutionNotFoundError",
    "ExecutionPage",
    "ExecutionStatus",
    "ExecutionStatusChanged",
    "FunctionHandle",
    "FunctionMissingError",
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
    "PostgresStore",
    "RemoteError",
    "ReplicaDiedError",
    "ReplicaLost",
    "ReplicaStarted",
    "ResultTooLargeError",
    "SerializationError",
    "ServiceDefinition",
    "ServiceInitError",
    "ServiceSpec",
    "ServiceState",
    "ServiceStateChanged",
    "ServiceStatus",
    "SqliteStore",
    "StatusChange",
    "Store",
    "StoreRefusedError",
    "StoreUnavailableError",
    "SubscriberLagged",
    "Subscription",
    "TriggerFired",
    "TriggerNotFoundError",
    "TriggerSuppressed",
    "TriggerfishError",
    "UnknownFunctionError",
    "current_context",
    "method",
]

_HOMES = {
    "Engine": "triggerfish.sdk.entry",
    "method": "triggerfish.sdk.marks",
    "FunctionHandle": "triggerfish.sdk.handle",
    "Client": "triggerfish.sdk.remote",
    "ExecutionContext": "triggerfish.engine.replica.context",
    "current_context": "triggerfish.engine.replica.context",
    "MemoryStore": "triggerfish.store.memory",
    "PostgresStore": "triggerfish.store.postgres",
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
            "CronMissed",
            "EngineEvent",
            "ExecutionCreated",
            "ExecutionFinished",
            "ExecutionLogged",
            "ExecutionStatusChanged",
            "ReplicaLost",
            "ReplicaStarted",
            "ServiceStateChanged",
            "SubscriberLagged",
            "Subscription",
            "TriggerFired",
            "TriggerSuppressed",
        ],
        "triggerfish.engine.events",
    ),
    **dict.fromkeys(
        [
            "AttemptFailure",
            "AttemptTimeoutError",
            "EngineStoppedError",
            "FunctionMissingError",
            "ReplicaDiedError",
            "ResultTooLargeError",
            "ServiceInitError",
            "StoreRefusedError",
            "StoreUnavailableError",
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
    from .engine.events import (
        CronMissed,
        EngineEvent,
        ExecutionCreated,
        ExecutionFinished,
        ExecutionLogged,
        ExecutionStatusChanged,
        ReplicaLost,
        ReplicaStarted,
        ServiceStateChanged,
        SubscriberLagged,
        Subscription,
        TriggerFired,
        TriggerSuppressed,
    )
    from .engine.replica.context import ExecutionContext, current_context
    from .errors import (
        AttemptFailure,
        AttemptTimeoutError,
        AuthenticationError,
        ConfigurationError,
        DefinitionError,
        EngineClosedError,
        EngineStoppedError,
        ExecutionNotFoundError,
        FunctionMissingError,
        ImageBuildError,
        InvalidInputError,
        InvocationCancelledError,
        InvocationError,
        InvocationFailedError,
        InvocationTimedOutError,
        PackageNotFoundError,
        RemoteError,
        ReplicaDiedError,
        ResultTooLargeError,
        SerializationError,
        ServiceInitError,
        StoreRefusedError,
        StoreUnavailableError,
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
    from .sdk.entry import Engine
    from .sdk.handle import FunctionHandle
    from .sdk.marks import method
    from .sdk.remote import Client
    from .store.abc import Store
    from .store.memory import MemoryStore
    from .store.postgres import PostgresStore
    from .store.sqlite import SqliteStore
