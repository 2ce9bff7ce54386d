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
        self._listener: Listener[ByteStream] | None = None
        self._scope: anyio.CancelScope | None = None
        self._served: anyio.Event | None = None  # set once serve has returned

    def expect(self, replica_id: str) -> Expected:
        expected = Expected(self, replica_id)
        self._expected[replica_id] = expected
        return expected

    def forget(self, expected: Expected) -> None:
        if self._expected.get(expected.replica_id) is expected:
            del self._expected[expected.replica_id]

    async def serve(self, listener: Listener[ByteStream], *, task_status: TaskStatus[None]) -> None:
        """Greet each connection in a task of its own until ``stop_accepting``; returns once
        the greetings under way have ended too (or ``close`` gave up on them)."""
        self._served = anyio.Event()
        try:
            with anyio.CancelScope() as self._scope:
                async with listener, anyio.create_task_group() as greetings:
                    self._listener = listener
                    task_status.started()
                    try:
                        await listener.serve(self._greet, greetings)
                    except* anyio.ClosedResourceError:
                        pass  # closed by stop_accepting; the greetings go on
        finally:
            self._served.set()

    async def stop_accepting(self) -> None:
        """Accept no more connections: the listener is closed, which takes its socket out
        of the event loop before it wakes the pending accept.

        Never cancel a pending accept instead (nor a hello being read). On asyncio, anyio's
        UNIX listener and streams wait on a future whose ``set_result`` is the socket's
        reader callback, and its TCP listener on CPython's ``sock_accept``, whose reader
        callback sets its future too. A cancel that runs in the loop iteration whose poll
        found the socket readable (a replica connecting just then) leaves that callback
        queued behind it: it sets the cancelled future, and the loop reports
        ``InvalidStateError: invalid state`` (which fails a test run by anyio)."""
        if self._listener is not None:
            await self._listener.aclose()

    async def close(self, timeout: float = HELLO_TIMEOUT) -> None:
        """``stop_accepting``, then wait for the greetings under way, which end by
        themselves (a hello, the peer's end, ``HELLO_TIMEOUT``), at most ``timeout``; what
        is left then is cancelled. Call it once the replicas that might still be connecting
        are stopped: their connections end with them."""
        await self.stop_accepting()
        if self._served is None:  # never served
            return
        with anyio.move_on_after(timeout):
            await self._served.wait()
        if self._scope is not None:
            self._scope.cancel()

    async def _greet(self, stream: ByteStream) -> None:
        try:
            await self._admit(stream)
        except BaseException:  # cancelled: a connection that was not handed on is closed
            with anyio.CancelScope(shield=True):
                await stream.aclose()
            raise

    async def _admit(self, stream: ByteStream) -> None:
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
