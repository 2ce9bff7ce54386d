"""The HTTP API's bodies: what requests carry and responses return, as pydantic models.

Executions, triggers, statuses and events reuse the models of ``triggerfish.models``; these
are the shapes only the API has. Results travel as JSON when they can, cut when too long, else
described (``result_encoding`` says which: see ``views.py``); a client that sends
``Accept: application/x-python-pickle`` gets the pickled result itself instead.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..models import ErrorInfo, ExecutionStatus, LogEntry, StatusChange

PICKLE = "application/x-python-pickle"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CallInput(_Body):
    """The arguments of one call, as JSON."""

    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)


class BatchInput(_Body):
    """Several calls of one function, started in one commit."""

    inputs: list[CallInput] = Field(min_length=1, max_length=100_000)


class ExecutionIds(_Body):
    execution_ids: list[str]


class RerunRequest(_Body):
    execution_ids: list[str] | None = None


class EventIn(_Body):
    """An event to publish: ``{"resource": "Item", "action": "Created", "body": {...}}``."""

    resource: str = Field(min_length=1, max_length=200)
    action: str = Field(min_length=1, max_length=200)
    body: Any = None
    resource_id: str | None = Field(default=None, max_length=1000)


class ExecutionView(_Body):
    """An execution as the API shows it."""

    id: str
    function: str
    service: str
    status: ExecutionStatus
    result: Any = None
    result_encoding: Literal["json", "truncated", "repr"] | None = None
    result_size: int | None = None
    error: ErrorInfo | None = None
    attempts: int
    max_attempts: int
    num_failed_attempts: int
    progress: int | None = None
    status_log: list[StatusChange] = Field(default_factory=list)
    parent_id: str | None = None
    trigger_id: str | None = None
    event: dict[str, Any] | None = None
    lineage: list[str] = Field(default_factory=list)
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration: float | None = None
    terminated: bool
    engine_id: str | None = None  # the engine that owns it: that runs it, or ran it last


class ExecutionList(_Body):
    """A page of executions, newest first; pass ``offset`` back for the next page."""

    executions: list[ExecutionView]
    offset: str | None = None


class Outcome(_Body):
    """Where an execution stands, with its result or error once it has finished."""

    id: str
    status: ExecutionStatus
    finished: bool
    result: Any = None
    result_encoding: Literal["json", "truncated", "repr"] | None = None
    result_size: int | None = None
    error: ErrorInfo | None = None


class FunctionInfo(_Body):
    name: str
    service: str
    description: str = ""
    timeout: float
    max_attempts: int
    max_concurrency: int | None = None
    input_serializer: Literal["json", "pickle"]
    output_serializer: Literal["json", "pickle"]
    application: bool = False


class Problem(_Body):
    """Every error response: one line saying what is wrong, and for the errors of the
    engine's exception tree, the name of the error (``UnknownFunctionError``...)."""

    detail: str
    error: str | None = None


class Logs(_Body):
    logs: list[LogEntry]
