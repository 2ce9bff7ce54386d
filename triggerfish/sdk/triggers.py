"""Managing triggers of a running engine: create, apply, list, change, (de)activate, delete."""

from __future__ import annotations

import builtins
import json
from pathlib import Path
from typing import Any

import anyio
from pydantic import ValidationError

from ..engine.core import EngineCore
from ..errors import ConfigurationError
from ..models import CronTriggerSpec, EventTriggerSpec, Trigger, TriggerSpec
from ..triggers.definitions import (
    DefinitionError,
    export_trigger,
    parse_service_triggers,
    parse_trigger,
)

Definition = TriggerSpec | dict[str, Any] | str


def to_spec(definition: Definition) -> TriggerSpec:
    """A spec from a spec, a dict in Dataloop's trigger format, or its JSON text."""
    if isinstance(definition, EventTriggerSpec | CronTriggerSpec):
        return definition
    return parse_trigger(definition)


def _file_named_by(source: object) -> Path | None:
    """The file a ``load`` source names: a Path, or a string that is not JSON text."""
    if isinstance(source, Path):
        return source
    if isinstance(source, str) and source.lstrip()[:1] not in ("{", "["):
        return Path(source)
    return None


class Triggers:
    """The triggers of an engine, kept in its store across restarts. A trigger is named by its
    id or its name; names are unique."""

    def __init__(self, core: EngineCore) -> None:
        self._core = core

    async def create(self, definition: Definition) -> Trigger:
        """A new trigger; refused if one with that name exists (see ``apply``)."""
        return (await self._core.put_trigger(to_spec(definition))).public()

    async def apply(self, definition: Definition) -> Trigger:
        """Create the trigger, or update the one with the same name to this definition."""
        spec = to_spec(definition)
        existing = self._core.trigger_named(spec.name)
        if existing is not None and existing.spec == spec:
            return existing.public()
        record = await self._core.put_trigger(spec, existing.id if existing else None)
        return record.public()

    async def update(self, trigger: str, /, **changes: Any) -> Trigger:
        """Change some fields of a trigger's spec (``filter=...``, ``cron=...``, ...).
        Positional-only, so a field named like the parameter is a change, not a clash."""
        current = self._core.find_trigger(trigger)
        try:
            spec = type(current.spec).model_validate({**current.spec.model_dump(), **changes})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ConfigurationError(f"trigger.{where}: {first['msg']}") from None
        return (await self._core.put_trigger(spec, current.id)).public()

    async def activate(self, trigger: str) -> Trigger:
        return await self.update(trigger, active=True)

    async def deactivate(self, trigger: str) -> Trigger:
        """Stop the trigger firing; it is kept, with its statistics."""
        return await self.update(trigger, active=False)

    async def delete(self, trigger: str) -> None:
        await self._core.delete_trigger(trigger)

    def get(self, trigger: str) -> Trigger:
        """A trigger, with its statistics (fired, suppressed and why, missed cron runs)."""
        return self._core.find_trigger(trigger).public()

    def list(self) -> builtins.list[Trigger]:
        return [t.public() for t in self._core.trigger_records.values()]

    def export(self) -> builtins.list[dict[str, Any]]:
        """Every trigger as Dataloop's JSON (the nested form its SDK posts), which ``load``
        (or ``triggerfish triggers apply``) reads back as the same triggers."""
        return [export_trigger(t.spec) for t in self._core.trigger_records.values()]

    async def load(
        self, source: str | Path | dict[str, Any] | builtins.list[Any]
    ) -> builtins.list[Trigger]:
        """Apply the triggers of a JSON file or document: one trigger, an array of them, or a
        service JSON with its ``triggers``. Every definition is checked before any is applied."""
        document: Any = source
        path = _file_named_by(source)
        if path is not None:
            try:
                document = json.loads(await anyio.Path(path).read_text())
            except OSError as exc:
                raise DefinitionError(str(source), f"cannot read: {exc}") from None
            except json.JSONDecodeError as exc:
                raise DefinitionError(str(source), f"malformed JSON: {exc}") from None
        elif isinstance(source, str):
            try:
                document = json.loads(source)
            except json.JSONDecodeError as exc:
                raise DefinitionError("definition", f"malformed JSON: {exc}") from None
        if isinstance(document, list):
            specs = [parse_trigger(d, f"triggers[{i}]") for i, d in enumerate(document)]
        elif isinstance(document, dict) and "triggers" in document:
            specs = parse_service_triggers(document)
        else:
            specs = [parse_trigger(document)]
        return [await self.apply(spec) for spec in specs]
