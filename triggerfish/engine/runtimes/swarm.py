"""Replicas as Docker Swarm tasks, on whichever nodes the swarm places them.

Each replica is a Swarm service of one task, created and removed through aiodocker's services
API: one service per replica rather than one service scaled up and down, because scaling
down must stop the replica the autoscaler chose (the idle one), and Swarm picks the task to
remove by itself. The task runs the bootstrap (``python3 -c``) in the service's image; it
connects back to the engine over TCP, says hello with its replica id and one-time token
(the FrameServer admits each token once), receives the runner's code and then speaks the
usual frames. So any image with python3 works, on any node, with nothing mounted.

Services carry the labels ``triggerfish.engine`` (the engine's id), ``triggerfish.service``
and ``triggerfish.replica``. On start the runtime removes services an earlier run of the same
engine left behind; on stop, none remains; ``remove_left_by`` removes what other engines, now
gone, left behind.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import os
import re
import secrets
import socket
import zipfile
from collections.abc import Collection
from functools import cache
from pathlib import Path
from typing import Any

import aiodocker
import aiohttp
import anyio
import cloudpickle
from anyio.abc import SocketAttribute, TaskGroup, TaskStatus

from ...errors import ConfigurationError
from ...log import logger
from ..replica import bootstrap, protocol
from .abc import Replica, ReplicaListener, ReplicaPlan, Runtime
from .calls import ClientCalls, remove_left
from .docker import LABEL_ENGINE, LABEL_REPLICA, LABEL_SERVICE, image_for, resources_for
from .frames import LinkedReplica
from .images import ImageBuilder, build_log_dir, recipe_for
from .sockets import Connection, Expected, FrameServer

__all__ = ["SwarmRuntime", "runner_bundle"]

ADVERTISE_VARIABLE = "TRIGGERFISH_SWARM_ADVERTISE"
PORT_VARIABLE = "TRIGGERFISH_SWARM_PORT"
_BOOTSTRAP = inspect.getsource(bootstrap)
_FINISHED = {"complete", "failed", "shutdown", "rejected", "orphaned", "remove"}
_ERRORS = (aiodocker.DockerError, aiohttp.ClientError, OSError)
_API_TIMEOUT = 10.0


class SwarmReplica(LinkedReplica):
    """One Swarm task's replica: frames over its connection; removing its Swarm service is
    what kills it."""

    def __init__(
        self,
        replica_id: str,
        runtime: SwarmRuntime,
        service_id: str,
        listener: ReplicaListener,
        live: set[SwarmReplica],
    ) -> None:
        """``live``: the runtime's replicas, which this one is in from its start until its
        service is removed (the runtime adds it, its run takes it out)."""
        super().__init__(replica_id, listener)
        self._runtime = runtime
        self._service_id = service_id
        self._live = live
        self.began = False  # its run has begun: from then on, the run removes the service

    async def run(self, connection: Connection, *, task_status: TaskStatus[None]) -> None:
        self.began = True
        reason = "ended"
        try:
            async with connection.stream, anyio.create_task_group() as tg:
                tg.start_soon(self._link.write_loop, connection.stream)
                tg.start_soon(_cancel_on, self._kill, tg.cancel_scope)
                task_status.started()
                await self._link.read_loop(connection.receive)
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                reason = await self._runtime.remove(self._service_id)
            self._ended.set()
            self._live.discard(self)
            self._listener.replica_exited(self, reason)

    async def close(self) -> None:
        """Stop it now, and return once its service is removed (the runtime's close, before
        it closes its client): the kill ends its run at once, and the removal is bounded."""
        await self.stop(0)
        await self._ended.wait()


async def _cancel_on(event: anyio.Event, scope: anyio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


class SwarmRuntime(Runtime):
    """Starts replicas as Swarm tasks that connect back to this engine.

    ``advertise`` is the address tasks reach the engine at, one every node can route to
    (default ``$TRIGGERFISH_SWARM_ADVERTISE``, else 127.0.0.1: a single-node swarm); the
    engine listens on ``bind``:``port`` (default ``$TRIGGERFISH_SWARM_PORT``, else any free
    port). ``network`` is the network tasks join: "host" lets a task on the engine's own node
    reach 127.0.0.1. ``engine_id`` labels the services; the engine gives its own when it
    makes the runtime.
    """

    def __init__(
        self,
        engine_id: str,
        *,
        image: str | None = None,
        advertise: str | None = None,
        bind: str = "0.0.0.0",  # tasks on other nodes connect; their tokens guard the door
        port: int | None = None,
        network: str | None = "host",
        start_timeout: float = 60.0,
        url: str | None = None,
    ) -> None:
        self.engine_id = engine_id
        self.image = image
        self.advertise = advertise or os.environ.get(ADVERTISE_VARIABLE) or "127.0.0.1"
        self.bind = bind
        self.port = port if port is not None else int(os.environ.get(PORT_VARIABLE) or 0)
        self.network = network
        self.start_timeout = start_timeout
        self.server = FrameServer(welcome=b"")  # the runner's code, once started
        self._url = url
        self._docker: aiodocker.Docker | None = None
        self._broken = "the Swarm runtime is not started"
        self._builder: ImageBuilder | None = None
        self._closed = False
        # From its start until its service is removed: what the close waits for.
        self._replicas: set[SwarmReplica] = set()
        # Calls under way that use the Docker client (replica starts, until their replica's
        # run has begun; removals of what other engines left): the close waits for them,
        # having cancelled the starts' waits for their tasks (``_waits``).
        self._calls = ClientCalls()
        self._waits: set[anyio.CancelScope] = set()

    def check(self, plan: ReplicaPlan) -> None:
        image_for(plan.service, plan.functions, self.image)
        if resources_for(plan.functions).gpu:
            raise ConfigurationError(
                f"service {plan.service.name!r} asks for a GPU, which Swarm replicas cannot have"
            )

    async def start(self, task_group: TaskGroup) -> None:
        docker = aiodocker.Docker(url=self._url)
        try:
            with anyio.fail_after(10):
                state = (await docker.system.info())["Swarm"]["LocalNodeState"]
        except (*_ERRORS, TimeoutError) as exc:
            await docker.close()
            self._broken = f"no Docker engine answers: {exc or type(exc).__name__}"
            logger.error("swarm_unavailable", reason=self._broken)
            return
        if state != "active":
            await docker.close()
            self._broken = (
                f"this Docker engine is not in a swarm (its state: {state}); run "
                "`docker swarm init --advertise-addr 127.0.0.1` (or join one) first"
            )
            logger.error("swarm_unavailable", reason=self._broken)
            return
        self._docker = docker
        self.server.welcome = await anyio.to_thread.run_sync(runner_bundle)
        # A derived image is built on this node only: on a swarm of many, push it to a
        # registry the nodes pull from (see the README).
        self._builder = ImageBuilder(docker, build_log_dir())
        removed = await self._remove_services([self.engine_id], "left_over")
        if removed:
            logger.info("swarm_services_removed", which="left_over", count=removed)
        listener = await anyio.create_tcp_listener(local_host=self.bind, local_port=self.port)
        self.port = listener.extra(SocketAttribute.local_port)
        await task_group.start(self.server.serve, listener, name="swarm-replica-gate")
        logger.info("swarm_runtime_started", engine_id=self.engine_id, port=self.port)

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            self._closed = self._calls.closed = True  # no call begins from now on
            self._broken = "the Swarm runtime is closed"
            for wait in self._waits:  # a start waiting for its task gives up
                wait.cancel()
            # A start under way ends once its replica is among _replicas (or it removed
            # what it made): wait for them, so that every replica is seen below.
            await self._calls.wait()
            # Its listener is closed, never its accept cancelled: see stop_accepting.
            await self.server.stop_accepting()
            # Normally none is left: the engine stops its replicas first, but not one still
            # starting then. Each is waited for until its service is removed, so that no
            # replica's run uses the client once it is closed.
            async with anyio.create_task_group() as tg:
                for replica in list(self._replicas):
                    tg.start_soon(replica.close, name=f"close-{replica.id}")
            # Not waiting for a stranger's hello: TCP streams, unlike anyio's UNIX ones, are
            # safe to cancel while they wait (an event, not the socket's reader callback).
            await self.server.close(0)
            if self._docker is not None:
                removed = await self._remove_services([self.engine_id], "remaining")
                if removed:
                    logger.info("swarm_services_removed", which="remaining", count=removed)
                await self._docker.close()
                self._docker = None

    def _call(self) -> contextlib.AbstractContextManager[aiodocker.Docker]:
        """The Docker client, for one call that the close waits for; OSError once closed."""
        return self._calls.call(self._docker, self._broken)

    async def remove_left_by(self, engine_ids: Collection[str]) -> int:
        """Remove the Swarm services labelled with any of ``engine_ids`` (see ``remove_left``)."""
        return await remove_left(
            self.engine_id, engine_ids, self._call, self._remove_services, "swarm_services"
        )

    async def start_replica(
        self, plan: ReplicaPlan, listener: ReplicaListener, task_group: TaskGroup
    ) -> Replica:
        with self._call():
            return await self._start_replica(plan, listener, task_group)

    async def _start_replica(
        self, plan: ReplicaPlan, listener: ReplicaListener, task_group: TaskGroup
    ) -> Replica:
        service = plan.service
        replica_id = f"rep-{secrets.token_hex(4)}"
        expected = self.server.expect(replica_id)
        labels = {
            LABEL_ENGINE: self.engine_id,
            LABEL_SERVICE: service.name,
            LABEL_REPLICA: replica_id,
        }
        service_id = None
        connection: Connection | None = None
        try:
            with anyio.CancelScope() as wait:  # cancelled by the close
                self._waits.add(wait)
                try:
                    service_id = await self._create(plan, replica_id, expected.token, labels)
                    connection = await self._connection(expected, service_id)
                finally:
                    self._waits.discard(wait)
            if service_id is None or connection is None:  # the close cancelled the wait
                raise OSError(self._broken)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await expected.aclose()  # its token admits no one any more
                if service_id is not None:  # cancelled while it started: nothing is left
                    await self.remove(service_id)
            raise
        replica = SwarmReplica(replica_id, self, service_id, listener, self._replicas)
        # Among the replicas before this call ends: the close, which waits for the call,
        # then sees it, however late its run begins.
        self._replicas.add(replica)
        try:
            with anyio.CancelScope(shield=True):  # once begun, its run removes the service
                await task_group.start(replica.run, connection, name=f"replica-{replica_id}")
        except BaseException:
            if not replica.began:  # the task group was closed: no run will remove it
                self._replicas.discard(replica)
                with anyio.CancelScope(shield=True):
                    await connection.stream.aclose()
                    await self.remove(service_id)
            raise
        replica.send((protocol.INIT, plan.init_payload))
        logger.info(
            "replica_started", service=service.name, replica_id=replica_id, swarm=service_id
        )
        return replica

    async def _create(
        self, plan: ReplicaPlan, replica_id: str, token: str, labels: dict[str, str]
    ) -> str:
        assert self._docker is not None
        resources = resources_for(plan.functions)
        env = {
            **plan.service.env,
            **plan.service.secrets,
            "TRIGGERFISH_ENGINE": f"{self.advertise}:{self.port}",
            "TRIGGERFISH_REPLICA_ID": replica_id,
            "TRIGGERFISH_REPLICA_TOKEN": token,
            "PYTHONUNBUFFERED": "1",
        }
        base = image_for(plan.service, plan.functions, self.image)
        assert self._builder is not None
        image = await self._builder.image_for(
            recipe_for(base, plan.functions.values(), plan.code_paths)
        )
        template: dict[str, Any] = {
            "ContainerSpec": {
                "Image": image,
                "Command": ["python3", "-c", _BOOTSTRAP],
                "Env": env,
                "Labels": labels,
                "Mounts": [
                    {
                        "Type": "tmpfs",
                        "Target": "/tmp",  # the replica's own scratch space, of ephemeral_disk
                        "TmpfsOptions": {"SizeBytes": int(resources.ephemeral_disk * 2**30)},
                    }
                ],
            },
            "Resources": {
                "Limits": {
                    "NanoCPUs": int(resources.cpu * 1e9),
                    "MemoryBytes": int(resources.memory * 2**30),
                }
            },
            "RestartPolicy": {"Condition": "none"},
        }
        if self.network:
            template["Networks"] = [{"Target": self.network}]
        try:
            created = await self._docker.services.create(
                template, name=_swarm_name(plan.service.name), labels=labels
            )
        except _ERRORS as exc:
            raise OSError(f"Swarm refused the replica's service: {exc}") from None
        return str(created["ID"])

    async def _connection(self, expected: Expected, service_id: str) -> Connection:
        """The task's connection once it comes. Swarm tells no one when a task fails to
        start, so meanwhile its state is looked at now and then, more seldom as time goes."""
        failure: str | None = None
        connection: Connection | None = None

        async def watch(scope: anyio.CancelScope) -> None:
            nonlocal failure
            pause = 0.25
            while failure is None:
                await anyio.sleep(pause)
                pause = min(pause * 2, 4.0)
                failure = await self._task_failure(service_id)
            scope.cancel()

        with anyio.move_on_after(self.start_timeout):
            async with anyio.create_task_group() as tg:
                tg.start_soon(watch, tg.cancel_scope)
                connection = await expected.connection()
                tg.cancel_scope.cancel()
        if connection is None:
            why = failure or f"it did not connect back within {self.start_timeout:g} s"
            raise OSError(f"the replica's Swarm task did not start: {why}")
        _keep_alive(connection)
        return connection

    async def _task_failure(self, service_id: str) -> str | None:
        """How the service's task ended, if it has."""
        assert self._docker is not None
        try:
            tasks = await self._docker.tasks.list(filters={"service": service_id})
        except _ERRORS as exc:
            return f"its task cannot be seen: {exc}"
        for task in tasks:
            status = task.get("Status", {})
            if status.get("State") in _FINISHED:
                return _task_words(status)
        return None

    async def remove(self, service_id: str) -> str:
        """Remove a replica's Swarm service (and so its container); how its task ended."""
        if self._docker is None:
            return "the Swarm runtime is closed"
        reason = "its connection ended"
        with anyio.move_on_after(_API_TIMEOUT, shield=True):  # the close waits for it
            reason = await self._task_failure(service_id) or reason
            try:
                await self._docker.services.delete(service_id)
            except _ERRORS as exc:
                if getattr(exc, "status", None) != 404:
                    logger.warning("swarm_service_not_removed", swarm=service_id, error=str(exc))
        return reason

    async def _remove_services(self, engine_ids: Collection[str], which: str) -> int:
        """Remove every Swarm service labelled with one of these engines' ids; how many
        were. Failures are logged, with ``which`` (what was being removed)."""
        assert self._docker is not None
        removed = 0
        with anyio.move_on_after(3 * _API_TIMEOUT):
            try:
                # Labelled by any engine, then picked: Docker asks for all the labels given.
                found = await self._docker.services.list(filters={"label": LABEL_ENGINE})
            except _ERRORS as exc:
                logger.warning("swarm_services_not_removed", which=which, error=str(exc))
                return 0
            for service in found:
                if (service["Spec"].get("Labels") or {}).get(LABEL_ENGINE) not in engine_ids:
                    continue
                try:
                    await self._docker.services.delete(service["ID"])
                except _ERRORS as exc:
                    if getattr(exc, "status", None) != 404:  # 404: gone meanwhile
                        logger.warning(
                            "swarm_service_not_removed", swarm=service["ID"], error=str(exc)
                        )
                        continue
                removed += 1
        return removed


def _swarm_name(service: str) -> str:
    """A Swarm service name (letters, digits, dashes; at most 63) for one replica."""
    stem = re.sub(r"[^a-zA-Z0-9-]+", "-", service).strip("-")[:40] or "replica"
    return f"tf-{stem}-{secrets.token_hex(4)}"


def _task_words(status: dict[str, Any]) -> str:
    words = [f"its task is {status.get('State', 'ended')}"]
    container = status.get("ContainerStatus") or {}
    if status.get("Err"):
        words.append(str(status["Err"]))
    elif container.get("ExitCode") not in (None, 0):
        words.append(f"exited with code {container['ExitCode']}")
    return ": ".join(words)


def _keep_alive(connection: Connection) -> None:
    """A node that dies without closing its connections is noticed within about 30 s."""
    raw = connection.stream.extra(SocketAttribute.raw_socket)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 4)):
        if hasattr(socket, option):
            raw.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@cache
def runner_bundle() -> bytes:
    """A zip of the ``triggerfish`` and ``cloudpickle`` packages' Python files, importable
    from the zip itself; what the FrameServer sends a Swarm task once it is admitted."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bundle:
        for package in (Path(__file__).parents[2], Path(cloudpickle.__file__).parent):
            for path in sorted(package.rglob("*.py")):
                bundle.write(path, path.relative_to(package.parent).as_posix())
    return buffer.getvalue()
