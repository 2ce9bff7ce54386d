"""The engine's end of a replica's frame stream, whatever carries it (pipes, a socket)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
from anyio.abc import ByteReceiveStream, ByteSendStream, ByteStream
from anyio.streams.buffered import BufferedByteReceiveStream

from ...log import logger
from ..replica import protocol
from .abc import Replica, ReplicaListener

Messages = list[tuple[Any, ...]]


class FrameLink:
    """Frames both ways between the engine and one replica.

    ``send`` queues a message and never blocks; the write loop sends whatever has queued in
    one frame. Messages may be queued before the stream exists (a container not yet
    connected): they go out once the write loop runs. ``close`` flushes the queue, then ends
    the engine's side of the stream, which tells the runner to exit.
    """

    def __init__(self, on_messages: Callable[[Messages], None]) -> None:
        self._on_messages = on_messages
        self._outbox: Messages = []
        self._wake = anyio.Event()
        self._closing = False

    def send(self, message: tuple[Any, ...]) -> None:
        self._outbox.append(message)
        self._wake.set()

    def close(self) -> None:
        self._closing = True
        self._wake.set()

    async def read_loop(self, stream: ByteReceiveStream) -> None:
        """Hand each frame's messages on until the stream ends (the replica closed it or died)."""
        buffered = stream if isinstance(stream, BufferedByteReceiveStream) else None
        buffered = buffered or BufferedByteReceiveStream(stream)
        header_size = protocol.HEADER.size
        while True:
            try:
                header = await buffered.receive_exactly(header_size)
                body = await buffered.receive_exactly(protocol.HEADER.unpack(header)[0])
            except (
                anyio.EndOfStream,
                anyio.IncompleteRead,
                anyio.BrokenResourceError,
                anyio.ClosedResourceError,
            ):
                return
            try:
                messages = protocol.decode_from_replica(body)
            except Exception as exc:  # not plain data: the replica is broken, or hostile
                logger.error("replica_frame_refused", error=f"{type(exc).__name__}: {exc}")
                return
            self._on_messages(messages)

    async def write_loop(self, stream: ByteSendStream) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake = anyio.Event()
                if self._outbox:
                    batch, self._outbox = self._outbox, []
                    await stream.send(protocol.encode(batch))
                if self._closing:
                    if isinstance(stream, ByteStream):
                        await stream.send_eof()  # a socket: its replies can still be read
                    else:
                        await stream.aclose()
                    return
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            return  # the replica is gone; the read loop reports how


class LinkedReplica(Replica):
    """A replica that is a container somewhere, reached over a socket: frames through a
    FrameLink; stopping ends the link (the runner exits on its end), then kills if need be.
    A subclass's run sets ``_ended`` once the container is gone, and ends it when ``_kill``
    is set."""

    #: How long to wait, after a kill, for the container to be gone.
    kill_wait = 10.0

    def __init__(self, replica_id: str, listener: ReplicaListener) -> None:
        self.id = replica_id
        self._listener = listener
        self._link = FrameLink(lambda messages: listener.replica_messages(self, messages))
        self._kill = anyio.Event()
        self._ended = anyio.Event()

    def send(self, message: tuple[Any, ...]) -> None:
        self._link.send(message)

    async def stop(self, grace: float) -> None:
        self._link.close()
        with anyio.move_on_after(grace, shield=True):
            await self._ended.wait()
            return
        self.kill()
        with anyio.move_on_after(self.kill_wait, shield=True):
            await self._ended.wait()  # removed, not only stopped: nothing is left behind

    def kill(self) -> None:
        self._kill.set()
