"""The replica runner: a child process that loads a service once and runs its executions.

Started as ``python -m triggerfish.engine.replica.runner`` with the protocol on stdin/stdout,
or with ``--connect unix:PATH`` (``tcp:HOST:PORT``) to speak it over a socket instead (a
container's runner): it connects, says ``hello <replica id> <token>`` in one line (from
``TRIGGERFISH_REPLICA_ID`` and ``TRIGGERFISH_REPLICA_TOKEN``, removed from its environment),
then speaks the same frames as over pipes.
It moves the protocol to private descriptors at once, so that nothing the user's code prints
can corrupt a frame: file descriptor 1 then points at stderr, and ``sys.stdout``/``sys.stderr``
and the root logger are captured per execution.

Sync functions run in a thread pool with one thread per concurrency slot; async functions run
as tasks on this process's event loop. Cancellation is raised inside the function: a
``CancelledError`` in an async one, ``InvocationCancelledError`` in a sync one (delivered into
its thread between two bytecodes; a function blocked in C code sees it when it returns).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import ctypes
import faulthandler
import gc
import importlib.util
import inspect
import io
import itertools
import logging
import os
import pickle
import queue
import signal
import socket
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

import cloudpickle

from triggerfish import errors

from . import protocol as p
from . import views
from .context import ExecutionContext, Progress, current
from .threads import SlotThreads

ErrorTriple = tuple[str, str, str]


def _error_triple(exc: BaseException) -> ErrorTriple:
    try:
        return _describe(exc)
    except Exception as broken:  # an exception whose __str__ raises must still be reported
        return (type(exc).__qualname__, f"<message unavailable: {broken!r}>", "")


def _describe(exc: BaseException) -> ErrorTriple:
    kind = type(exc)
    name = (
        kind.__qualname__
        if kind.__module__ in ("builtins", "__main__")
        else (f"{kind.__module__}.{kind.__qualname__}")
    )
    return (name, str(exc), "".join(traceback.format_exception(exc)))


class Outbox:
    """Messages to the engine, written in frames of whatever has queued, in order.

    ``send`` queues a message for the writer thread. It is what code running inside a user's
    function uses (logs, progress): a cancel may be raised into that thread at any bytecode, so
    sending is a single ``SimpleQueue.put``, done in C, which such an exception cannot cut in
    half (a Python-level lock could be left held and deadlock the replica). ``send_now`` is for
    threads outside user code (a finished execution's DONE): if no write is under way, the
    calling thread writes the queue itself, saving a thread wake-up.
    """

    _CLOSE = ("__close__",)

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._queue: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._writing = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="triggerfish-outbox", daemon=True)
        self._thread.start()

    def send(self, message: tuple[Any, ...]) -> None:
        self._queue.put(message)

    def send_now(self, message: tuple[Any, ...]) -> None:
        self._queue.put(message)
        # Whoever holds the write lock looks at the queue again after releasing it, so a
        # message queued while another thread writes is never stranded.
        while self._writing.acquire(blocking=False):
            try:
                closing = self._write_queued([])
            finally:
                self._writing.release()
            if closing:
                self._queue.put(self._CLOSE)  # leave it for the writer thread to see
                return
            if self._queue.empty():
                return

    def close(self) -> None:
        self._queue.put(self._CLOSE)
        self._thread.join(timeout=5)

    def _write_queued(self, batch: list[tuple[Any, ...]]) -> bool:
        """Write ``batch`` and everything queued; True if the close marker was among them."""
        closing = False
        while True:
            try:
                message = self._queue.get_nowait()
            except queue.Empty:
                break
            if message is self._CLOSE:
                closing = True
                break
            batch.append(message)
        if batch:
            try:
                p.write_all(self._fd, p.encode(batch))
            except OSError:
                _leave(0)  # the engine is gone; nothing is left to report to
        return closing

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            with self._writing:
                closing = first is self._CLOSE or self._write_queued([first])
            if closing:
                return


class _LineBuffer:
    """Collects one stream of one execution into whole lines before they are sent."""

    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: list[str] = []


class Running:
    """One execution in this replica."""

    __slots__ = ("attempt", "buffers", "cancelled", "execution_id", "function", "task", "thread_id")

    def __init__(self, execution_id: str, function: str, attempt: int) -> None:
        self.execution_id = execution_id
        self.function = function
        self.attempt = attempt
        self.thread_id: int | None = None
        self.task: asyncio.Task[Any] | None = None
        self.cancelled = False
        self.buffers: dict[str, _LineBuffer] | None = None  # by stream, once it is written to


_running_var: contextvars.ContextVar[Running] = contextvars.ContextVar("triggerfish_running")

#: An async execution to start on the loop: what runs, its function, input and context.
TaskStart = tuple[Running, Callable[..., Any], bytes, contextvars.Context]


class CapturedStream(io.TextIOBase):
    """``sys.stdout``/``sys.stderr`` inside a replica: text goes to the current execution's log,
    or to the replica's own stderr when no execution is running."""

    def __init__(self, runner: Runner, name: str, fallback: Any) -> None:
        self._runner = runner
        self._name = name
        self._fallback = fallback

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        running = _running_var.get(None)
        if running is None:
            self._fallback.write(text)
            self._fallback.flush()
            return len(text)
        buffers = running.buffers
        if buffers is None:
            buffers = running.buffers = {}
        buffer = buffers.get(self._name)
        if buffer is None:
            buffer = buffers[self._name] = _LineBuffer()
        buffer.parts.append(text)
        if "\n" in text:
            joined = "".join(buffer.parts)
            cut = joined.rfind("\n") + 1
            buffer.parts = [joined[cut:]] if cut < len(joined) else []
            self._runner.outbox.send((p.LOG, running.execution_id, self._name, joined[:cut]))
        return len(text)

    def flush(self) -> None:
        pass


class CapturedLogging(logging.Handler):
    """Log records made during an execution go to its log as the ``logging`` stream."""

    def __init__(self, runner: Runner) -> None:
        super().__init__()
        self._runner = runner
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        running = _running_var.get(None)
        if running is None:
            sys.__stderr__.write(self.format(record) + "\n")  # type: ignore[union-attr]
            return
        text = self.format(record) + "\n"
        self._runner.outbox.send((p.LOG, running.execution_id, "logging", text))


class Runner:
    def __init__(self, inbox_fd: int, outbox_fd: int) -> None:
        self.inbox_fd = inbox_fd
        self.outbox = Outbox(outbox_fd)
        self.loop = asyncio.new_event_loop()
        self.functions: dict[str, Callable[..., Any]] = {}
        self.async_functions: set[str] = set()
        self.whole_views: frozenset[str] = frozenset()  # applications answering whole JSON
        self.running: dict[str, Running] = {}
        self.pool: SlotThreads | None = None
        self.requests: dict[int, concurrent.futures.Future[Any]] = {}
        self.request_ids = itertools.count(1)
        self.stopped = asyncio.Event()
        self.cancel_lock = threading.Lock()

    # -- startup -------------------------------------------------------------------------

    def run(self) -> None:
        threading.Thread(target=self._read_inbox, name="triggerfish-inbox", daemon=True).start()
        try:
            self.loop.run_until_complete(self.stopped.wait())
        finally:
            self.outbox.close()

    def _read_inbox(self) -> None:
        # Messages are handled on this thread: sync functions go straight to the worker pool
        # and their results straight to the outbox, so the event loop is only woken for async
        # functions. Each hop between threads costs more than a no-op function does.
        while True:
            try:
                frame = p.read_frame(self.inbox_fd)
            except (OSError, pickle.UnpicklingError):
                frame = None
            if frame is None:
                # The engine closed the pipe (it stopped or died): leave at once.
                self.outbox.close()
                _leave(0)
            tasks: list[TaskStart] = []  # async starts: one wake of the loop per frame
            for message in frame:
                kind = message[0]
                if kind == p.RUN:
                    task = self._start(*message[1:])
                    if task is not None:
                        tasks.append(task)
                elif kind == p.CANCEL:
                    self._cancel(message[1])
                elif kind == p.REPLY:
                    self._reply(*message[1:])
                elif kind == p.INIT:
                    self._init(message[1])
            if tasks:
                self.loop.call_soon_threadsafe(self._start_tasks, tasks)

    def _init(self, payload: bytes) -> None:
        try:
            spec = cloudpickle.loads(payload)
            self.pool = SlotThreads(int(spec["concurrency"]), "triggerfish-exec")
            if spec["kind"] == "class":
                instance = spec["target"](**spec["init_params"])  # once per replica
                self.functions = {
                    name: getattr(instance, attr) for name, attr in spec["methods"].items()
                }
            elif spec["kind"] == "codebase":
                self.functions = load_codebase(spec)
            else:
                self.functions = dict(spec["functions"])
            self.whole_views = frozenset(spec.get("whole_views", ()))
            for name, target in self.functions.items():
                unwrapped = inspect.unwrap(target)
                if inspect.iscoroutinefunction(unwrapped) or inspect.isasyncgenfunction(unwrapped):
                    self.async_functions.add(name)
        except BaseException as exc:  # anything __init__ raises is the service's error
            self.outbox.send((p.INIT_FAILED, _error_triple(exc)))
            self.outbox.close()
            os._exit(3)
        # What is loaded now (modules, the function's model) lives as long as the replica:
        # keep it out of the collector's full passes, which otherwise walk it all every few
        # seconds under load and stall every execution in flight for tens of milliseconds.
        gc.freeze()
        self.outbox.send((p.READY, os.getpid()))

    # -- executions ----------------------------------------------------------------------

    def _start(
        self, execution_id: str, function: str, blob: bytes, attempt: int
    ) -> TaskStart | None:
        """Start a sync function in the pool; an async one is returned, for the loop."""
        running = Running(execution_id, function, attempt)
        self.running[execution_id] = running
        target = self.functions.get(function)
        if target is None:
            self._finish(running, False, ("LookupError", f"no function {function!r}", ""))
            return None
        context = ExecutionContext(
            execution_id,
            function,
            attempt,
            Progress(lambda pct, msg: self.outbox.send((p.PROGRESS, execution_id, pct, msg))),
            self._request,
            self.loop,
        )
        ctx = contextvars.copy_context()
        ctx.run(self._bind, running, context)
        if function in self.async_functions:
            return (running, target, blob, ctx)
        assert self.pool is not None
        self.pool.submit(ctx.run, self._run_sync, running, target, blob)
        return None

    def _start_tasks(self, tasks: list[TaskStart]) -> None:
        for running, target, blob, ctx in tasks:
            if running.cancelled:
                self._complete(running, (False, errors.InvocationCancelledError("cancelled")))
                continue
            running.task = self.loop.create_task(
                self._run_async(running, target, blob), context=ctx
            )

    @staticmethod
    def _bind(running: Running, context: ExecutionContext) -> None:
        _running_var.set(running)
        current.set(context)

    def _run_sync(self, running: Running, target: Callable[..., Any], blob: bytes) -> None:
        outcome: tuple[bool, Any] | None = None
        try:
            with self.cancel_lock:
                running.thread_id = threading.get_ident()
            outcome = self._call_sync(running, target, blob)
        except BaseException as exc:  # a cancel delivered just as the function returned
            outcome = outcome or (False, exc)
        while True:
            try:
                with self.cancel_lock:
                    running.thread_id = None
                # Drop a cancel that was delivered too late to matter. Only a cancelled one
                # can have been: ``_cancel`` marks it before it delivers, under the same lock.
                if running.cancelled:
                    ctypes.pythonapi.PyThreadState_SetAsyncExc(
                        ctypes.c_ulong(threading.get_ident()), None
                    )
                break
            except errors.InvocationCancelledError:
                continue
        self._complete(running, outcome)

    def _call_sync(
        self, running: Running, target: Callable[..., Any], blob: bytes
    ) -> tuple[bool, Any]:
        try:
            if running.cancelled:
                raise errors.InvocationCancelledError("cancelled before it started")
            args, kwargs = p.load_input(blob)
            result = target(*args, **kwargs)
            if inspect.isgenerator(result):
                last = None
                for last in result:
                    self._yielded(running, last)
                result = last
            return (True, result)
        except BaseException as exc:
            return (False, exc)

    async def _run_async(self, running: Running, target: Callable[..., Any], blob: bytes) -> None:
        try:
            args, kwargs = p.load_input(blob)
            if inspect.isasyncgenfunction(inspect.unwrap(target)):
                last = None
                async for last in target(*args, **kwargs):
                    self._yielded(running, last)
                result = last
            else:
                result = await target(*args, **kwargs)
            outcome: tuple[bool, Any] = (True, result)
        except BaseException as exc:  # CancelledError included: that is how cancel ends
            outcome = (False, exc)
        self._complete(running, outcome)

    @staticmethod
    def _dump(value: Any) -> bytes:
        try:
            return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:
            pass  # cloudpickle handles what plain pickle cannot (lambdas, local classes)
        try:
            return bytes(cloudpickle.dumps(value))
        except Exception as exc:
            raise TypeError(f"the function's result cannot be pickled: {exc}") from exc

    def _view(self, running: Running, value: Any) -> views.View:
        """The result's JSON view: bounded, or whole for an application that answers JSON."""
        if value is None:
            return views.NULL
        limit = views.WHOLE_LIMIT if running.function in self.whole_views else views.VIEW_LIMIT
        return views.result_view(value, limit)

    def _yielded(self, running: Running, value: Any) -> None:
        view = self._view(running, value)
        self.outbox.send((p.YIELD, running.execution_id, self._dump(value), view))

    def _complete(self, running: Running, outcome: tuple[bool, Any]) -> None:
        ok, value = outcome
        if ok:
            try:
                self._finish(running, True, self._dump(value), self._view(running, value))
            except TypeError as exc:
                self._finish(running, False, _error_triple(exc))
            return
        if isinstance(value, asyncio.CancelledError):
            value = errors.InvocationCancelledError("cancelled")
        self._finish(running, False, _error_triple(value))

    def _finish(
        self, running: Running, ok: bool, payload: Any, view: views.View | None = None
    ) -> None:
        for stream, buffer in (running.buffers or {}).items():
            if buffer.parts:
                self.outbox.send((p.LOG, running.execution_id, stream, "".join(buffer.parts)))
        self.running.pop(running.execution_id, None)
        done = (p.DONE, running.execution_id, ok, payload, view)
        if self.running:
            self.outbox.send(done)  # busy: let results gather into frames
        else:
            self.outbox.send_now(done)  # the last one running: nobody to wait for

    def _cancel(self, execution_id: str) -> None:
        running = self.running.get(execution_id)
        if running is None:
            return
        running.cancelled = True
        if running.function in self.async_functions:
            # Tasks belong to the loop; one not created yet sees ``cancelled`` when it is.
            self.loop.call_soon_threadsafe(lambda: running.task and running.task.cancel())
            return
        with self.cancel_lock:
            if running.thread_id is not None:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(running.thread_id),
                    ctypes.py_object(errors.InvocationCancelledError),
                )

    # -- nested invocations --------------------------------------------------------------

    def _request(self, op: str, execution_id: str, payload: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        request_id = next(self.request_ids)
        self.requests[request_id] = future
        self.outbox.send((p.CALL, execution_id, request_id, op, payload))
        return future

    def _reply(self, request_id: int, ok: bool, payload: Any) -> None:
        future = self.requests.pop(request_id, None)
        if future is None or future.done():  # the caller gave up waiting (a cancelled await)
            return
        if kind_is_timeout(ok, payload):
            future.set_exception(TimeoutError(payload[1]))
            return
        if ok:
            future.set_result(payload)
        else:
            kind, message, extra = payload
            error_class = getattr(errors, kind, errors.InvocationFailedError)
            if issubclass(error_class, errors.InvocationFailedError):
                future.set_exception(error_class(message, **extra))
            else:
                future.set_exception(error_class(message))


def load_codebase(spec: dict[str, Any]) -> dict[str, Callable[..., Any]]:
    """Load a package's module from its extracted codebase: import the entry point file,
    instantiate the class once with the init params (or take the module's functions), and
    map each function name to what it calls.

    The codebase directory goes first on ``sys.path`` (so its own modules import) and becomes
    the working directory (so relative paths in the code find its files).
    """
    root = os.path.abspath(spec["path"])
    sys.path.insert(0, root)
    os.chdir(root)
    entry_point = spec["entry_point"]
    module_name = entry_point[: -len(".py")].replace("/", ".")
    module_spec = importlib.util.spec_from_file_location(
        module_name, os.path.join(root, entry_point)
    )
    if module_spec is None or module_spec.loader is None:
        raise ImportError(f"cannot load the entry point {entry_point!r}")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module  # before running it: pickling and dataclasses look here
    module_spec.loader.exec_module(module)
    owner: Any = module
    class_name = spec["class_name"]
    if class_name is not None:
        cls = getattr(module, class_name, None)
        if cls is None:
            raise AttributeError(f"{entry_point} defines no class {class_name!r} (its className)")
        owner = cls(**spec["init_params"])  # once per replica
    functions = {}
    for name, attr in spec["functions"].items():
        target = getattr(owner, attr, None)
        if not callable(target):
            where = f"class {class_name}" if class_name else entry_point
            raise AttributeError(
                f"{where} has no function {attr!r}, which package.json lists for this module"
            )
        functions[name] = target
    return functions


def kind_is_timeout(ok: bool, payload: Any) -> bool:
    return not ok and payload[0] == "TimeoutError"


def connect(address: str) -> int:
    """A socket to the engine at ``address`` (``unix:PATH`` or ``tcp:HOST:PORT``), past the
    hello line; its file descriptor."""
    kind, _, where = address.partition(":")
    if kind == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(where)
    elif kind == "tcp":
        host, _, port = where.rpartition(":")
        sock = socket.create_connection((host, int(port)))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    else:
        raise ValueError(f"cannot connect to {address!r}: say unix:PATH or tcp:HOST:PORT")
    replica_id = os.environ.pop("TRIGGERFISH_REPLICA_ID", "")
    token = os.environ.pop("TRIGGERFISH_REPLICA_TOKEN", "")
    sock.sendall(f"hello {replica_id} {token}\n".encode())
    return sock.detach()


def _leave(code: int) -> NoReturn:
    """Exit now. A runner that leads its own process group (a local replica: see main) kills
    the group, itself included, as its last act, so that
    nothing its functions started outlives it, even when the engine is gone (killed with
    kill -9, it can kill nothing). Not as pid 1 (a container's), whose group is everything."""
    pid = os.getpid()
    if pid != 1 and os.getpgrp() == pid:
        os.killpg(pid, signal.SIGKILL)
    os._exit(code)


def main() -> None:
    if os.environ.pop(p.OWN_GROUP_ENV, None) == "1":
        # A process group of its own, before anything can start a child: what its functions
        # start is killed with it (by the engine, or by _leave).
        os.setpgid(0, 0)
    # A crash in C code prints the Python stack to stderr, whose tail the engine puts in the
    # error of the executions that were running ("died: killed by signal 11 ...").
    faulthandler.enable()
    if len(sys.argv) == 3 and sys.argv[1] == "--connect":
        try:
            inbox_fd = connect(sys.argv[2])
        except (OSError, ValueError) as exc:
            print(f"triggerfish runner: cannot reach the engine: {exc}", file=sys.stderr)
            sys.exit(4)
        outbox_fd = os.dup(inbox_fd)
    else:
        inbox_fd, outbox_fd = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)  # output from C code goes to the replica's stderr, never into a frame
    # Ctrl-C in a terminal reaches the whole process group: the engine stops its replicas
    # itself (after draining), so a replica must not die of it first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.stdin = open(os.devnull)  # noqa: SIM115
    runner = Runner(inbox_fd, outbox_fd)
    fallback = sys.__stderr__
    sys.stdout = CapturedStream(runner, "stdout", fallback)
    sys.stderr = CapturedStream(runner, "stderr", fallback)
    root = logging.getLogger()
    root.addHandler(CapturedLogging(runner))
    if root.level == logging.WARNING:
        root.setLevel(logging.INFO)
    runner.run()


if __name__ == "__main__":
    main()
