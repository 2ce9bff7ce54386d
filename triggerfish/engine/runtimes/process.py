"""Replicas as child Python processes talking over their stdin and stdout pipes."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
from typing import Any

import anyio
from anyio.abc import Process, TaskGroup, TaskStatus

from ...log import logger
from ..replica import protocol
from .abc import Replica, ReplicaListener, ReplicaPlan, Runtime
from .frames import FrameLink

_STDERR_TAIL = 4000


def exit_reason(returncode: int | None) -> str:
    """A person's words for how a process ended."""
    if returncode is None:
        return "ended"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "unknown signal"
        return f"killed by signal {-returncode} ({name})"
    return f"exited with code {returncode}"


class ProcessReplica(Replica):
    def __init__(self, process: Process, listener: ReplicaListener, service: str) -> None:
        self.id = f"rep-{secrets.token_hex(4)}"
        self.process = process
        self.service = service
        self._listener = listener
        self._link = FrameLink(lambda messages: listener.replica_messages(self, messages))
        self._stderr_tail = b""

    @property
    def pid(self) -> int:
        return self.process.pid

    def send(self, message: tuple[Any, ...]) -> None:
        self._link.send(message)

    async def stop(self, grace: float) -> None:
        self._link.close()  # the writer closes stdin; the runner exits on end of file
        with anyio.move_on_after(grace, shield=True):
            await self.process.wait()
            return
        self.kill()

    def kill(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()

    async def run(self, *, task_status: TaskStatus[None]) -> None:
        reason = "ended"
        try:
            async with anyio.create_task_group() as tg:
                assert self.process.stdin is not None and self.process.stdout is not None
                tg.start_soon(self._link.write_loop, self.process.stdin, name=f"{self.id}-writer")
                tg.start_soon(self._drain_stderr, name=f"{self.id}-stderr")
                task_status.started()
                await self._link.read_loop(self.process.stdout)
                with anyio.CancelScope(shield=True):
                    await self.process.wait()
                    reason = exit_reason(self.process.returncode)
                    tail = self._stderr_tail.decode(errors="replace").strip()
                    if tail and self.process.returncode != 0:
                        reason = f"{reason}; its stderr ended with:\n{tail[-_STDERR_TAIL:]}"
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                self.kill()
                await self.process.aclose()
            self._listener.replica_exited(self, reason)

    async def _drain_stderr(self) -> None:
        assert self.process.stderr is not None
        async for chunk in self.process.stderr:
            self._stderr_tail = (self._stderr_tail + chunk)[-_STDERR_TAIL:]
            # The replica's own output (outside executions) stays visible to the operator.
            logger.info(
                "replica_stderr", replica_id=self.id, text=chunk.decode(errors="replace").rstrip()
            )


class ProcessRuntime(Runtime):
    """Each replica is ``python -m triggerfish.engine.replica.runner`` in a child process,
    with this interpreter, this ``sys.path`` (so functions pickled by reference import there)
    and the service's env and secrets."""

    async def start_replica(
        self, plan: ReplicaPlan, listener: ReplicaListener, task_group: TaskGroup
    ) -> Replica:
        service = plan.service
        env = service.environment()
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        env["PYTHONUNBUFFERED"] = "1"
        process = await anyio.open_process(
            [sys.executable, "-m", "triggerfish.engine.replica.runner"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        replica = ProcessReplica(process, listener, service.name)
        await task_group.start(replica.run, name=f"replica-{replica.id}")
        replica.send((protocol.INIT, plan.init_payload))
        logger.info("replica_started", service=service.name, replica_id=replica.id, pid=process.pid)
        return replica
