"""The door replicas on other machines come in by: a TCP listener that admits a connection
only with a token issued for one replica, and only once.

A replica started elsewhere (a Swarm task on any node) has python3 and none of our code. It
runs the bootstrap (``triggerfish.engine.replica.bootstrap``), which connects here and sends
one line, ``TRIGGERFISH <token>``. For a token that was issued and not yet used, the gate
answers ``OK`` and the runner's code (a zip of the ``triggerfish`` and ``cloudpickle``
packages, imported from the zip), and hands the connection to whoever waits for that replica;
from then on it carries the usual frames. An unknown, reused, revoked or malformed token gets
``NO`` and a closed connection, and is logged with the peer's address (never the token).
"""

from __future__ import annotations

import io
import secrets
import struct
import zipfile
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import anyio
from anyio.abc import SocketAttribute, SocketStream, TaskStatus
from anyio.streams.buffered import BufferedByteReceiveStream

from ..log import logger

__all__ = ["GREETING", "ReplicaGate", "Ticket", "runner_bundle"]

GREETING = b"TRIGGERFISH "
_MAX_LINE = 200
_HELLO_TIMEOUT = 10.0
BUNDLE_SIZE = struct.Struct("!I")


@dataclass(eq=False)
class Ticket:
    """One replica's right to come in: its token, and its connection once it came."""

    token: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)
    arrived: anyio.Event = field(default_factory=anyio.Event, repr=False)
    stream: SocketStream | None = None


class ReplicaGate:
    """Admits replicas that connect back with their token.

    Duties: ``issue`` makes a ticket whose token is good for exactly one connection;
    ``admitted`` waits for that connection (None if the ticket was revoked first); every other
    connection is refused and logged. Start it with ``await task_group.start(gate.serve)``,
    which gives the port bound.
    """

    def __init__(self, host: str = "0.0.0.0", port: int = 0) -> None:
        self.host = host  # all interfaces by default: replicas on other nodes connect
        self.port = port
        self.refused = 0
        self._open: dict[str, Ticket] = {}
        self._bundle = b""

    async def serve(self, *, task_status: TaskStatus[int]) -> None:
        self._bundle = await anyio.to_thread.run_sync(runner_bundle)
        listener = await anyio.create_tcp_listener(local_host=self.host, local_port=self.port)
        async with listener:
            self.port = listener.extra(SocketAttribute.local_port)
            logger.info("replica_gate_listening", host=self.host, port=self.port)
            task_status.started(self.port)
            await listener.serve(self._admit)

    def issue(self) -> Ticket:
        """A ticket for one replica; its token admits one connection."""
        ticket = Ticket()
        self._open[ticket.token] = ticket
        return ticket

    async def admitted(self, ticket: Ticket) -> SocketStream | None:
        """The replica's connection once it came in; None if the ticket was revoked first."""
        await ticket.arrived.wait()
        return ticket.stream

    def revoke(self, ticket: Ticket) -> None:
        """The ticket is no good any more (its replica is gone, or never came)."""
        if self._open.pop(ticket.token, None) is not None:
            ticket.arrived.set()

    async def _admit(self, stream: SocketStream) -> None:
        peer = _peer(stream)
        token = None
        with anyio.move_on_after(_HELLO_TIMEOUT):
            token = await _hello(stream)
        # Taken out as it is used: a second connection with the same token is unknown.
        ticket = self._open.pop(token, None) if token else None
        if ticket is None:
            self.refused += 1
            reason = "malformed greeting" if token is None else "unknown or used token"
            logger.warning("replica_refused", peer=peer, reason=reason)
            with anyio.move_on_after(1):
                await stream.send(b"NO " + reason.encode() + b"\n")
            await stream.aclose()
            return
        try:
            await stream.send(b"OK\n" + BUNDLE_SIZE.pack(len(self._bundle)) + self._bundle)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            await stream.aclose()
            ticket.arrived.set()
            return
        logger.info("replica_admitted", peer=peer)
        ticket.stream = stream
        ticket.arrived.set()


async def _hello(stream: SocketStream) -> str | None:
    """The token of a ``TRIGGERFISH <token>`` line; None for anything else."""
    buffered = BufferedByteReceiveStream(stream)
    try:
        line = await buffered.receive_until(b"\n", _MAX_LINE)
    except (anyio.IncompleteRead, anyio.DelimiterNotFound, anyio.EndOfStream, OSError):
        return None
    if buffered.buffer:  # nothing may follow the greeting before our answer
        return None
    if not line.startswith(GREETING):
        return None
    token = line[len(GREETING) :].decode("ascii", errors="replace").strip()
    return token or None


def _peer(stream: SocketStream) -> str:
    address = stream.extra(SocketAttribute.remote_address, None)
    if isinstance(address, tuple):
        return f"{address[0]}:{address[1]}"
    return str(address)


@cache
def runner_bundle() -> bytes:
    """A zip of the ``triggerfish`` and ``cloudpickle`` packages' Python files, importable
    from the zip itself (``sys.path.insert(0, "bundle.zip")``)."""
    import cloudpickle

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bundle:
        for package in (Path(__file__).parents[2], Path(cloudpickle.__file__).parent):
            for path in sorted(package.rglob("*.py")):
                bundle.write(path, path.relative_to(package.parent).as_posix())
    return buffer.getvalue()
