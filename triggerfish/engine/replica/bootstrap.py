"""The first code a replica on another machine runs: it has python3 and nothing of ours.

Sent as the text of ``python3 -c``, with the engine's address in ``TRIGGERFISH_ENGINE``
(``host:port``), and this replica's id and one-time token in ``TRIGGERFISH_REPLICA_ID`` and
``TRIGGERFISH_REPLICA_TOKEN``. It connects, says ``hello <id> <token>`` (as the runner does
with ``--connect``), and on ``OK`` receives the runner's code as a zip, imports the runner
from it and runs it over the same connection (the socket takes the place of the stdin and
stdout pipes a local replica has). Refused, it says so on stderr and exits 3. Standard
library only.
"""

import os
import socket
import struct
import sys
import tempfile
import time

REFUSED_EXIT = 3


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        chunk = sock.recv(min(size, 1 << 20))
        if not chunk:
            raise ConnectionError("the engine closed the connection")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _connect(address: str, patience: float) -> socket.socket:
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + patience
    while True:
        try:
            sock = socket.create_connection((host.strip("[]"), int(port)), timeout=10)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
            continue
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock


def main() -> None:
    address = os.environ.pop("TRIGGERFISH_ENGINE")
    replica_id = os.environ.pop("TRIGGERFISH_REPLICA_ID", "")
    token = os.environ.pop("TRIGGERFISH_REPLICA_TOKEN", "")
    sock = _connect(address, patience=30.0)
    sock.sendall(f"hello {replica_id} {token}\n".encode())
    answer = b""
    while not answer.endswith(b"\n") and len(answer) < 200:
        byte = sock.recv(1)
        if not byte:
            break
        answer += byte
    if answer != b"OK\n":
        reason = answer.decode(errors="replace").strip() or "connection closed"
        sys.stderr.write(f"triggerfish: the engine at {address} refused this replica: {reason}\n")
        sys.exit(REFUSED_EXIT)
    (size,) = struct.unpack("!I", _read_exactly(sock, 4))
    bundle = _read_exactly(sock, size)
    sock.settimeout(None)
    fd, path = tempfile.mkstemp(prefix="triggerfish-runner-", suffix=".zip")
    with os.fdopen(fd, "wb") as file:
        file.write(bundle)
    sys.path.insert(0, path)
    # The runner reads frames from fd 0 and writes them to fd 1: both become the socket.
    os.dup2(sock.fileno(), 0)
    os.dup2(sock.fileno(), 1)
    from triggerfish.engine.replica import runner

    sys.argv = ["runner"]  # frames over fds 0 and 1, as for a local process
    runner.main()


if __name__ == "__main__":
    main()
