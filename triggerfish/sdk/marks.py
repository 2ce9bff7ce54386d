"""Decorators user code imports: standard library only, so a module that uses them also
imports inside a replica's container, where only the runner's packages are mounted."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

METHOD_MARK = "__triggerfish_method__"


def method(fn: F | None = None, /, **spec: Any) -> Any:
    """Mark a method of a class service as an invocable function, with its own spec
    (timeout, max_attempts...). The method is returned unchanged."""

    def mark(target: F) -> F:
        setattr(target, METHOD_MARK, dict(spec))
        return target

    return mark(fn) if fn is not None else mark
