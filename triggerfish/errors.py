"""The whole exception tree of triggerfish.

Every error the library raises on purpose is one of these; errors from the parts it is built on
(sqlite, pipes, pickling) are translated at the boundary with ``raise ... from exc``::

    TriggerfishError
    ├── ConfigurationError           a spec, argument or option that cannot be accepted
    │   ├── DefinitionError          a JSON definition (package, service, trigger) with a bad
    │   │   │                        field; ``where`` is its path, like ``modules[0].entryPoint``
    │   │   └── InvalidInputError    a JSON value from outside past a limit of the boundary
    │   │                            (too deep, not unicode, not a finite number, not JSON)
    │   ├── UnknownFunctionError     no function of that name is registered
    │   ├── TriggerNotFoundError     no trigger has that id or name
    │   ├── PackageNotFoundError     no package has that name (or no such revision)
    │   └── SerializationError       arguments or a result that cannot be pickled
    ├── EngineClosedError            the engine is not running (not started, or stopped)
    ├── ImageBuildError              a container image could not be built (``log`` has why)
    ├── ExecutionNotFoundError       no execution has that id
    ├── RemoteError                  the daemon could not be reached, or answered an error
    │   └── AuthenticationError      the daemon refused the API key (or none was given)
    └── InvocationError              an execution ended without a result
        ├── InvocationFailedError    the function raised, its replica died, or its init failed
        ├── InvocationCancelledError the execution was cancelled
        └── InvocationTimedOutError  the execution ran past its timeout

``InvocationFailedError`` carries the remote exception's type, message and traceback as text,
because the exception object itself lives in another process and may not unpickle here.
"""

from __future__ import annotations

__all__ = [
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
]


class TriggerfishError(Exception):
    """Base of every error triggerfish raises on purpose."""


class ConfigurationError(TriggerfishError, ValueError):
    """A spec, argument or option that cannot be accepted; the message names it."""


class DefinitionError(ConfigurationError):
    """A JSON definition that cannot be accepted; ``where`` is the path of the bad field."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where


class InvalidInputError(DefinitionError):
    """A value from outside (a request body, an event, a filter, an input) that the boundary
    refuses: nested too deep, not valid unicode, not a finite number, not JSON. ``where`` is
    the path of the bad field, like ``body.items[3]``."""


class UnknownFunctionError(ConfigurationError, LookupError):
    """No function of that name is registered with the engine."""


class TriggerNotFoundError(ConfigurationError, LookupError):
    """No trigger has that id or name."""


class PackageNotFoundError(ConfigurationError, LookupError):
    """No package has that name, or it has no such revision."""


class SerializationError(ConfigurationError):
    """Arguments or a result that cannot be pickled; nothing was stored."""


class EngineClosedError(TriggerfishError, RuntimeError):
    """The engine is not running: it was never started, or it has been stopped."""


class ExecutionNotFoundError(TriggerfishError, LookupError):
    """No execution has that id."""


class ImageBuildError(TriggerfishError, OSError):
    """A container image derived for a function's requirements or data could not be built.
    ``log`` is the whole build log (the message ends with its tail)."""

    def __init__(self, message: str, *, log: str) -> None:
        super().__init__(message)
        self.log = log


class RemoteError(TriggerfishError):
    """A daemon could not be reached, or answered with an error this tree has no better name
    for. ``status_code`` is the HTTP status (None when there was no answer)."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class AuthenticationError(RemoteError):
    """The daemon refused the API key, or none was given (HTTP 401)."""


class InvocationError(TriggerfishError):
    """An execution ended without a result. ``execution_id`` names it."""

    def __init__(self, message: str = "", *, execution_id: str | None = None) -> None:
        super().__init__(message)
        self.execution_id = execution_id


class InvocationFailedError(InvocationError):
    """The function raised, its replica died, or its service could not start.

    ``error_type``, ``error_message`` and ``remote_traceback`` describe the remote failure.
    """

    def __init__(
        self,
        message: str,
        *,
        execution_id: str | None = None,
        error_type: str = "",
        error_message: str = "",
        remote_traceback: str = "",
    ) -> None:
        super().__init__(message, execution_id=execution_id)
        self.error_type = error_type
        self.error_message = error_message
        self.remote_traceback = remote_traceback

    def __str__(self) -> str:
        text = super().__str__()
        if self.remote_traceback:
            return f"{text}\n\nRemote traceback:\n{self.remote_traceback.rstrip()}"
        return text


class InvocationCancelledError(InvocationError):
    """The execution was cancelled. Inside a sync function it is also raised to stop it; there
    it is made with no arguments (that is how an exception is sent into a running thread)."""

    def __init__(
        self, message: str = "the execution was cancelled", *, execution_id: str | None = None
    ) -> None:
        super().__init__(message, execution_id=execution_id)


class InvocationTimedOutError(InvocationError):
    """The execution ran past its timeout (progress updates move the deadline)."""
