"""The app the daemon tests serve: ``triggerfish serve --app tests.daemon.daemon_app:setup``.

The functions live at module level so the replicas import them by name, as user code would.
"""

from __future__ import annotations

import os
import time
from typing import Any

from triggerfish import Engine, current_context


class Opaque:
    """A result JSON cannot carry: the API shows its repr, a pickling client gets it back."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Opaque) and other.value == self.value

    def __hash__(self) -> int:
        return hash(self.value)

    def __repr__(self) -> str:
        return f"Opaque({self.value})"


def _refuse() -> None:
    raise RuntimeError("this result cannot be rebuilt outside its replica")


class Fragile:
    """A result that unpickles nowhere but where it was made (as a class that exists only in
    the replica's image would)."""

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        if os.environ.get("DAEMON_APP_REPLICA") == "1":
            return (_refuse, ())
        return (Fragile, ())


def add(a: int, b: int) -> int:
    return a + b


def slow(seconds: float, value: Any = None) -> Any:
    # short sleeps: a cancel (raised into this thread between them) stops it at once
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 0.02))
    return value


def chatty(lines: int, pause: float) -> int:
    for i in range(lines):
        print(f"line {i}", flush=True)
        time.sleep(pause)
    return lines


def boom(message: str) -> None:
    raise ValueError(message)


def as_set(*items: int) -> set[int]:
    return set(items)


def opaque(value: int) -> Opaque:
    return Opaque(value)


def item_id(item: dict[str, Any]) -> Any:
    return item["id"]


def square(x: int) -> int:
    return x * x


def needs_file(path: str) -> str:
    """Fails until the file exists: a failure that a rerun can fix."""
    with open(path) as file:
        return file.read()


def echo(body: Any) -> Any:
    return {"echo": body}


def fragile() -> Fragile:
    return Fragile()


def setup(engine: Engine) -> None:
    """Every function of the shared daemon."""
    engine.function(replicas=1, concurrency=8, description="adds two numbers")(add)
    engine.function(replicas=1, concurrency=4)(slow)
    engine.function(replicas=1, concurrency=2)(chatty)
    engine.function(replicas=1, concurrency=2)(boom)
    engine.function(replicas=1, concurrency=2)(as_set)
    engine.function(replicas=1, concurrency=2)(opaque)
    engine.function(replicas=1, concurrency=2)(item_id)
    engine.function(replicas=1, concurrency=2)(square)
    engine.function(replicas=1, concurrency=2)(needs_file)
    engine.function(replicas=1, concurrency=1, env={"DAEMON_APP_REPLICA": "1"})(fragile)
    engine.application(replicas=1, concurrency=2)(echo)


def drain_setup(engine: Engine) -> None:
    """A daemon of its own for the stop tests: two slots, so most executions queue."""
    engine.function(replicas=1, concurrency=2, max_attempts=2, backoff=0)(slow)


def identity(value: Any) -> Any:
    """Its argument back, as it came: big integers stay exact."""
    return value


def big_string(n: int) -> str:
    """A result whose JSON is ``n`` bytes and more."""
    return "x" * n


def shared_lists(depth: int = 22) -> list[Any]:
    """Lists sharing their sub-lists: a pickle of a few hundred bytes whose JSON, written out
    whole, is 2 ** depth leaves long (16 MB at 22)."""
    x: list[Any] = [0]
    for _ in range(depth):
        x = [x, x]
    return x


def hostile_setup(engine: Engine) -> None:
    """The shared daemon's functions, and those the hostile-input tests call."""
    setup(engine)
    engine.function(replicas=1, concurrency=4)(identity)
    engine.function(replicas=1, concurrency=2)(big_string)
    engine.function(replicas=1, concurrency=2)(shared_lists)


def record_run(path: str, pause: float = 0.005) -> str:
    """Appends "<execution id> <attempt> <time>" to ``path`` in one write (O_APPEND), then
    sleeps ``pause``: the crash storm's witness of every run, interrupted ones included."""
    context = current_context()
    line = f"{context.execution_id} {context.attempt} {time.time():.6f}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    time.sleep(pause)
    return context.execution_id


def storm_setup(engine: Engine) -> None:
    """The crash storm's daemon: one function, retried past every kill it may live through."""
    engine.function(replicas=1, concurrency=4, max_attempts=20, backoff=0)(record_run)


def ticked() -> str:
    """A cron trigger's function: its execution id."""
    return current_context().execution_id


def cluster_setup(engine: Engine) -> None:
    """The daemons of the several-engines tests, one database between them."""
    engine.function(replicas=1, concurrency=4)(slow)
    engine.function(replicas=1, concurrency=2)(chatty)
    engine.function(replicas=1, concurrency=2)(item_id)
    engine.function(replicas=1, concurrency=2, max_attempts=2, backoff=0)(ticked)
    engine.function(replicas=1, concurrency=4, max_attempts=3, backoff=0)(record_run)
