"""The frame traffic every replica has, over whatever carries it (pipes, a socket)."""

from __future__ import annotations

import secrets
from abc import abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from anyio.abc import ByteReceiveStream, ByteSendStream
from anyio.streams.buffered import BufferedByteReceiveStream

from ..replica import protocol
from .abc import Replica, ReplicaListener


class FramedReplica(Replica):
    """Sends queued messages in frames and hands received frames to the listener; a subclass
    says where the bytes go and how the replica starts and ends."""

    def __init__(self, listener: ReplicaListener) -> None:
        self.id = f"rep-{secrets.token_hex(4)}"
        self._listener = listener
        self._outbox: list[tuple[Any, ...]] = []
        self._wake = anyio.Event()
        self._closing = False

    def send(self, message: tuple[Any, ...]) -> None:
        self._outbox.append(message)
        self._wake.set()

    async def stop(self, grace: float) -> None:
        # What is queued goes first, then the stream to the replica ends: its runner exits
        # on end of file.
        self._closing = True
        self._wake.set()
        with anyio.move_on_after(grace, shield=True):
            await self._exited()
            return
        self.kill()

    @abstractmethod
    async def _exited(self) -> None:
        """Return once the replica has ended."""

    async def _read_frames(self, source: ByteReceiveStream) -> None:
        """Until the replica's side ends (for whatever reason)."""
        stream = BufferedByteReceiveStream(source)
        header_size = protocol.HEADER.size
        while True:
            try:
                header = await stream.receive_exactly(header_size)
                body = await stream.receive_exactly(protocol.HEADER.unpack(header)[0])
            except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError, OSError):
                return
            self._listener.replica_messages(self, protocol.decode(body))

    async def _write_frames(self, sink: ByteSendStream, end: Callable[[], Awaitable[None]]) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake = anyio.Event()
                if self._outbox:
                    batch, self._outbox = self._outbox, []
                    await sink.send(protocol.encode(batch))
                if self._closing:
                    await end()
                    return
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            return  # the replica is gone; the read loop reports how
