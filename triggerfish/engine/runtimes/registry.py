"""Runtimes by name: what a service's ``runtime`` field can say, and how each is made.

A runtime is a module with a ``Runtime`` class and one line here: ``register_runtime(name,
"module:factory")``. A factory takes the engine's id (which names what a runtime leaves
behind it, such as containers) and returns a Runtime. Factories named by path are imported on
first use, so a runtime's dependencies (aiodocker for containers) load only where a service
runs on it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import Any

from ...errors import ConfigurationError
from .abc import Runtime

RuntimeFactory = Callable[[str], Runtime]

_FACTORIES: dict[str, RuntimeFactory | str] = {}


def register_runtime(name: str, factory: RuntimeFactory | str) -> None:
    """Make ``name`` a runtime services can name: ``factory(engine_id)`` makes it, or
    ``"module:attribute"`` names that factory, imported when first made."""
    if not name or not name.isidentifier():
        raise ConfigurationError(f"a runtime name must be an identifier, not {name!r}")
    _FACTORIES[name] = factory


def runtime_names(extra: Iterable[str] = ()) -> list[str]:
    return sorted({*_FACTORIES, *extra})


def make_runtime(name: str, engine_id: str) -> Runtime:
    """A new runtime of the kind ``name``; ConfigurationError naming the known kinds."""
    factory = _FACTORIES.get(name)
    if factory is None:
        raise ConfigurationError(f"no runtime named {name!r} (known: {', '.join(runtime_names())})")
    if isinstance(factory, str):
        module, _, path = factory.partition(":")
        found: Any = importlib.import_module(module)
        for attribute in path.split("."):
            found = getattr(found, attribute)
        factory = _FACTORIES[name] = found
    return factory(engine_id)


register_runtime("process", "triggerfish.engine.runtimes.process:ProcessRuntime.for_engine")
register_runtime("docker", "triggerfish.engine.runtimes.docker:DockerRuntime")
register_runtime("swarm", "triggerfish.engine.runtimes.swarm:SwarmRuntime")
register_runtime("fake", "triggerfish.testing:FakeRuntime.for_engine")  # in-process, for tests
