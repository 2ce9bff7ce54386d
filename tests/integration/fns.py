"""Functions the integration tests run on replicas (importable there, as user code would be)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from pathlib import Path

from triggerfish import InvocationCancelledError, current_context, method


def add(a: int, b: int) -> int:
    return a + b


def chatty(x: int) -> int:
    print(f"stdout says {x}")
    print(f"stderr says {x}", file=sys.stderr)
    logging.getLogger("user.code").info("logging says %s", x)
    current_context().progress.update(50, "half way")
    return x * 2


def fail(message: str) -> None:
    raise ValueError(message)


def fail_until(marker_dir: str, succeed_on: int) -> int:
    """Fails until it has been called ``succeed_on`` times (counted in files)."""
    directory = Path(marker_dir)
    directory.mkdir(exist_ok=True)
    count = len(list(directory.iterdir())) + 1
    (directory / f"call-{count}-{time.time_ns()}").touch()
    if count < succeed_on:
        raise RuntimeError(f"call {count} fails")
    return count


def sleep_then(seconds: float, value: object = None) -> object:
    time.sleep(seconds)
    return value


def interval(seconds: float) -> tuple[float, float]:
    start = time.time()
    time.sleep(seconds)
    return (start, time.time())


def stubborn(seconds: float) -> str:
    """Ignores cancellation: swallows every exception raised into it."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        with contextlib.suppress(BaseException):
            time.sleep(0.02)
    return "finished anyway"


def cooperative(marker: str, seconds: float) -> str:
    """Sleeps in short steps; records the cancellation it receives."""
    try:
        deadline = time.time() + seconds
        while time.time() < deadline:
            time.sleep(0.02)
    except InvocationCancelledError:
        Path(marker).write_text("cancelled")
        raise
    return "done"


async def async_cooperative(marker: str, seconds: float) -> str:
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        Path(marker).write_text("cancelled")
        raise
    return "done"


def slow_with_progress(seconds: float, step: float) -> str:
    deadline = time.time() + seconds
    percent = 0
    while time.time() < deadline:
        time.sleep(step)
        percent = min(99, percent + 1)
        current_context().progress.update(percent, "still going")
    return "made it"


def write_pid_then_sleep(path: str, seconds: float) -> int:
    context = current_context()
    if context.attempt > 1:
        return context.attempt
    Path(path).write_text(str(os.getpid()))
    time.sleep(seconds)
    return 0


def exit_hard(code: int) -> None:
    os._exit(code)


def fork_then_sleep(path: str, seconds: float, leave_group: bool = False) -> int:
    """Forks a child that sleeps 300 s holding the replica's pipes (it inherits them), writes
    "<replica pid> <child pid>" to ``path``, then sleeps ``seconds``. With ``leave_group``
    the child leaves the replica's process group first (``setsid``)."""
    child = os.fork()
    if child == 0:
        try:
            if leave_group:
                os.setsid()
            time.sleep(300)
        finally:
            os._exit(0)
    Path(path).write_text(f"{os.getpid()} {child}")
    time.sleep(seconds)
    return child


def touch_and_return(path: str, value: object) -> object:
    Path(path).touch()
    return value


def pid(seconds: float = 0) -> int:
    time.sleep(seconds)
    return os.getpid()


def read_env(name: str) -> str | None:
    return os.environ.get(name)


def whoami() -> dict[str, object]:
    context = current_context()
    return {"id": context.execution_id, "attempt": context.attempt, "function": context.function}


def frozen_objects() -> int:
    """How many objects the replica keeps out of the cycle collector's passes."""
    import gc

    return gc.get_freeze_count()


def parent_calls_child(x: int) -> dict[str, object]:
    context = current_context()
    child_id = context.start("add", x, 1)
    started = context.await_result(child_id)
    called = context.call_remote("add", x, 2)
    return {"me": context.execution_id, "child": child_id, "started": started, "called": called}


async def async_parent(x: int) -> int:
    context = current_context()
    result: int = await context.acall_remote("add", x, 10)
    return result


def parent_of_failing_child() -> str:
    try:
        current_context().call_remote("fail", "child broke")
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return "no error"


def counting_generator(gate: str) -> object:
    yield 1
    while not Path(gate).exists():
        time.sleep(0.02)
    yield 2


def fail_if_exists(path: str) -> str:
    if Path(path).exists():
        raise RuntimeError("flag is set")
    return "ok"


class Model:
    """A class service: ``__init__`` records each run in a file."""

    def __init__(self, counter: str, scale: int = 1) -> None:
        with open(counter, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        self.scale = scale

    @method(timeout=30)
    def predict(self, x: int) -> dict[str, int]:
        time.sleep(0.01)
        return {"value": x * self.scale, "pid": os.getpid()}


class BrokenModel:
    def __init__(self) -> None:
        raise RuntimeError("weights not found")

    @method
    def predict(self, x: int) -> int:
        return x


def segfault() -> None:
    import ctypes

    ctypes.string_at(0)


def item_id(item: dict[str, object]) -> object:
    return item["id"]


def copy_item(item: dict[str, str]) -> list[str]:
    """Dataloop's first loop: a function that creates an item, triggered by item Created."""
    return current_context().emit("Item", "Created", {"id": item["id"] + "-copy", "dir": "/in"})


def touch_item(item: dict[str, object]) -> list[str]:
    """Dataloop's second loop: a function that updates the item it was triggered by."""
    updated = {**item, "version": int(item.get("version", 0)) + 1}  # type: ignore[call-overload]
    return current_context().emit("Item", "Updated", updated)


def add_one(summary: dict[str, object]) -> int:
    return int(summary["result"]) + 1  # type: ignore[call-overload]


def tick(**kwargs: object) -> dict[str, object]:
    return {"kwargs": kwargs, "event": None}


async def async_announce(name: str) -> list[str]:
    return await current_context().aemit("Dataset", "Created", {"id": name})


class BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


def raise_bad_str() -> None:
    raise BadStr()


def nested_bad_timeout() -> object:
    context = current_context()
    return context.await_result(context.start("add", 1, 2), timeout="soon")  # type: ignore[arg-type]


def print_forever() -> None:
    while True:
        print("x" * 50)


def _planted(marker: str) -> object:
    """What unpickling a ``Planted`` result runs: it leaves the unpickling process's pid in
    ``marker``. Only a process that unpickles the result gets here."""
    with open(marker, "a") as out:
        out.write(f"{os.getpid()}\n")
    return {"rebuilt": True}


class Planted:
    """A result whose pickle runs code where it is unpickled."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (_planted, (self.marker,))


def planted(marker: str) -> Planted:
    return Planted(marker)


def result_of(summary: dict[str, object]) -> object:
    return [summary["result"], summary.get("result_encoding")]
