"""Packages with immutable revisions, and services deployed from them (Dataloop's shapes).

``engine.packages`` pushes a codebase (a directory, or zip bytes) with its package.json as the
next revision of a package; ``engine.deployments`` deploys a service JSON from a package
revision, pauses and resumes it. A deployed function is invoked as ``"<service>.<function>"``
(the current version's revision) or ``"<service>.<function>@<revision>"`` (that revision).
"""

from __future__ import annotations

import builtins
from pathlib import Path
from typing import Any, Literal

import anyio.to_thread

from ..engine import codebase
from ..engine.deployments import DeploymentManager
from ..errors import DefinitionError
from ..models import (
    Deployment,
    PackageDefinition,
    PackageRevision,
    ServiceDefinition,
    ServiceStatus,
    TriggerSpec,
    load_document,
)
from ..triggers.definitions import parse_trigger
from .triggers import Triggers

Revision = int | Literal["latest"]
Document = dict[str, Any] | str | bytes


class Packages:
    """The packages of an engine, kept in its store. Needs the engine running."""

    def __init__(self, manager: DeploymentManager) -> None:
        self._manager = manager

    async def push(
        self, source: str | Path | bytes, package_json: Document | None = None
    ) -> PackageRevision:
        """Store a codebase as the next revision of its package (1 for a new one).

        ``source`` is a directory, zipped here deterministically (without __pycache__, .git
        and .pyc files), or the bytes of a zip, kept as they are. ``package_json`` defaults to
        the codebase's own ``package.json``. Every module's ``entryPoint`` must be a file of
        the codebase. A bad field raises DefinitionError naming its path
        (``modules[0].entryPoint``); an unsafe or oversized zip raises ConfigurationError.
        """
        if isinstance(source, bytes | bytearray):
            data = bytes(source)
        else:
            data = await anyio.to_thread.run_sync(codebase.zip_directory, source)
        # The zip is checked where the revision is added (inflating every member, in a
        # thread); package.json is read here, at most a small size, also off the loop.
        if package_json is None:
            package_json = await anyio.to_thread.run_sync(
                codebase.read_member, data, "package.json"
            )
            if package_json is None:
                raise DefinitionError(
                    "package.json", "the codebase has none at its root; pass package_json"
                )
        package = PackageDefinition.parse(package_json)
        return await self._manager.add_revision(package, data)

    async def update(self, name: str, package_json: Document) -> PackageRevision:
        """A new revision of package ``name`` with this package.json and the codebase of its
        latest revision (for changes to the definition only)."""
        package = PackageDefinition.parse(package_json)
        if package.name != name:
            raise DefinitionError("name", f"is {package.name!r}; an update of {name!r} keeps it")
        return await self._manager.add_revision(package, None)

    async def get(self, name: str, revision: Revision = "latest") -> PackageRevision:
        self._manager.core.check_running()
        return await self._manager.revision(name, revision)

    async def revisions(self, name: str) -> builtins.list[PackageRevision]:
        """Every revision of a package, oldest first (empty for an unknown name)."""
        return await self._manager.revisions(name)

    async def list(self) -> builtins.list[PackageRevision]:
        """The latest revision of every package, by name."""
        self._manager.core.check_running()
        store = self._manager.store
        return [(await store.package_revisions(n))[-1] for n in await store.package_names()]

    async def codebase(self, name: str, revision: Revision = "latest") -> bytes:
        """The codebase zip of a revision, as it was stored."""
        return await self._manager.codebase(await self.get(name, revision))


def _qualified(spec: TriggerSpec, service: str) -> TriggerSpec:
    """A service's trigger names a function of the service: ``resize`` -> ``resizer.resize``."""
    function = spec.function.removeprefix(f"{service}.")
    return spec.model_copy(update={"function": f"{service}.{function}"})


class Deployments:
    """The services deployed from packages on an engine. Needs the engine running.

    A service is named by its ``name``; its state is Active, Inactive (paused), Initializing
    or Error (with the init error of its replicas).
    """

    def __init__(self, manager: DeploymentManager, triggers: Triggers) -> None:
        self._manager = manager
        self._triggers = triggers

    async def deploy(
        self, definition: ServiceDefinition | Document | None = None, /, **fields: Any
    ) -> Deployment:
        """Deploy a service JSON (a dict, JSON text, or keyword arguments in Dataloop's names:
        ``name``, ``packageName``, ``packageRevision``, ``moduleName``, ``initParams``,
        ``runtime``, ``executionTimeout``, ``maxAttempts``, ``functions``, ``triggers``).

        ``packageRevision`` ("latest" by default) is resolved now and pinned. Deploying a
        service that exists makes its next version; deploying an older revision is a rollback.
        Its triggers (whose ``function`` names a function of the module) are applied by name
        once it runs. Returns the version, stored.
        """
        if isinstance(definition, ServiceDefinition):
            service = definition.model_copy(update=fields) if fields else definition
        else:
            document = {} if definition is None else load_document(definition, "service")
            if not isinstance(document, dict):
                raise DefinitionError("service", "a service definition must be a JSON object")
            service = ServiceDefinition.parse({**document, **fields})
        specs = [parse_trigger(t, f"triggers[{i}]") for i, t in enumerate(service.triggers)]
        functions = [
            (f"triggers[{i}].function", spec.function.removeprefix(f"{service.name}."))
            for i, spec in enumerate(specs)
        ]
        deployment = await self._manager.deploy(service, functions)
        for spec in specs:
            await self._triggers.apply(_qualified(spec, service.name))
        return deployment

    def get(self, name: str) -> Deployment:
        """The current version of a service."""
        return self._manager.deployment(name)

    def list(self) -> builtins.list[Deployment]:
        """The current version of every deployed service, by name."""
        return [self._manager.current[n] for n in sorted(self._manager.current)]

    def export(self) -> builtins.list[dict[str, Any]]:
        """The current version of every deployed service as Dataloop's service JSON (its
        package revision pinned), which a deploy reads back as the same definition."""
        return [deployment.definition.to_json() for deployment in self.list()]

    async def versions(self, name: str) -> builtins.list[Deployment]:
        """Every version of a service, oldest first."""
        return await self._manager.versions(name)

    async def pause(self, name: str) -> ServiceStatus:
        """Inactive: no execution of it starts (queued and new ones wait, PENDING), its
        replicas stop once idle and its triggers do not fire. Kept across restarts."""
        await self._manager.set_active(name, False)
        return self.status(name)

    async def resume(self, name: str) -> ServiceStatus:
        """Active again: what waited runs, its triggers fire again."""
        await self._manager.set_active(name, True)
        return self.status(name)

    def status(self, name: str) -> ServiceStatus:
        """State (Active, Inactive, Initializing, Error with its init error) and load of the
        current version's revision."""
        return self._manager.status(name)
