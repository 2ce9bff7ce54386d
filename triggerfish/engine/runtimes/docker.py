"""Replicas as containers on the local Docker engine, driven through aiodocker.

A replica is a container of the service's image running the replica runner, which is not in
the image: the host's ``triggerfish`` package and ``cloudpickle`` are bind-mounted read-only,
so any image with python3 (3.11, like the engine) works. The runner connects back to the
engine over a unix socket in a private directory mounted into the container, and speaks the
same frames as a process replica over its pipes.

Code pickled by reference (a function in an importable module rather than in ``__main__``)
must import inside the container: the directories of the engine's ``sys.path`` that hold
user code (all but the interpreter's own and its site-packages) are mounted read-only at the
same paths and put on the container's ``PYTHONPATH``, as is a deployed package's codebase.
Third-party packages that code needs must be in the image.

Containers carry labels naming the engine (``triggerfish.engine``, stable across restarts
on the same store), the service and the replica. On start the runtime removes what an
earlier run of the same engine left behind; on close, none remains; ``remove_left_by``
removes what other engines, now gone, left behind.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import aiodocker
import aiohttp
import anyio
import cloudpickle
from aiodocker.exceptions import DockerError
from anyio import CancelScope
from anyio.abc import TaskGroup, TaskStatus

from ...errors import ConfigurationError
from ...log import logger
from ...models import FunctionSpec, ServiceSpec
from ..replica import protocol
from .abc import Replica, ReplicaListener, ReplicaPlan, Runtime
from .calls import ClientCalls, remove_left
from .frames import LinkedReplica
from .images import SITE_DIR, ImageBuilder, build_log_dir, recipe_for
from .process import exit_reason
from .sockets import Expected, FrameServer

IMAGE_VARIABLE = "TRIGGERFISH_RUNNER_IMAGE"
DEFAULT_IMAGE = "triggerfish/python:3"
LABEL_ENGINE = "triggerfish.engine"
LABEL_SERVICE = "triggerfish.service"
LABEL_REPLICA = "triggerfish.replica"
_LIB = "/opt/triggerfish/lib"  # where the runner's packages are mounted in a container
_SOCKET_DIR = "/run/triggerfish"
_SOCKET_NAME = "engine.sock"
_START_TIMEOUT = 60.0
_LAUNCH_TRIES = 3
_EXIT_GRACE = 1.0  # between the socket's end and the container's, before it is killed
_API_TIMEOUT = 10.0
_GIB = 1 << 30
_STDERR_LINES = 40
_DOCKER_ERRORS = (DockerError, aiohttp.ClientError, OSError, ValueError)
# Host directories never mounted over a container's own.
_SYSTEM_DIRS = ("/bin", "/boot", "/dev", "/etc", "/lib", "/proc", "/run", "/sys", "/usr")


def default_image() -> str:
    return os.environ.get(IMAGE_VARIABLE) or DEFAULT_IMAGE


def image_for(
    service: ServiceSpec, functions: Mapping[str, FunctionSpec], default: str | None = None
) -> str:
    """The image a replica of ``service`` runs: the one the service or its functions name
    (they must agree: one replica serves them all), else ``default``. The one place that
    decides it, where a build step for ``requirements`` would plug in."""
    named = {f.image for f in functions.values() if f.image}
    if service.image:
        named.add(service.image)
    if len(named) > 1:
        raise ConfigurationError(
            f"service {service.name!r} names different images ({', '.join(sorted(named))}): "
            "one replica serves all its functions, so they must run in one image"
        )
    return named.pop() if named else (default or default_image())


class Resources(NamedTuple):
    """A replica's limits: the most any of its service's functions asks for."""

    cpu: float
    memory: float  # GiB
    ephemeral_disk: float  # GiB
    gpu: str | None


def resources_for(functions: Mapping[str, FunctionSpec]) -> Resources:
    specs = list(functions.values())
    return Resources(
        cpu=max(f.cpu for f in specs),
        memory=max(f.memory for f in specs),
        ephemeral_disk=max(f.ephemeral_disk for f in specs),
        gpu=next((f.gpu for f in specs if f.gpu), None),
    )


def user_code_dirs() -> list[str]:
    """The directories of ``sys.path`` that may hold user code: not the interpreter's own,
    not site-packages, not a system directory, not a zip file."""
    prefixes = (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)
    excluded = [os.path.abspath(p) for p in prefixes] + list(_SYSTEM_DIRS)
    found: list[str] = []
    for entry in sys.path:
        path = os.path.abspath(entry or os.getcwd())
        if (
            path in ("/", "/tmp")  # the container's own /tmp is a tmpfs
            or path in found
            or "site-packages" in path
            or "dist-packages" in path
            or any(path == d or path.startswith(d + os.sep) for d in excluded)
            or not os.path.isdir(path)
        ):
            continue
        found.append(path)
    return found


def _client(url: str) -> aiodocker.Docker:
    """A Docker client for ``url``. Over a unix socket, each request has its own connection:
    a reused idle one can be found closed by the Docker engine just as a request goes out
    ("Server disconnected"), and a connection costs next to nothing there."""
    if not url.startswith("unix://"):
        return aiodocker.Docker(url=url)
    connector = aiohttp.UnixConnector(url.removeprefix("unix://"), force_close=True)
    docker = aiodocker.Docker(url=url, connector=connector)
    docker.docker_host = "unix://localhost"  # as aiodocker names a unix socket's host
    return docker


async def _close(docker: aiodocker.Docker) -> None:
    await docker.close()
    await docker.connector.close()  # ours when we gave it; closing twice is harmless


def _exit_words(code: int | None, oom: bool, memory: float) -> str:
    if oom:
        return f"killed by the OOM killer (memory limit {memory:g} GiB)"
    if code is not None and code > 128:
        return exit_reason(128 - code)  # a shell's way of saying "killed by signal N"
    return exit_reason(code)


class ContainerReplica(LinkedReplica):
    def __init__(
        self,
        replica_id: str,
        container: Any,
        expected: Expected,
        listener: ReplicaListener,
        memory: float,
        live: set[ContainerReplica],
    ) -> None:
        """``live``: the runtime's replicas, which this one is in from its launch until its
        container is removed (the runtime adds it, its run takes it out)."""
        super().__init__(replica_id, listener)
        self.container = container
        self._expected = expected
        self._memory = memory
        self._connected = False
        self._exited = anyio.Event()
        self._status: int | None = None
        self._live = live
        self._scope = CancelScope()  # all but the container's removal: see close
        self.began = False  # its run has begun: from then on, the run removes the container

    async def run(self, *, task_status: TaskStatus[None]) -> None:
        self.began = True
        try:
            with self._scope:
                await self._serve(task_status)
        finally:
            with anyio.CancelScope(shield=True):
                await self._expected.aclose()
                reason = await remove_container(self.container, self._status, self._memory)
            self._ended.set()
            self._live.discard(self)
            self._listener.replica_exited(self, reason)

    async def close(self) -> None:
        """Stop it now, and return once its container is removed, however long the Docker
        engine takes (the runtime's close, before it closes its client). What removes the
        container is bounded; what comes before it is cancelled if the kill has not ended it
        within ``kill_wait``."""
        await self.stop(0)
        self._scope.cancel()
        await self._ended.wait()

    async def _serve(self, task_status: TaskStatus[None]) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._watch, tg.cancel_scope, name=f"{self.id}-watch")
            tg.start_soon(self._killer, name=f"{self.id}-killer")
            task_status.started()
            connection = await self._expected.connection()
            self._connected = True
            async with connection.stream, anyio.create_task_group() as link:
                link.start_soon(self._link.write_loop, connection.stream)
                await self._link.read_loop(connection.receive)
                link.cancel_scope.cancel()
            with anyio.move_on_after(_EXIT_GRACE):
                await self._exited.wait()
            self.kill()  # its runner hung up but it lives on: it can serve no more
            with anyio.move_on_after(_API_TIMEOUT):
                await self._exited.wait()
            tg.cancel_scope.cancel()

    async def _watch(self, scope: CancelScope) -> None:
        # If the Docker engine itself is gone, so is the container, for our purposes.
        with contextlib.suppress(*_DOCKER_ERRORS):
            self._status = (await self.container.wait()).get("StatusCode")
        self._exited.set()
        if self._connected:
            await anyio.sleep(_EXIT_GRACE)  # the socket's end normally comes first
        scope.cancel()

    async def _killer(self) -> None:
        await self._kill.wait()
        with contextlib.suppress(*_DOCKER_ERRORS):  # already gone
            await self.container.kill()


async def _delete(container: Any) -> None:
    try:
        await container.delete(force=True)
    except DockerError as exc:
        if exc.status not in (404, 409):  # gone, or being removed already
            raise


async def remove_container(container: Any, status: int | None, memory: float) -> str:
    """Why a container ended (the OOM killer? a signal? its output's end), then remove it.
    ``status``: its exit code if known; ``memory``: its limit in GiB."""
    code, oom, tail = status, False, ""
    with anyio.move_on_after(_API_TIMEOUT):
        try:
            state = (await container.show()).get("State", {})
            oom = bool(state.get("OOMKilled"))
            if code is None and not state.get("Running"):
                code = state.get("ExitCode")
            if code not in (0, None) and not oom:
                lines = await container.log(stdout=True, stderr=True, tail=_STDERR_LINES)
                tail = "".join(lines).strip()
        except _DOCKER_ERRORS:
            pass
        try:
            await _delete(container)
        except _DOCKER_ERRORS as exc:
            logger.warning("container_not_removed", container=container.id[:12], error=str(exc))
    reason = _exit_words(code, oom, memory)
    if tail:
        reason = f"{reason}; its output ended with:\n{tail[-4000:]}"
    return reason


class DockerRuntime(Runtime):
    """Each replica is a container of the service's image (``image_for``) with the limits of
    its functions (``resources_for``): ``cpu`` as a CPU quota, ``memory`` (GiB) as its memory
    limit (swap included), ``ephemeral_disk`` (GiB) as the size of a tmpfs on /tmp (which
    counts towards the memory limit), ``gpu`` as a request for the host's GPUs, and the
    service's env and secrets as its environment.

    ``engine_id`` labels the containers; ``image`` is the default image (default: the
    ``TRIGGERFISH_RUNNER_IMAGE`` variable, else ``triggerfish/python:3``, which
    ``scripts/build-base-image.sh`` builds); ``url`` the Docker engine's (default: aiodocker's
    choice, from ``DOCKER_HOST`` or the local socket).
    """

    def __init__(self, engine_id: str, *, image: str | None = None, url: str | None = None):
        self.engine_id = engine_id
        self.image = image
        self._url = url
        self._docker: aiodocker.Docker | None = None
        self._broken = "the Docker runtime was not started"
        self._server = FrameServer()
        self._dir: str | None = None
        self._code_dirs: list[str] = []
        self._lib_binds: list[str] = []
        # From its launch until its container is removed: what the close waits for.
        self._replicas: set[ContainerReplica] = set()
        self._builder: ImageBuilder | None = None
        self._closed = False
        # Calls under way that use the Docker client (replica starts, until their replica's
        # run has begun; removals of what other engines left): the close waits for them.
        self._calls = ClientCalls()

    def check(self, plan: ReplicaPlan) -> None:
        image_for(plan.service, plan.functions, self.image)

    async def start(self, task_group: TaskGroup) -> None:
        where = self._url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        try:
            with anyio.fail_after(_API_TIMEOUT):
                docker = _client(where)
                try:
                    await docker.version()
                except BaseException:
                    await _close(docker)
                    raise
        except (*_DOCKER_ERRORS, TimeoutError) as exc:
            self._broken = f"no Docker engine answers at {where}: {exc or type(exc).__name__}"
            logger.error("docker_unavailable", reason=self._broken)
            return
        self._docker = docker
        removed = await self._remove_containers([self.engine_id], "left_over")
        if removed:
            logger.info("containers_removed", which="left_over", count=removed)
        self._code_dirs = await anyio.to_thread.run_sync(user_code_dirs)
        self._lib_binds = [
            f"{Path(__file__).parents[2]}:{_LIB}/triggerfish:ro",
            f"{Path(cloudpickle.__file__).parent}:{_LIB}/cloudpickle:ro",
        ]
        self._dir = await anyio.to_thread.run_sync(tempfile.mkdtemp, "", "triggerfish-")
        self._builder = ImageBuilder(docker, build_log_dir())
        listener = await anyio.create_unix_listener(os.path.join(self._dir, _SOCKET_NAME))
        await task_group.start(self._server.serve, listener, name="docker-replica-sockets")
        logger.info("docker_runtime_started", engine_id=self.engine_id, url=where)

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            self._closed = self._calls.closed = True  # no call begins from now on
            self._broken = "the Docker runtime is closed"
            # A start under way ends once its replica is among _replicas (or nothing was
            # made): wait for them, so that every replica is seen below. Each is bounded (a
            # launch by _START_TIMEOUT).
            await self._calls.wait()
            # Its listener is closed, never its accept cancelled: see stop_accepting.
            await self._server.stop_accepting()
            # Normally none is left: the engine stops its replicas first, but not one still
            # starting then. Each is waited for until its container is removed, so that no
            # replica's run uses the client once it is closed.
            async with anyio.create_task_group() as tg:
                for replica in list(self._replicas):
                    tg.start_soon(replica.close, name=f"close-{replica.id}")
            await self._server.close()  # a connection being greeted ended with its container
            if self._docker is not None:
                removed = await self._remove_containers([self.engine_id], "remaining")
                if removed:
                    logger.info("containers_removed", which="remaining", count=removed)
                await _close(self._docker)
                self._docker = None
            if self._dir is not None:
                await anyio.to_thread.run_sync(shutil.rmtree, self._dir, True)
                self._dir = None

    def _call(self) -> contextlib.AbstractContextManager[aiodocker.Docker]:
        """The Docker client, for one call that the close waits for; OSError once closed."""
        return self._calls.call(self._docker, self._broken)

    async def remove_left_by(self, engine_ids: Collection[str]) -> int:
        """Remove the containers labelled with any of ``engine_ids`` (see ``remove_left``)."""
        return await remove_left(
            self.engine_id, engine_ids, self._call, self._remove_containers, "containers"
        )

    async def _remove_containers(self, engine_ids: Collection[str], which: str) -> int:
        """Remove every container labelled with one of these engines' ids; how many were.
        Failures are logged, with ``which`` (what was being removed)."""
        assert self._docker is not None
        removed = 0

        async def remove(container: Any) -> None:
            nonlocal removed
            try:
                await _delete(container)
            except _DOCKER_ERRORS as exc:
                logger.warning("container_not_removed", container=container.id[:12], error=str(exc))
            else:
                removed += 1

        # Labelled by any engine, then picked: Docker asks for all the labels of a filter.
        filters = json.dumps({"label": [LABEL_ENGINE]})
        with anyio.move_on_after(_API_TIMEOUT * 3):
            try:
                found = await self._docker.containers.list(all=True, filters=filters)
            except _DOCKER_ERRORS as exc:
                logger.warning("containers_not_removed", which=which, error=str(exc))
                return 0
            async with anyio.create_task_group() as tg:
                for container in found:
                    if (container["Labels"] or {}).get(LABEL_ENGINE) in engine_ids:
                        tg.start_soon(remove, container)
        return removed

    async def start_replica(
        self, plan: ReplicaPlan, listener: ReplicaListener, task_group: TaskGroup
    ) -> Replica:
        if self._dir is None:
            raise OSError(self._broken)
        with self._call() as docker:
            return await self._start_replica(docker, plan, listener, task_group)

    async def _start_replica(
        self,
        docker: aiodocker.Docker,
        plan: ReplicaPlan,
        listener: ReplicaListener,
        task_group: TaskGroup,
    ) -> Replica:
        service = plan.service
        base = image_for(service, plan.functions, self.image)
        assert self._builder is not None
        image = await self._builder.image_for(
            recipe_for(base, plan.functions.values(), plan.code_paths)
        )
        resources = resources_for(plan.functions)
        if resources.gpu and not await self._has_gpu(docker):
            raise OSError(
                f"service {service.name!r} asks for a GPU (gpu={resources.gpu!r}) but this "
                "engine has none: no /dev/nvidia* device and no nvidia runtime in Docker"
            )
        if self._closed:  # while its image was looked for or built
            raise OSError(self._broken)
        replica_id = f"rep-{secrets.token_hex(4)}"
        expected = self._server.expect(replica_id)
        config = self._config(plan, image, resources, replica_id, expected.token)
        try:
            with anyio.CancelScope(shield=True), anyio.fail_after(_START_TIMEOUT):
                # Shielded: a container the Docker engine made must not go unseen because
                # its answer was cancelled on the way.
                container = await self._launch(docker, config, replica_id, resources.memory)
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await expected.aclose()
            if isinstance(exc, DockerError):
                raise OSError(self._refusal(image, exc)) from exc
            raise
        replica = ContainerReplica(
            replica_id, container, expected, listener, resources.memory, self._replicas
        )
        # Among the replicas before this call ends: the close, which waits for the call,
        # then sees it, however late its run begins.
        self._replicas.add(replica)
        try:
            with anyio.CancelScope(shield=True):  # once begun, its run removes the container
                await task_group.start(replica.run, name=f"replica-{replica_id}")
        except BaseException:
            if not replica.began:  # the task group was closed: no run will remove it
                self._replicas.discard(replica)
                with anyio.CancelScope(shield=True):
                    await expected.aclose()
                    await remove_container(container, None, resources.memory)
            raise
        replica.send((protocol.INIT, plan.init_payload))
        logger.info(
            "replica_started",
            service=service.name,
            replica_id=replica_id,
            container=container.id[:12],
            image=image,
        )
        return replica

    async def _launch(
        self, docker: aiodocker.Docker, config: dict[str, Any], replica_id: str, memory: float
    ) -> Any:
        """Create and start a container. A hiccup of the Docker engine (a connection dropped
        mid-request, a new container marked for removal as it was made: both seen right after
        removing containers that were still dying) is tried again, with a new name."""
        for attempt in range(_LAUNCH_TRIES):
            name = f"triggerfish-{self.engine_id}-{replica_id}" + (f"-{attempt}" if attempt else "")
            container = None
            try:
                container = await docker.containers.create(config, name=name)
                await container.start()
                return container
            except BaseException as exc:
                with anyio.CancelScope(shield=True):
                    if container is not None:
                        await remove_container(container, None, memory)
                hiccup = isinstance(exc, DockerError) and (
                    exc.status == 900 or "marked for removal" in str(exc.message)
                )
                if not hiccup or attempt == _LAUNCH_TRIES - 1:
                    raise
                logger.warning("container_start_retried", replica_id=replica_id, error=str(exc))
                await anyio.sleep(0.1 * (attempt + 1))
        raise AssertionError("unreachable")

    @staticmethod
    def _refusal(image: str, exc: DockerError) -> str:
        if exc.status == 404 and "image" in str(exc.message).lower():
            return (
                f"the image {image!r} is not on this Docker engine: build it "
                "(bash scripts/build-base-image.sh) or docker pull it"
            )
        return f"Docker refused to start a container of {image!r}: {exc.message}"

    @staticmethod
    async def _has_gpu(docker: aiodocker.Docker) -> bool:
        if await anyio.to_thread.run_sync(glob.glob, "/dev/nvidia[0-9]*"):
            return True
        try:
            info = await docker.system.info()
        except _DOCKER_ERRORS:
            return False
        return "nvidia" in (info.get("Runtimes") or {})

    def _config(
        self,
        plan: ReplicaPlan,
        image: str,
        resources: Resources,
        replica_id: str,
        token: str,
    ) -> dict[str, Any]:
        service = plan.service
        code = [*self._code_dirs, *(p for p in plan.code_paths if p not in self._code_dirs)]
        env = {**service.env, **service.secrets}
        python_path = [_LIB, *code, SITE_DIR]  # SITE_DIR: a derived image's requirements
        if env.get("PYTHONPATH"):
            python_path.append(env["PYTHONPATH"])
        env.update(
            PYTHONPATH=os.pathsep.join(python_path),
            PYTHONUNBUFFERED="1",
            PYTHONDONTWRITEBYTECODE="1",
            TRIGGERFISH_REPLICA_ID=replica_id,
            TRIGGERFISH_REPLICA_TOKEN=token,
        )
        host: dict[str, Any] = {
            "Binds": [
                *self._lib_binds,
                f"{self._dir}:{_SOCKET_DIR}:ro",
                *(f"{path}:{path}:ro" for path in code),
            ],
            "NanoCpus": int(resources.cpu * 1e9),
            "Memory": int(resources.memory * _GIB),
            "MemorySwap": int(resources.memory * _GIB),  # no swap beyond the limit
            "Tmpfs": {"/tmp": f"rw,exec,nosuid,nodev,size={int(resources.ephemeral_disk * _GIB)}"},
        }
        if resources.gpu:
            count = int(resources.gpu) if resources.gpu.isdigit() else -1
            host["DeviceRequests"] = [{"Count": count, "Capabilities": [["gpu"]]}]
        config: dict[str, Any] = {
            "Image": image,
            "Cmd": [
                "python3",
                "-m",
                "triggerfish.engine.replica.runner",
                "--connect",
                f"unix:{_SOCKET_DIR}/{_SOCKET_NAME}",
            ],
            "Env": [f"{key}={value}" for key, value in env.items()],
            "Labels": {
                LABEL_ENGINE: self.engine_id,
                LABEL_SERVICE: service.name,
                LABEL_REPLICA: replica_id,
            },
            "HostConfig": host,
        }
        cwd = os.getcwd()
        if cwd in code:
            config["WorkingDir"] = cwd  # as for a process replica, where it can be
        return config
