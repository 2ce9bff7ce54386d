"""Replicas that connect to the engine over a socket (containers) rather than being its
children: one listener for all of them, each connection routed to its replica by the hello
line it starts with (``hello <replica id> <token>``; see the protocol module).

The listener is any anyio ``Listener`` of byte streams: a unix socket in a private directory
mounted into local containers, or a TCP port for replicas on other hosts, where the
per-replica token is what keeps strangers out. Nothing is unpickled from a connection before
its token has matched.
"""

from __future__ import annotations

import contextlib
import secrets
import struct

import anyio
from anyio.abc import ByteStream, Listener, SocketAttribute, TaskStatus
from anyio.streams.buffered import BufferedByteReceiveStream

from ...log import logger

HELLO_TIMEOUT = 10.0
WELCOME_SIZE = struct.Struct("!I")
_MAX_HELLO = 200


class Connection:
    """One replica's end of the socket, once it said hello: read through ``receive`` (which
    may hold bytes already read past the hello line), write to and close ``stream``."""

    def __init__(self, stream: ByteStream, receive: BufferedByteReceiveStream) -> None:
        self.stream = stream
        self.receive = receive


class Expected:
    """A replica being started: its token, and its connection once it arrives."""

    def __init__(self, server: FrameServer, replica_id: str) -> None:
        self.replica_id = replica_id
        self.token = secrets.token_hex(16)
        self._server = server
        self._arrived = anyio.Event()
        self._connection: Connection | None = None

    async def connection(self) -> Connection:
        await self._arrived.wait()
        assert self._connection is not None
        return self._connection

    def _deliver(self, connection: Connection) -> None:
        self._connection = connection
        self._arrived.set()

    async def aclose(self) -> None:
        """No longer expected; a connection that came and was not taken is closed."""
        self._server.forget(self)
        if self._connection is not None:
            await self._connection.stream.aclose()


class FrameServer:
    """Accepts replicas' connections and hands each to the replica it names.

    With ``welcome`` (replicas that have none of our code: Swarm tasks), a replica admitted
    is first sent ``OK``, the welcome's size and the welcome (the runner's code), and one
    refused is told ``NO <why>``; the bootstrap reads both.
    """

    def __init__(self, welcome: bytes | None = None) -> None:
        self._expected: dict[str, Expected] = {}
        self.welcome = welcome
        self.refused = 0

    def expect(self, replica_id: str) -> Expected:
        expected = Expected(self, replica_id)
        self._expected[replica_id] = expected
        return expected

    def forget(self, expected: Expected) -> None:
        if self._expected.get(expected.replica_id) is expected:
            del self._expected[expected.replica_id]

    async def serve(self, listener: Listener[ByteStream], *, task_status: TaskStatus[None]) -> None:
        async with listener:
            task_status.started()
            await listener.serve(self._greet)

    async def _greet(self, stream: ByteStream) -> None:
        receive = BufferedByteReceiveStream(stream)
        try:
            with anyio.fail_after(HELLO_TIMEOUT):
                line = await receive.receive_until(b"\n", _MAX_HELLO)
        except (TimeoutError, anyio.EndOfStream, anyio.DelimiterNotFound, OSError) as exc:
            await self._refuse(stream, "no hello", repr(exc))
            return
        word, _, rest = line.decode(errors="replace").partition(" ")
        replica_id, _, token = rest.partition(" ")
        expected = self._expected.get(replica_id)
        if (
            word != "hello"
            or expected is None
            or not secrets.compare_digest(token.encode(), expected.token.encode())
        ):
            await self._refuse(stream, "unknown replica or token", replica_id[:40])
            return
        self.forget(expected)  # one connection per replica
        if self.welcome is not None:
            try:
                await stream.send(b"OK\n" + WELCOME_SIZE.pack(len(self.welcome)) + self.welcome)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                await stream.aclose()
                return
        expected._deliver(Connection(stream, receive))

    async def _refuse(self, stream: ByteStream, why: str, detail: str) -> None:
        # The peer's address is logged, never the token it sent.
        self.refused += 1
        peer = stream.extra(SocketAttribute.remote_address, None)
        logger.warning("replica_connection_refused", reason=why, detail=detail, peer=str(peer))
        if self.welcome is not None:
            with anyio.move_on_after(1), contextlib.suppress(OSError, anyio.BrokenResourceError):
                await stream.send(b"NO " + why.encode() + b"\n")
        await stream.aclose()
