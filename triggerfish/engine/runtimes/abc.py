"""The Runtime contract: how replicas are started, talked to and stopped.

A runtime starts replica processes (local processes, containers...) that run the replica runner
and speak the frame protocol of ``triggerfish.engine.replica.protocol``. The scheduler does not
know which runtime it drives.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from anyio.abc import TaskGroup

from ...models import FunctionSpec, ServiceSpec


@dataclass(frozen=True, kw_only=True)
class ReplicaPlan:
    """What a runtime needs to start a replica of a service: its spec, its functions (whose
    resources and image containers honour), the INIT payload, and the host directories
    holding code the replica loads by path (a deployed package's codebase)."""

    service: ServiceSpec
    functions: Mapping[str, FunctionSpec]
    init_payload: bytes
    code_paths: tuple[str, ...] = ()


class ReplicaListener(Protocol):
    """Who hears from a replica: its messages, and its end (exactly once)."""

    def replica_messages(self, replica: Replica, messages: list[tuple[Any, ...]]) -> None: ...

    def replica_exited(self, replica: Replica, reason: str) -> None: ...


class Replica(ABC):
    """The engine's handle on one running replica.

    Duties: ``send`` never blocks and keeps order (messages queued together go in one frame);
    messages from the replica reach the listener in order; when the replica ends for any reason
    (asked to stop, killed, crashed) the listener's ``replica_exited`` is called once with a
    reason a person can read ("killed by signal 9 (SIGKILL)", plus the end of its stderr).
    """

    id: str

    @abstractmethod
    def send(self, message: tuple[Any, ...]) -> None:
        """Queue a message for the replica."""

    @abstractmethod
    async def stop(self, grace: float) -> None:
        """Ask the replica to exit; kill it if it has not within ``grace`` seconds."""

    @abstractmethod
    def kill(self) -> None:
        """End the replica now (it will be reported as exited)."""


class Runtime(ABC):
    """Starts replicas of a service.

    The engine calls ``start`` once before the first replica (in its own task group, which
    outlives every replica) and ``aclose`` after the last replica has stopped.
    """

    async def start(self, task_group: TaskGroup) -> None:  # noqa: B027 (optional duty)
        """Get ready to start replicas (connect, clean up after an earlier run...)."""

    async def aclose(self) -> None:  # noqa: B027
        """Release what ``start`` took; no replica of this runtime may remain, and none still
        being started or removed may use what is released: they are waited for."""

    def check(self, plan: ReplicaPlan) -> None:  # noqa: B027
        """Raise ConfigurationError if replicas of ``plan`` can never be started here
        (called when a service is registered, so a bad one is refused at once)."""

    async def remove_left_by(self, engine_ids: Collection[str]) -> int:
        """Remove every replica that the engines of these ids left behind (they are gone:
        another engine adopted their work); returns how many were removed. A runtime whose
        replicas die with their engine (local processes) has nothing to remove.

        Called on a started runtime (between ``start`` and ``aclose``), never with the id of
        the engine it serves. What cannot be removed (its host out of reach) is logged, not
        raised: the adoption goes on without it.
        """
        return 0  # a process replica dies with its engine's pipe

    @abstractmethod
    async def start_replica(
        self, plan: ReplicaPlan, listener: ReplicaListener, task_group: TaskGroup
    ) -> Replica:
        """Start one replica of ``plan.service`` in ``task_group`` and send it the INIT
        payload.

        Returns once the replica is started (not yet initialized: it answers READY or
        INIT_FAILED through the listener). Raises OSError when it cannot be started at all.
        """
