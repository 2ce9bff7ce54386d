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
    ├── StoreUnavailableError        the store's server cannot be reached or refused the login
    ├── RemoteError                  the daemon could not be reached, or answered an error
    │   └── AuthenticationError      the daemon refused the API key (or none was given)
    ├── InvocationError              an execution ended without a result
    │   ├── InvocationFailedError    the function raised, its replica died, or its init failed
    │   ├── InvocationCancelledError the execution was cancelled
    │   └── InvocationTimedOutError  the execution ran past its timeout
    └── AttemptFailure               why the engine, not the function, ended an attempt; its
        │                            name is the ``error.type`` stored with the execution
        ├── EngineStoppedError       the engine stopped while the attempt ran
        ├── ReplicaDiedError         the replica running it died
        ├── ServiceInitError         its service's replicas could not initialize
        ├── AttemptTimeoutError      no result or progress within the timeout (stored as
        │                            ``TimeoutError``, the name a function's own timeout has)
        ├── ResultTooLargeError      a result larger than the store keeps (stored as
        │                            ``SerializationError``)
        ├── StoreRefusedError        the store could not take the execution (``StoreError``)
        └── FunctionMissingError     its service no longer has its function
                                     (``UnknownFunctionError``)

``InvocationFailedError`` carries the remote exception's type, message and traceback as text,
because the exception object itself lives in another process and may not unpickle here.

An ``AttemptFailure`` is never raised to a caller: the engine records it with the execution
(``error``: type, message, traceback), and a caller sees it as an ``InvocationFailedError`` whose
``error_type`` is the failure's name. This module imports nothing of the package: everything
here takes plain fields.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AttemptFailure",
    "AttemptTimeoutError",
    "AuthenticationError",
    "ConfigurationError",
    "DefinitionError",
    "EngineClosedError",
    "EngineStoppedError",
    "ExecutionNotFoundError",
    "FunctionMissingError",
    "ImageBuildError",
    "InvalidInputError",
    "InvocationCancelledError",
    "InvocationError",
    "InvocationFailedError",
    "InvocationTimedOutError",
    "PackageNotFoundError",
    "RemoteError",
    "ReplicaDiedError",
    "ResultTooLargeError",
    "SerializationError",
    "ServiceInitError",
    "StoreRefusedError",
    "StoreUnavailableError",
    "TriggerNotFoundError",
    "TriggerfishError",
    "UnknownFunctionError",
    "invocation_error",
    "raise_for_outcome",
]

#: An error as an execution keeps it: (type name, message, traceback text).
ErrorTriple = tuple[str, str, str]


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


class StoreUnavailableError(TriggerfishError, ConnectionError):
    """The store's database server cannot be reached, or refused the login. The message names
    the server (host, port, database, user), never a password."""


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


class AttemptFailure(TriggerfishError):
    """Why the engine ended an attempt, as a kind rather than a string.

    ``stored_as`` is the ``error.type`` recorded with the execution: the class name, unless a
    name users already match on was stored before the kind had a class."""

    stored_as: ClassVar[str] = ""

    def __init__(self, message: str, traceback: str = "") -> None:
        super().__init__(message)
        self.traceback = traceback

    @classmethod
    def type_name(cls) -> str:
        return cls.stored_as or cls.__name__

    def triple(self) -> ErrorTriple:
        """The failure as the execution records it."""
        return (self.type_name(), str(self), self.traceback)


class EngineStoppedError(AttemptFailure):
    """The engine stopped (or was killed) while the attempt ran."""


class ReplicaDiedError(AttemptFailure):
    """The replica running the attempt died (or could not start)."""


class ServiceInitError(AttemptFailure):
    """The service's replicas failed to initialize, so the execution could not run."""


class AttemptTimeoutError(AttemptFailure):
    """No result and no progress within the function's timeout."""

    stored_as = "TimeoutError"


class ResultTooLargeError(AttemptFailure):
    """The pickled result is larger than the store keeps."""

    stored_as = "SerializationError"


class StoreRefusedError(AttemptFailure):
    """The store could not write the execution (a value no row can hold)."""

    stored_as = "StoreError"


class FunctionMissingError(AttemptFailure):
    """The execution's service was replaced by one without its function."""

    stored_as = "UnknownFunctionError"


def invocation_error(
    execution_id: str,
    function: str,
    status: str,
    error: ErrorTriple | None,
) -> InvocationError:
    """The InvocationError for an execution that did not succeed (or has not finished);
    ``status`` is the execution's status by its value (``"FAILED"``...)."""
    etype, emsg, etb = error or ("", "", "")
    where = f"execution {execution_id} of {function}"
    if status == "CANCELLED":
        return InvocationCancelledError(f"{where} was cancelled", execution_id=execution_id)
    if status == "TIMED_OUT":
        return InvocationTimedOutError(f"{where} timed out: {emsg}", execution_id=execution_id)
    if status == "FAILED":
        return InvocationFailedError(
            f"{where} failed: {etype}: {emsg}",
            execution_id=execution_id,
            error_type=etype,
            error_message=emsg,
            remote_traceback=etb,
        )
    return InvocationError(f"{where} has not finished ({status})", execution_id=execution_id)


#: What an unset result stands for: pickled None (protocol 2 and up all write these bytes).
PICKLED_NONE = b"\x80\x05N."


def raise_for_outcome(
    execution_id: str,
    function: str,
    status: str,
    error: ErrorTriple | None,
    result: bytes | None,
) -> bytes:
    """The pickled result of a SUCCEEDED execution; its InvocationError otherwise."""
    if status == "SUCCEEDED":
        return result or PICKLED_NONE
    raise invocation_error(execution_id, function, status, error)
