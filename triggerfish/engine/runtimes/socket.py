"""A replica reached over a connected socket (TCP from a Swarm task, or a unix socket): the
same frames as over a local process's pipes, and a hook for what ends the replica's
container when the engine kills it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
from anyio.abc import ByteStream, TaskStatus

from .abc import ReplicaListener
from .framed import FramedReplica

#: Ends the replica's container for good (it is called once, when the replica has ended or
#: is killed) and says how it ended, in a person's words ("exited with code 137 ...").
Remove = Callable[[], Awaitable[str]]


class SocketReplica(FramedReplica):
    def __init__(self, stream: ByteStream, listener: ReplicaListener, remove: Remove) -> None:
        super().__init__(listener)
        self._stream = stream
        self._remove = remove
        self._killed = anyio.Event()
        self._ended = anyio.Event()

    async def _exited(self) -> None:
        await self._ended.wait()

    def kill(self) -> None:
        self._killed.set()

    async def run(self, *, task_status: TaskStatus[None]) -> None:
        reason = "ended"
        try:
            async with anyio.create_task_group() as tg:
                stream = self._stream
                tg.start_soon(self._write_frames, stream, stream.send_eof, name=f"{self.id}-writer")
                tg.start_soon(self._kill_on_request, tg.cancel_scope, name=f"{self.id}-killer")
                task_status.started()
                await self._read_frames(stream)
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._stream.aclose()
                reason = await self._remove()
                self._ended.set()
            self._listener.replica_exited(self, reason)

    async def _kill_on_request(self, scope: anyio.CancelScope) -> None:
        await self._killed.wait()
        scope.cancel()
