"""Packages and the services deployed from them.

A package revision is immutable: its package.json and its codebase zip, stored once. A deploy
pins one revision (``"latest"`` is resolved then) and makes the next version of the service.

In the engine, every revision a service has pinned runs as a service of its own, named
``<service>@<revision>`` with functions ``<service>.<function>@<revision>``. The plain name
``<service>.<function>`` is an alias resolved at submit time to the current version's
revision, so a deploy never strands work already queued on an older revision, and an older
revision can still be invoked by its pinned name. Older revisions keep no warm replicas
(minimum 0): they start on demand and stop when idle. An execution's function is the pinned
name, so it records which revision ran it.

Codebases are extracted once per content (sha256) below the codebase directory and replicas
import them from there.
"""

from __future__ import annotations

import pickle
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import anyio
import anyio.abc
import anyio.to_thread

from ..errors import DefinitionError, TriggerfishError, UnknownFunctionError
from ..log import logger
from ..models import (
    Deployment,
    FunctionOptions,
    FunctionSpec,
    ModuleDefinition,
    PackageDefinition,
    PackageRevision,
    ServiceDefinition,
    ServiceSpec,
    ServiceStatus,
)
from ..store.abc import Channel, Store
from . import codebase
from .core import EngineCore, Service
from .told import Told

__all__ = ["DeploymentManager", "pinned"]

Revision = int | Literal["latest"]


def pinned(name: str, revision: int) -> str:
    """A service or function name pinned to a package revision: ``resizer.resize@2``."""
    return f"{name}@{revision}"


def find_revision(
    revisions: Sequence[PackageRevision], name: str, wanted: Revision
) -> PackageRevision:
    """The wanted revision of a package (``"latest"``: the newest)."""
    if not revisions:
        raise DefinitionError("packageName", f"no package named {name!r} was pushed")
    if wanted == "latest":
        return revisions[-1]
    for revision in revisions:
        if revision.revision == wanted:
            return revision
    raise DefinitionError(
        "packageRevision",
        f"package {name!r} has no revision {wanted} (it has 1 to {revisions[-1].revision})",
    )


def _check_module(definition: ServiceDefinition, module: ModuleDefinition) -> None:
    """What the package says the service may set: init params and per-function options."""
    declared = {i.name for i in module.init_inputs}
    for key in definition.init_params:
        if key not in declared:
            offered = ", ".join(sorted(declared)) or "none"
            raise DefinitionError(
                f"initParams.{key}",
                f"not an init input of module {module.name!r} (its initInputs: {offered})",
            )
    functions = {f.name for f in module.functions}
    for key in definition.functions:
        if key not in functions:
            raise DefinitionError(
                f"functions.{key}", f"module {module.name!r} has no function {key!r}"
            )


def _service(
    deployment: Deployment, module: ModuleDefinition, path: Path, current: bool
) -> Service:
    definition = deployment.definition
    autoscaler = definition.runtime.autoscaler
    spec = ServiceSpec.build(
        name=pinned(deployment.name, deployment.revision),
        min_replicas=autoscaler.min_replicas if current else 0,
        max_replicas=autoscaler.max_replicas,
        concurrency=definition.runtime.concurrency,
        idle_timeout=autoscaler.cooldown_period,
        init_params=definition.init_params,
        runtime="docker" if definition.runtime.runner_image else "process",
        image=definition.runtime.runner_image or None,
    )
    functions: dict[str, FunctionSpec] = {}
    targets: dict[str, str] = {}
    for function in module.functions:
        options = definition.functions.get(function.name, FunctionOptions())
        fields = {
            "timeout": options.timeout or definition.execution_timeout,
            "max_attempts": options.max_attempts or definition.max_attempts,
            "max_concurrency": options.max_concurrency,
        }
        name = pinned(f"{deployment.name}.{function.name}", deployment.revision)
        functions[name] = FunctionSpec.build(
            name=name,
            service=spec.name,
            description=function.description,
            **{k: v for k, v in fields.items() if v is not None},
        )
        targets[name] = function.name
    payload = {
        "kind": "codebase",
        "path": str(path),
        "entry_point": module.entry_point,
        "class_name": module.class_name,
        "init_params": dict(definition.init_params),
        "functions": targets,
        "concurrency": spec.concurrency,
    }
    blob = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    return Service(spec, functions, blob, code_paths=(str(path),))


class DeploymentManager:
    """Pushes package revisions and deploys, pauses and resumes services, on one engine.

    ``codebase_dir`` is where codebases are extracted; None: a temporary directory removed
    when the engine stops. Deployed services come back when the engine starts again, before
    unfinished executions are taken back, so those run.
    """

    def __init__(self, core: EngineCore, codebase_dir: Path | None) -> None:
        self.core = core
        # Absolute: a replica changes its working directory to the codebase it loads.
        self._codebase_dir = codebase_dir.absolute() if codebase_dir is not None else None
        self._temporary: Path | None = None
        self.current: dict[str, Deployment] = {}
        self.paused: set[str] = set()
        self._lock = anyio.Lock()
        self._changed = Told()  # services other engines deployed, paused or resumed
        core.on_start(self._restore)
        core.on_stop(self._forget)
        core.store.hear(Channel.SERVICES, self._changed.add)
        core.in_background(self._hear_changes)

    @property
    def store(self) -> Store:
        return self.core.store

    # -- packages -------------------------------------------------------------------------

    async def add_revision(self, package: PackageDefinition, data: bytes | None) -> PackageRevision:
        """Store the next revision of a package with the codebase zip ``data`` (None: the
        latest revision's), once every module's entry point is known to be in it."""
        self.core.check_running()
        if data is None:
            revisions = await self.store.package_revisions(package.name)
            if not revisions:
                raise DefinitionError("name", f"no package named {package.name!r} was pushed")
            data = await self.codebase(revisions[-1])
        # Checking inflates every member (seconds for a big one): in a thread, off the loop.
        names = set(await anyio.to_thread.run_sync(codebase.check_zip, data))
        for index, module in enumerate(package.modules):
            if module.entry_point not in names:
                shown = ", ".join(sorted(n for n in names if n.endswith(".py"))[:10]) or "none"
                raise DefinitionError(
                    f"modules[{index}].entryPoint",
                    f"{module.entry_point!r} is not in the codebase (its Python files: {shown})",
                )
        revision = await self.store.add_package_revision(package, data, time.time())
        logger.info("package_pushed", package=package.name, revision=revision.revision)
        return revision

    async def revisions(self, name: str) -> list[PackageRevision]:
        self.core.check_running()
        return await self.store.package_revisions(name)

    async def revision(self, name: str, wanted: Revision) -> PackageRevision:
        """A revision of a package (``"latest"``: the newest); DefinitionError if none."""
        return find_revision(await self.store.package_revisions(name), name, wanted)

    async def codebase(self, revision: PackageRevision) -> bytes:
        data = await self.store.codebase(revision.codebase_sha256)
        if data is None:
            raise LookupError(
                f"the codebase of {revision.name} revision {revision.revision} is lost"
            )
        return data

    # -- deploying ------------------------------------------------------------------------

    async def deploy(
        self, definition: ServiceDefinition, trigger_functions: Sequence[tuple[str, str]] = ()
    ) -> Deployment:
        """Deploy a new version of a service: resolve and pin its package revision, check the
        service against the package, extract the codebase, store the version and run it.
        ``trigger_functions`` are (field path, function name) of the triggers that will name
        functions of the module, checked here so that a bad one refuses the deploy."""
        self.core.check_running()
        async with self._lock:
            chosen = await self.revision(definition.package_name, definition.package_revision)
            module = chosen.package.module(definition.module_name)
            _check_module(definition, module)
            functions = {f.name for f in module.functions}
            for where, function in trigger_functions:
                if function not in functions:
                    raise DefinitionError(
                        where, f"module {module.name!r} has no function {function!r}"
                    )
            name = definition.name
            for function in functions:
                alias = f"{name}.{function}"
                if alias in self.core.functions:
                    raise DefinitionError("name", f"a function named {alias!r} is registered")
            if name not in self.current and any(
                s.rpartition("@")[0] == name for s in self.core.services
            ):
                raise DefinitionError("name", f"a service named {name!r} is registered")
            await self._extract(chosen)  # a codebase that cannot be extracted refuses the deploy
            deployment = await self.store.add_service_version(
                definition, module.name, chosen.revision, time.time()
            )
            previous = self.current.get(name)
            await self._run(deployment, current=True)
            if previous is not None and previous.revision != deployment.revision:
                self.core.set_min_replicas(pinned(name, previous.revision), 0)
            logger.info(
                "service_deployed",
                service=name,
                version=deployment.version,
                package=deployment.package,
                revision=deployment.revision,
            )
            return deployment

    async def _run(self, deployment: Deployment, *, current: bool) -> None:
        revision = await self.revision(deployment.package, deployment.revision)
        module = revision.package.module(deployment.module)
        path = await self._extract(revision)
        service = _service(deployment, module, path, current)
        if deployment.name in self.paused:
            self.core.set_inactive([service.spec.name], True)
        await self.core.install(service)
        if current:
            self.current[deployment.name] = deployment
            prefix = f"{deployment.name}."
            aliases = {
                prefix + f.name: pinned(prefix + f.name, deployment.revision)
                for f in module.functions
            }
            self.core.registry.point(aliases, prefix=prefix)

    async def _extract(self, revision: PackageRevision) -> Path:
        if self._codebase_dir is None and self._temporary is None:
            self._temporary = Path(tempfile.mkdtemp(prefix="triggerfish-codebases-"))
        root = self._codebase_dir or self._temporary
        assert root is not None
        target = root / revision.codebase_sha256
        if target.is_dir():
            return target
        data = await self.codebase(revision)
        return await anyio.to_thread.run_sync(codebase.extract, data, target)

    async def _restore(self) -> None:
        """Run every revision the stored services pin (the current one of each service with
        its replicas, older ones from zero), before the engine takes back its executions."""
        versions = await self.store.service_versions()
        self.paused = await self.store.inactive_services()
        by_name: dict[str, list[Deployment]] = {}
        for deployment in versions:
            by_name.setdefault(deployment.name, []).append(deployment)
        for deployments in by_name.values():
            current = deployments[-1]
            latest_per_revision = {d.revision: d for d in deployments}
            for revision, deployment in sorted(latest_per_revision.items()):
                if revision != current.revision:
                    await self._run(deployment, current=False)
            await self._run(current, current=True)
        if by_name:
            logger.info("services_restored", services=sorted(by_name))

    async def _hear_changes(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Run here what other engines on a shared store deployed, and pause and resume what
        they did (a store out of reach, or a version that cannot run here, is logged)."""
        task_status.started()
        while True:
            changed = await self._changed.take()
            try:
                await self._follow(changed)
            except (TriggerfishError, OSError, LookupError) as exc:
                logger.error("service_change_not_followed", error=str(exc))

    async def _follow(self, names: set[str] | None) -> None:
        versions = await self.store.service_versions()
        paused = await self.store.inactive_services()
        latest: dict[str, Deployment] = {}
        for deployment in versions:
            if names is None or deployment.name in names:
                latest[deployment.name] = deployment
        async with self._lock:
            for name, deployment in sorted(latest.items()):
                was_paused, now_paused = name in self.paused, name in paused
                if now_paused != was_paused:
                    self.paused.discard(name) if not now_paused else self.paused.add(name)
                    self.core.set_inactive(self._engine_services(name), now_paused)
                    logger.info(
                        "service_paused_elsewhere" if now_paused else "service_resumed_elsewhere",
                        service=name,
                    )
                previous = self.current.get(name)
                if previous is not None and previous.version >= deployment.version:
                    continue
                await self._run(deployment, current=True)
                if previous is not None and previous.revision != deployment.revision:
                    self.core.set_min_replicas(pinned(name, previous.revision), 0)
                logger.info("service_deployed_elsewhere", service=name, version=deployment.version)

    async def _forget(self) -> None:
        if self._temporary is not None:
            await anyio.to_thread.run_sync(shutil.rmtree, self._temporary, True)
            self._temporary = None

    # -- running services -----------------------------------------------------------------

    def deployment(self, name: str) -> Deployment:
        """The current version of a deployed service."""
        try:
            return self.current[name]
        except KeyError:
            known = ", ".join(sorted(self.current)) or "none"
            raise UnknownFunctionError(
                f"no service named {name!r} is deployed (deployed: {known})"
            ) from None

    async def versions(self, name: str) -> list[Deployment]:
        self.deployment(name)
        return await self.store.service_versions(name)

    def _engine_services(self, name: str) -> list[str]:
        return [s for s in self.core.services if s.rpartition("@")[0] == name]

    async def set_active(self, name: str, active: bool) -> None:
        """Pause (Inactive) or resume a deployed service, every revision of it; kept across
        restarts."""
        self.core.check_running()
        self.deployment(name)
        await self.store.set_service_active(name, active)
        if active:
            self.paused.discard(name)
        else:
            self.paused.add(name)
        self.core.set_inactive(self._engine_services(name), not active)
        logger.info("service_resumed" if active else "service_paused", service=name)

    def status(self, name: str) -> ServiceStatus:
        current = self.deployment(name)
        status = self.core.service_status(pinned(name, current.revision))
        return status.model_copy(update={"name": name})
