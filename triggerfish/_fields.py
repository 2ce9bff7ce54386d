"""The fields of a JSON definition (package, service, trigger) as Dataloop writes them.

A definition exported from Dataloop, or written by its SDK, carries fields that only mean
something there: ids, owners, timestamps, URLs, the project it lives in. Those are accepted
and left out, and each definition that had some is named once in the log
(``definition_fields_ignored``), with their paths. Any other field the definition does not
know is refused, naming its path and the closest known name, so that a typo shows:
``runtime.concurency: unknown field (did you mean concurrency?)``.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from .errors import DefinitionError
from .log import logger

__all__ = ["DATALOOP_FIELDS", "known_fields", "sort_fields", "warn_ignored"]

#: Fields Dataloop writes on its entities (packages, modules, functions, services, runtimes,
#: autoscalers, triggers, executions) that triggerfish has no use for.
DATALOOP_FIELDS = frozenset(
    {
        "id",
        "url",
        "org",
        "projectId",
        "project",
        "creator",
        "createdAt",
        "updatedAt",
        "botUserName",
        "bot",
        "isGlobal",
        "global",
        "mq",
        "versions",
        "revisions",
        "useUserJwt",
        "driverId",
        "archive",
        "config",
        "secrets",
        "integrations",
        "metadata",
        "appId",
        "app",
        "dpkName",
        "scope",
        "serviceId",
        "serviceName",
        "packageId",
        "pipelineId",
        "codebase",
        "codebaseId",
        "artifacts",
        "requirements",
        "ui",
        "slots",
        "context",
        "displayTags",
        "preemptible",
        "drainTime",
        "onReset",
        "runExecutionAsProcess",
        "singleAgent",
        "numReplicas",
        "queueRate",
        "duration",
        "integration",
        "actions_defaults",
        "statusLog",
        "latestStatus",
        "feedbackQueue",
        "version",
        "type",
    }
)


def known_fields(model: type[BaseModel]) -> dict[str, Any]:
    """The names a model reads (each field's alias and its own name), with its annotation."""
    known: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        known[name] = field.annotation
        if field.alias:
            known[field.alias] = field.annotation
    return known


def _nested_model(annotation: Any) -> tuple[str, type[BaseModel]] | None:
    """Where a field holds definitions of a model: ("one", M) for an M (or M | None),
    ("each", M) for a tuple or list of M, ("values", M) for a dict of M."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _nested_model(arg)
            if found is not None:
                return found
        return None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return ("one", annotation)
    args = typing.get_args(annotation)
    if origin in (tuple, list) and args and _model(args[0]):
        return ("each", args[0])
    if origin is dict and len(args) == 2 and _model(args[1]):
        return ("values", args[1])
    return None


def _model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def sort_fields(document: Any, model: type[BaseModel], where: str, ignored: list[str]) -> Any:
    """``document`` without the fields ``model`` (and the models nested in it) does not
    know: Dataloop's own are left out and their paths added to ``ignored``; any other raises
    DefinitionError naming its path and the closest known name. Anything but an object is
    left to the model's own validation."""
    if not isinstance(document, Mapping):
        return document
    known = known_fields(model)
    kept: dict[str, Any] = {}
    for key, value in document.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in known:
            if key in DATALOOP_FIELDS:
                ignored.append(path)
                continue
            raise DefinitionError(path, _unknown(str(key), model))
        nested = _nested_model(known[key])
        if nested is not None:
            how, inner = nested
            if how == "one":
                value = sort_fields(value, inner, path, ignored)
            elif how == "each" and isinstance(value, list | tuple):
                value = [
                    sort_fields(v, inner, f"{path}[{i}]", ignored) for i, v in enumerate(value)
                ]
            elif how == "values" and isinstance(value, Mapping):
                value = {k: sort_fields(v, inner, f"{path}.{k}", ignored) for k, v in value.items()}
        kept[key] = value
    return kept


def _unknown(key: str, model: type[BaseModel]) -> str:
    names = sorted(field.alias or name for name, field in model.model_fields.items())
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    if close:
        return f"unknown field (did you mean {close[0]}?)"
    return f"unknown field (known: {', '.join(names)})"


def warn_ignored(where: str, ignored: list[str]) -> None:
    """One line in the log for a definition whose Dataloop fields were left out."""
    if ignored:
        logger.warning("definition_fields_ignored", definition=where, fields=ignored)
