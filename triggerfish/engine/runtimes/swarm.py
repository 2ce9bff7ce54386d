"""Replicas as Docker Swarm tasks, on whichever nodes the swarm places them.

Each replica is a Swarm service of one task, created and removed through aiodocker's services
API: one service per replica (not one service scaled up and down) because scaling down must
stop the replica the autoscaler chose, the idle one, and Swarm picks the task to remove by
itself. The task runs the bootstrap (``python3 -c``) in the service's image, which connects
back to the engine's ReplicaGate over TCP with a token good for this replica only, receives
the runner's code and then speaks the usual frames. So any image with python3 works, on any
node, with nothing mounted.

Services carry the labels ``triggerfish.engine`` (this engine's name), ``triggerfish.service``
and ``triggerfish.replica``. On start the runtime removes services an earlier run of the same
engine left behind; on stop, none remains.
"""

from __future__ import annotations

import inspect
import os
import re
import socket
from typing import Any

import aiodocker
import anyio
from anyio.abc import SocketAttribute, SocketStream, TaskGroup

from ...models import ServiceSpec
from ..log import logger
from ..replica import bootstrap, protocol
from .abc import Replica, ReplicaListener, Runtime
from .gate import ReplicaGate, Ticket
from .socket import SocketReplica

__all__ = ["DEFAULT_IMAGE", "SwarmRuntime"]

DEFAULT_IMAGE = os.environ.get("TRIGGERFISH_RUNNER_IMAGE", "triggerfish/python:3")
_BOOTSTRAP = inspect.getsource(bootstrap)
_FINISHED = {"complete", "failed", "shutdown", "rejected", "orphaned", "remove"}


class SwarmRuntime(Runtime):
    """Starts replicas as Swarm tasks that connect back to this engine.

    ``advertise`` is the address the tasks reach the engine at (one every node can route
    to); the gate listens on ``bind``:``port`` (port 0: any free one). ``network`` is the
    network the tasks join ("host" lets a task on the engine's own node reach 127.0.0.1).
    ``engine`` names this engine in the labels; engines sharing a swarm need distinct names.
    Use it as ``async with SwarmRuntime(...) as runtime`` around the engine, or let the
    engine start it.
    """

    def __init__(
        self,
        *,
        image: str = DEFAULT_IMAGE,
        advertise: str = "127.0.0.1",
        bind: str = "0.0.0.0",  # tasks on other nodes connect; their tokens guard the door
        port: int = 0,
        network: str | None = "host",
        engine: str = "triggerfish",
        start_timeout: float = 60.0,
        docker_url: str | None = None,
    ) -> None:
        self.image = image
        self.advertise = advertise
        self.network = network
        self.engine = engine
        self.start_timeout = start_timeout
        self.gate = ReplicaGate(bind, port)
        self._docker_url = docker_url
        self._docker: aiodocker.Docker | None = None
        self._task_group: TaskGroup | None = None
        self._scope: anyio.CancelScope | None = None

    async def __aenter__(self) -> SwarmRuntime:
        self._docker = aiodocker.Docker(url=self._docker_url)
        try:
            state = (await self._docker.system.info())["Swarm"]["LocalNodeState"]
            if state != "active":
                raise OSError(
                    f"this Docker engine is not in a swarm (its state: {state}); "
                    "run `docker swarm init` (or join one) first"
                )
            await self._remove_leftovers()
            self._task_group = anyio.create_task_group()
            await self._task_group.__aenter__()
            await self._task_group.start(self.gate.serve, name="replica-gate")
        except BaseException:
            await self._docker.close()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._task_group is not None and self._docker is not None
        self._task_group.cancel_scope.cancel()
        await self._task_group.__aexit__(None, None, None)
        with anyio.CancelScope(shield=True):
            await self._remove_leftovers()
            await self._docker.close()

    async def start_replica(
        self,
        service: ServiceSpec,
        init_payload: bytes,
        listener: ReplicaListener,
        task_group: TaskGroup,
    ) -> Replica:
        if self._docker is None:
            raise OSError("the Swarm runtime is not started (use it as `async with`)")
        ticket = self.gate.issue()
        labels = {
            "triggerfish.engine": self.engine,
            "triggerfish.service": service.name,
        }
        env = {
            **service.env,
            **service.secrets,
            "TRIGGERFISH_ENGINE": f"{self.advertise}:{self.gate.port}",
            "TRIGGERFISH_TOKEN": ticket.token,
            "PYTHONUNBUFFERED": "1",
        }
        template: dict[str, Any] = {
            "ContainerSpec": {
                "Image": self.image,
                "Command": ["python3", "-c", _BOOTSTRAP],
                "Env": env,
                "Labels": labels,
            },
            "RestartPolicy": {"Condition": "none"},
        }
        if self.network:
            template["Networks"] = [{"Target": self.network}]
        try:
            created = await self._docker.services.create(
                template, name=_swarm_name(service.name), labels=labels
            )
        except aiodocker.DockerError as exc:
            self.gate.revoke(ticket)
            raise OSError(f"Swarm refused the replica's service: {exc.message}") from None
        service_id = str(created["ID"])
        stream = await self._admitted(ticket, service_id)
        _keep_alive(stream)

        async def remove() -> str:
            return await self._remove(service_id)

        replica = SocketReplica(stream, listener, remove)
        await task_group.start(replica.run, name=f"replica-{replica.id}")
        replica.send((protocol.INIT, init_payload))
        logger.info(
            "replica_started", service=service.name, replica_id=replica.id, swarm=service_id
        )
        return replica

    async def _admitted(self, ticket: Ticket, service_id: str) -> SocketStream:
        """The task's connection once it came in. Swarm tells no one when a task fails to
        start, so meanwhile its state is looked at now and then, more seldom as time goes."""
        failure: str | None = None
        stream: SocketStream | None = None

        async def watch() -> None:
            nonlocal failure
            pause = 0.25
            while failure is None:
                await anyio.sleep(pause)
                pause = min(pause * 2, 4.0)
                failure = await self._task_failure(service_id)
            self.gate.revoke(ticket)  # so the wait below ends

        with anyio.move_on_after(self.start_timeout):
            async with anyio.create_task_group() as tg:
                tg.start_soon(watch)
                stream = await self.gate.admitted(ticket)
                tg.cancel_scope.cancel()
        if stream is None:
            self.gate.revoke(ticket)
            await self._remove(service_id)
            why = failure or f"it did not connect back within {self.start_timeout:g} s"
            raise OSError(f"the replica's Swarm task did not start: {why}")
        return stream

    async def _task_failure(self, service_id: str) -> str | None:
        """Why the service's task ended, if it has."""
        assert self._docker is not None
        tasks = await self._docker.tasks.list(filters={"service": service_id})
        for task in tasks:
            status = task.get("Status", {})
            if status.get("State") in _FINISHED:
                return _task_reason(status)
        return None

    async def _remove(self, service_id: str) -> str:
        """Remove the replica's service (and so its container); how its task ended."""
        assert self._docker is not None
        with anyio.CancelScope(shield=True):
            try:
                reason = await self._task_failure(service_id) or "stopped"
                await self._docker.services.delete(service_id)
            except aiodocker.DockerError as exc:
                if exc.status != 404:
                    logger.warning("swarm_remove_failed", swarm=service_id, error=exc.message)
                reason = "its service is gone"
        return reason

    async def _remove_leftovers(self) -> None:
        assert self._docker is not None
        label = f"triggerfish.engine={self.engine}"
        for service in await self._docker.services.list(filters={"label": label}):
            logger.info("swarm_leftover_removed", swarm=service["ID"])
            try:
                await self._docker.services.delete(service["ID"])
            except aiodocker.DockerError as exc:
                if exc.status != 404:
                    raise


def _swarm_name(service: str) -> str:
    """A Swarm service name (letters, digits, dashes; at most 63) for one replica."""
    stem = re.sub(r"[^a-zA-Z0-9-]+", "-", service).strip("-")[:40] or "replica"
    return f"tf-{stem}-{os.urandom(4).hex()}"


def _task_reason(status: dict[str, Any]) -> str:
    state = status.get("State", "ended")
    container = status.get("ContainerStatus") or {}
    words = [f"its task is {state}"]
    if status.get("Err"):
        words.append(str(status["Err"]))
    elif container.get("ExitCode") not in (None, 0):
        words.append(f"exited with code {container['ExitCode']}")
    return ": ".join(words)


def _keep_alive(stream: SocketStream) -> None:
    """A node that dies without closing its connections is noticed within about 30 s."""
    raw = stream.extra(SocketAttribute.raw_socket)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 4)):
        if hasattr(socket, option):
            raw.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
