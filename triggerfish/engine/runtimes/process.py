"""Replicas as child Python processes talking over their stdin and stdout pipes.

Each replica leads its own process group, so that what its functions start
(``os.fork``, ``subprocess``) goes with it: when the replica exits or is killed, and at a
stop, the engine kills what is left of the group. A child that leaves the group (``setsid``)
is not followed.
"""

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

#: How long, once a replica's process has exited, its pipes may take to reach end of file
#: (what it wrote is still read); a grandchild that left its group can hold them open.
_EOF_WAIT = 2.0


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
        self._stderr_ended = anyio.Event()
        self._group_gone = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def send(self, message: tuple[Any, ...]) -> None:
        self._link.send(message)

    async def stop(self, grace: float) -> None:
        self._link.close()  # the writer closes stdin; the runner exits on end of file
        with anyio.move_on_after(grace, shield=True):
            await self.process.wait()
            self.kill()  # what its functions started and left running
            return
        self.kill()

    def kill(self) -> None:
        """Kill the replica's process group: the replica and what it started. Once the replica
        has exited, once more for what was left of it, then never again (its id may come back
        as another process's)."""
        if self._group_gone:
            return
        self._group_gone = self.process.returncode is not None
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            # Not a group (yet): a runner makes its group as its first act.
            if self.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()

    async def run(self, *, task_status: TaskStatus[None]) -> None:
        reason = "ended"
        try:
            async with anyio.create_task_group() as tg:
                assert self.process.stdin is not None
                tg.start_soon(self._link.write_loop, self.process.stdin, name=f"{self.id}-writer")
                tg.start_soon(self._drain_stderr, name=f"{self.id}-stderr")
                task_status.started()
                await self._read_until_gone()
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

    async def _read_until_gone(self) -> None:
        """Hand on the replica's frames until its stdout and stderr end, or, once its process
        has exited (and its group is killed), at most ``_EOF_WAIT`` seconds more: a process
        that inherited the pipes must not hide the replica's death."""
        assert self.process.stdout is not None
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._watch_exit, tg.cancel_scope, name=f"{self.id}-exit")
            await self._link.read_loop(self.process.stdout)
            await self._stderr_ended.wait()  # its tail tells how it died
            tg.cancel_scope.cancel()

    async def _watch_exit(self, reading: anyio.CancelScope) -> None:
        await self.process.wait()
        self.kill()  # its children hold the pipes too: end of file comes once they are dead
        reading.deadline = min(reading.deadline, anyio.current_time() + _EOF_WAIT)

    async def _drain_stderr(self) -> None:
        assert self.process.stderr is not None
        try:
            async for chunk in self.process.stderr:
                self._stderr_tail = (self._stderr_tail + chunk)[-_STDERR_TAIL:]
                # The replica's own output (outside executions) stays visible to the operator.
                logger.info(
                    "replica_stderr",
                    replica_id=self.id,
                    text=chunk.decode(errors="replace").rstrip(),
                )
        finally:
            self._stderr_ended.set()


class ProcessRuntime(Runtime):
    """Each replica is ``python -m triggerfish.engine.replica.runner`` in a child process,
    with this interpreter, this ``sys.path`` (so functions pickled by reference import there)
    and the service's env and secrets."""

    @classmethod
    def for_engine(cls, engine_id: str) -> ProcessRuntime:
        """The factory of the runtime registry (process replicas need no engine id)."""
        return cls()

    async def start_replica(
        self, plan: ReplicaPlan, listener: ReplicaListener, task_group: TaskGroup
    ) -> Replica:
        service = plan.service
        env = service.environment()
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        env["PYTHONUNBUFFERED"] = "1"
        # Its own process group, killed with it (see kill), made by the runner itself: a new
        # session (setsid) would do it too, but where the kernel groups the scheduling of
        # processes by session (autogroup), each replica would then be weighed as a desktop
        # of its own against the engine, and calls took several percent longer.
        env[protocol.OWN_GROUP_ENV] = "1"
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
