"""Trigger definitions in JSON, in Dataloop's shape, turned into trigger specs.

An event trigger::

    {"name": "on-upload", "function": "thumbnail", "resource": "Item", "actions": ["Created"],
     "filter": {"metadata.system.mimetype": "image/*"}, "executionMode": "Once", "active": true}

A cron trigger (``"type": "Cron"``, or recognised by its ``cron`` field)::

    {"name": "nightly", "function": "report", "cron": "0 5 * * *", "timezone": "Europe/Berlin",
     "startAt": "2026-01-01T00:00:00Z", "endAt": null, "input": {"days": 1}, "misfire": "skip"}

A service JSON lists its triggers under ``"triggers"``; its other fields are the service's.
Dataloop's nested form, with the trigger's fields under ``"spec"`` and its function in
``spec.operation.functionName``, is accepted too, as are the fields only Dataloop uses
(ids, owners, timestamps: left out, and named once in the log); a ``startAt`` or ``endAt``
without an offset is read in the trigger's ``timezone``. Every
problem is reported with the path of the bad field (``triggers[1].executionMode: ...``).
Filters and cron specs are validated here as well, so a definition accepted here runs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .._fields import DATALOOP_FIELDS, sort_fields, warn_ignored
from ..errors import ConfigurationError, DefinitionError
from ..models import (
    CronTriggerSpec,
    EventTriggerSpec,
    TriggerSpec,
    allowed_modes,
    definition_error,
    load_document,
)
from .cron import CronSchedule, zone
from .filters import compile_filter

__all__ = [
    "DefinitionError",
    "export_trigger",
    "parse_service_triggers",
    "parse_trigger",
    "validate_spec",
]


class _Definition(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    type: Literal["Event", "Cron", "event", "cron"] | None = None
    name: str
    function: str
    active: bool = True
    input: dict[str, Any] = Field(default_factory=dict, alias="input")
    # event triggers
    resource: str | None = None
    actions: list[str] | str | None = None
    filter: dict[str, Any] | None = None
    execution_mode: Literal["Once", "Always"] | None = Field(default=None, alias="executionMode")
    loop_limit: int | None = Field(default=None, alias="loopLimit")
    # cron triggers
    cron: str | None = None
    timezone: str | None = None
    start_at: datetime | None = Field(default=None, alias="startAt")
    end_at: datetime | None = Field(default=None, alias="endAt")
    misfire: Literal["skip", "run_once", "catch_up"] | None = None
    misfire_grace: float | None = Field(default=None, alias="misfireGrace")


def validate_spec(spec: TriggerSpec, where: str = "trigger") -> TriggerSpec:
    """Check what pydantic cannot: the filter, the cron spec and zone, the mode per action."""
    if isinstance(spec, EventTriggerSpec):
        compile_filter(spec.filter, f"{where}.filter")
        for action in spec.actions:
            if spec.execution_mode not in allowed_modes(spec.resource, action):
                raise DefinitionError(
                    f"{where}.executionMode",
                    f"{spec.execution_mode} is not allowed for {spec.resource} {action} "
                    f"(allowed: {', '.join(sorted(allowed_modes(spec.resource, action)))})",
                )
    else:
        try:
            CronSchedule.parse(spec.cron, spec.timezone, spec.start_at, spec.end_at)
        except ConfigurationError as exc:
            raise DefinitionError(f"{where}.cron", str(exc)) from None
    return spec


def parse_trigger(definition: Any, where: str = "trigger") -> TriggerSpec:
    """One trigger definition (a dict, or JSON text) as a validated spec."""
    definition = load_document(definition, where)
    if not isinstance(definition, dict):
        raise DefinitionError(where, "a trigger definition must be a JSON object")
    if isinstance(definition.get("spec"), dict):  # Dataloop's nested form
        definition = {**{k: v for k, v in definition.items() if k != "spec"}, **definition["spec"]}
    ignored: list[str] = []
    definition = _operation(definition, where, ignored)
    definition = sort_fields(definition, _Definition, where, ignored)
    try:
        parsed = _Definition.model_validate(definition)
    except ValidationError as exc:
        raise definition_error(where, exc) from None
    warn_ignored(where, ignored)
    is_cron = (parsed.type or "").lower() == "cron" or (parsed.type is None and parsed.cron)
    fields: dict[str, Any] = {
        "name": parsed.name,
        "function": parsed.function,
        "active": parsed.active,
        "input": parsed.input,
    }
    if is_cron:
        if parsed.resource or parsed.actions or parsed.execution_mode:
            raise DefinitionError(where, "a cron trigger has no resource, actions or executionMode")
        optional: dict[str, Any] = {
            "cron": parsed.cron or "",
            "timezone": parsed.timezone,
            "start_at": _in_zone(parsed.start_at, parsed.timezone, where),
            "end_at": _in_zone(parsed.end_at, parsed.timezone, where),
            "misfire": parsed.misfire,
            "misfire_grace": parsed.misfire_grace,
        }
        model: type[CronTriggerSpec] | type[EventTriggerSpec] = CronTriggerSpec
    else:
        if parsed.resource is None:
            raise DefinitionError(f"{where}.resource", "an event trigger needs a resource")
        if parsed.actions is None:
            raise DefinitionError(f"{where}.actions", "an event trigger needs actions")
        actions = [parsed.actions] if isinstance(parsed.actions, str) else parsed.actions
        optional = {
            "resource": parsed.resource,
            "actions": tuple(actions),
            "filter": parsed.filter,
            "execution_mode": parsed.execution_mode,
            "loop_limit": parsed.loop_limit,
        }
        model = EventTriggerSpec
    fields.update({k: v for k, v in optional.items() if v is not None})
    try:
        spec: TriggerSpec = model.model_validate(fields)
    except ValidationError as exc:
        raise definition_error(where, exc) from None
    return validate_spec(spec, where)


def _operation(definition: dict[str, Any], where: str, ignored: list[str]) -> dict[str, Any]:
    """Dataloop's ``operation`` (what its SDK posts: ``{"type": "function", "serviceId": ...,
    "functionName": "run"}``) read as the trigger's ``function``."""
    operation = definition.get("operation")
    if operation is None:
        return definition
    here = f"{where}.operation"
    if not isinstance(operation, dict):
        raise DefinitionError(here, "must be an object, such as {'functionName': 'run'}")
    kind = operation.get("type", "function")
    if kind != "function":
        raise DefinitionError(f"{here}.type", f"only 'function' runs here, not {kind!r}")
    name = operation.get("functionName")
    if not isinstance(name, str) or not name:
        raise DefinitionError(f"{here}.functionName", "names the function the trigger runs")
    given = definition.get("function")
    if given is not None and given != name:
        raise DefinitionError(
            f"{here}.functionName", f"{name!r} is not the trigger's function {given!r}"
        )
    for key in operation:
        if key not in ("type", "functionName"):
            if key not in DATALOOP_FIELDS:
                raise DefinitionError(f"{here}.{key}", "unknown field (known: type, functionName)")
            ignored.append(f"{here}.{key}")
    rest = {k: v for k, v in definition.items() if k != "operation"}
    return {**rest, "function": name}


def _in_zone(moment: datetime | None, timezone: str | None, where: str) -> datetime | None:
    """A time written without an offset (as Dataloop's own example writes ``startAt``: a
    naive ``isoformat()``) is read in the trigger's time zone (UTC if it has none)."""
    if moment is None or moment.tzinfo is not None:
        return moment
    try:
        return moment.replace(tzinfo=zone(timezone or "UTC"))
    except ConfigurationError as exc:
        raise DefinitionError(f"{where}.timezone", str(exc)) from None


def export_trigger(spec: TriggerSpec) -> dict[str, Any]:
    """A trigger as Dataloop's JSON, in the nested form its SDK posts (the function in
    ``spec.operation.functionName``); ``parse_trigger`` reads it back as the same spec.
    Fields Dataloop has not (``timezone``, ``misfire``, ``loopLimit``) are kept in ``spec``."""
    operation = {"type": "function", "functionName": spec.function}
    inner: dict[str, Any]
    if isinstance(spec, EventTriggerSpec):
        inner = {"resource": spec.resource, "actions": list(spec.actions)}
        if spec.filter is not None:
            inner["filter"] = spec.filter
        inner |= {"executionMode": spec.execution_mode, "input": spec.input}
        if spec.loop_limit:
            inner["loopLimit"] = spec.loop_limit
        kind = "Event"
    else:
        inner = {
            "cron": spec.cron,
            "timezone": spec.timezone,
            "startAt": spec.start_at.isoformat() if spec.start_at else None,
            "endAt": spec.end_at.isoformat() if spec.end_at else None,
            "input": spec.input,
            "misfire": spec.misfire,
            "misfireGrace": spec.misfire_grace,
        }
        kind = "Cron"
    return {
        "name": spec.name,
        "type": kind,
        "active": spec.active,
        "spec": {**inner, "operation": operation},
    }


def parse_service_triggers(service: Any) -> list[TriggerSpec]:
    """The triggers a service JSON lists (``service.triggers``), each validated."""
    service = load_document(service, "service")
    if not isinstance(service, dict):
        raise DefinitionError("service", "a service definition must be a JSON object")
    triggers = service.get("triggers", [])
    if not isinstance(triggers, list):
        raise DefinitionError("service.triggers", "must be an array of trigger definitions")
    return [parse_trigger(t, f"service.triggers[{i}]") for i, t in enumerate(triggers)]
