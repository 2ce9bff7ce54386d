"""The wire between the engine and a replica: length-prefixed frames, each a pickled list of
message tuples. Batching messages into frames is what lets one pipe carry tens of thousands of
executions per second. Over a socket, the runner first sends one plain line,
``hello <replica id> <token>\n``, so the engine knows which replica connected before it
unpickles anything from it. The first element of each tuple names the message:

engine -> replica
    (INIT, payload)                       payload: cloudpickled dict of what to load
    (RUN, execution_id, function, input, attempt)
    (CANCEL, execution_id)
    (REPLY, request_id, ok, payload)      answer to a CALL
replica -> engine
    (READY, pid)
    (INIT_FAILED, error)                  error: (type, message, traceback)
    (PROGRESS, execution_id, percent, message)
    (LOG, execution_id, stream, text)
    (YIELD, execution_id, value, view)    a generator's latest value, pickled, and its view
    (DONE, execution_id, ok, payload, view)   payload: pickled result, or error triple; view:
                                          the result's JSON view (see views.py), or None
    (CALL, execution_id, request_id, op, payload)   a nested invocation from inside a function

The engine reads what a replica sends with ``decode_from_replica``, which rebuilds plain data
only (tuples, lists, dicts, strings, bytes, numbers): a replica runs user code, and a pickle
that names a class or a function can run code where it is unpickled. What a replica sends is
made of those types alone; results and arguments travel as pickled bytes inside, unopened.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
from typing import Any


class PickledArgument(bytes):
    """An argument as a client sent it, still pickled: the engine passes it on without ever
    unpickling it, and the replica unpickles it just before the call (``load_input``). Only the
    first positional argument may be one (an application's request input)."""

    __slots__ = ()


def load_input(blob: bytes) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """An execution's ``(args, kwargs)``."""
    args, kwargs = pickle.loads(blob)
    if args and type(args[0]) is PickledArgument:
        args = (pickle.loads(args[0]), *args[1:])
    return args, kwargs


#: Set by the process runtime: the runner makes a process group of its own as it starts.
OWN_GROUP_ENV = "TRIGGERFISH_OWN_PROCESS_GROUP"

INIT = "init"
RUN = "run"
CANCEL = "cancel"
REPLY = "reply"
READY = "ready"
INIT_FAILED = "init_failed"
PROGRESS = "progress"
LOG = "log"
YIELD = "yield"
DONE = "done"
CALL = "call"

HEADER = struct.Struct("!I")
MAX_FRAME = 1 << 31


def encode(messages: list[tuple[Any, ...]]) -> bytes:
    """One frame holding ``messages``."""
    body = pickle.dumps(messages, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(body)) + body


def decode(body: bytes) -> list[tuple[Any, ...]]:
    """A frame from the engine (the replica trusts it)."""
    result: list[tuple[Any, ...]] = pickle.loads(body)
    return result


class _PlainData(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"a frame may not name {module}.{name}")


def decode_from_replica(body: bytes) -> list[tuple[Any, ...]]:
    """A frame from a replica: plain data only, a list of tuples. ``pickle.UnpicklingError``
    for anything else (the replica is then treated as broken)."""
    messages = _PlainData(io.BytesIO(body)).load()
    if not isinstance(messages, list) or not all(
        isinstance(m, tuple) and m and isinstance(m[0], str) for m in messages
    ):
        raise pickle.UnpicklingError("a frame is a list of message tuples")
    return messages


def read_exactly(fd: int, size: int) -> bytes | None:
    """Blocking read of ``size`` bytes from ``fd``; None at end of file."""
    chunks = []
    while size:
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int) -> list[tuple[Any, ...]] | None:
    """The next frame's messages from a blocking ``fd``; None when the other side closed."""
    header = read_exactly(fd, HEADER.size)
    if header is None:
        return None
    body = read_exactly(fd, HEADER.unpack(header)[0])
    return None if body is None else decode(body)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
