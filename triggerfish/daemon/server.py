"""``triggerfish serve``: the engine and its HTTP API in one process, until SIGTERM or SIGINT.

If the engine fails (a task of its task group raises: an engine bug, since no input can), the
daemon stops at once, without the drain, and exits with status 1: a daemon that no longer
serves must not look alive to its supervisor. What was committed is kept, as after kill -9.

Shutdown, on SIGTERM or SIGINT: the HTTP server stops taking requests (those in flight get a
few seconds to finish), then the engine drains: running executions have ``drain_timeout``
seconds to finish, the rest go back to PENDING in the store and run at the next start.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable
from typing import Any, NoReturn

import anyio
import uvicorn
from anyio.abc import TaskStatus

from ..errors import ConfigurationError
from ..log import logger
from ..sdk.credentials import save_key
from ..sdk.entry import Engine
from .api import create_app
from .auth import KeyRing, check_hash, hash_key, new_key
from .config import DaemonConfig

__all__ = ["local_key_hashes", "serve"]

#: Seconds requests in flight get to finish once shutdown begins.
REQUEST_GRACE = 5
#: Seconds a daemon whose engine failed may take to stop what is left, before it just exits.
FAILED_EXIT_GRACE = 5.0


def local_key_hashes(config: DaemonConfig, url: str) -> list[str]:
    """The key hashes a daemon with no configured key accepts: those in ``<data_dir>/api-keys``,
    made on first start, when the new key itself goes to the local user's credentials file
    (under ``url``)."""
    path = config.data_dir / "api-keys"
    if path.exists():
        lines = [line.strip() for line in path.read_text().splitlines()]
        return [check_hash(line) for line in lines if line and not line.startswith("#")]
    key = new_key()
    private_data_dir(config)
    path.touch(mode=0o600)
    path.write_text(f"# API key hashes this daemon accepts, one a line\n{hash_key(key)}\n")
    saved = save_key(url, key)
    logger.warning("api_key_created", hashes_in=str(path), key_saved_in=str(saved))
    return [hash_key(key)]


def private_data_dir(config: DaemonConfig) -> None:
    """The data dir, made (or kept) readable by its owner alone: it holds every input, result
    and log. Made 0700; one made with wider modes (by an older version, or by hand) is
    narrowed to that, as the store file is to 0600 (the store makes a new one so)."""
    config.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    config.data_dir.chmod(0o700)
    store = config.store_file
    if store is not None:
        for path in (store, *store.parent.glob(f"{store.name}-*")):
            if path.exists():
                path.chmod(0o600)


def url_of(host: str, port: int) -> str:
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def listen(config: DaemonConfig) -> socket.socket:
    """The listening socket, bound here so that a port in use is one clear error (and port 0
    gives a free port, whose number the URL then carries)."""
    try:
        sock = socket.create_server((config.host, config.port), backlog=2048)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}"
        ) from None
    # Connections inherit it: a response goes out as a header write and a body write, and
    # with Nagle the body waits for the client's delayed ACK of the headers (40 ms).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def load_setup(spec: str) -> Callable[[Engine], Any]:
    """``module:function``: a function that registers functions and triggers on the engine
    (or an object with a ``__triggerfish_app__`` that does)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigurationError(f"app {spec!r} must be 'module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"app {spec!r}: cannot import {module_name!r}: {exc}") from None
    setup = getattr(module, attr, None)
    # An object may say how it is served (a compat layer's function: all of its program).
    setup = getattr(setup, "__triggerfish_app__", setup)
    if not callable(setup):
        raise ConfigurationError(f"app {spec!r}: {module_name} has no function {attr!r}")
    return setup  # type: ignore[no-any-return]


class _Server(uvicorn.Server):
    """uvicorn's server without its own signal handling: ``serve`` handles the signals, so
    the engine drains after the HTTP side has stopped."""

    def capture_signals(self) -> Any:
        return contextlib.nullcontext()


async def serve(
    config: DaemonConfig,
    *,
    engine: Engine | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Run the daemon until SIGTERM or SIGINT; ``on_ready`` gets its URL once it listens.

    The first signal stops the HTTP side and starts the drain; a second one cuts the drain
    short (running executions go back to PENDING at once); later ones are only logged."""
    config.check_bind()
    if engine is None:
        engine = Engine(
            config.store_target,
            kill_grace=config.kill_grace,
            drain_timeout=config.drain_timeout,
            # Beside a sqlite file by default; on PostgreSQL, in the data dir.
            codebase_dir=config.data_dir / "codebases" if config.store_file is None else None,
        )
    if config.app:  # before anything is made on disk: a bad app changes nothing
        await _maybe_await(load_setup(config.app)(engine))
    private_data_dir(config)
    sock = listen(config)
    host, port = sock.getsockname()[:2]
    url = url_of(str(host), int(port))
    keys = KeyRing(config.api_keys or local_key_hashes(config, url))
    server = _Server(
        uvicorn.Config(
            create_app(
                engine,
                keys,
                max_body_bytes=config.max_body_bytes,
                runtime_defaults=config.runtime,
            ),
            log_config=None,
            access_log=False,
            proxy_headers=False,  # a proxy in front sets its own; not read, so not paid for
            server_header=False,
            lifespan="off",
            timeout_graceful_shutdown=REQUEST_GRACE,
        )
    )
    try:
        async with anyio.create_task_group() as signals:
            # Receiving from before the engine starts until after it has drained: no signal
            # ever falls to Python's default handlers (a KeyboardInterrupt inside the drain).
            # A start that waits (for a store server out of reach, retried with backoff)
            # is stopped by a signal.
            starting = anyio.CancelScope()
            await signals.start(_on_signals, server, engine, starting, name="signals")
            with starting:
                await _serve_engine(engine, server, sock, config, url, on_ready)
            signals.cancel_scope.cancel()
    except Exception as exc:  # the engine's failure, as its task group raised it
        logger.critical("daemon_engine_failed", error=_first_error(exc), exc_info=exc)
        _exit_now(1)
    logger.info("daemon_stopped")


async def _serve_engine(
    engine: Engine,
    server: _Server,
    sock: socket.socket,
    config: DaemonConfig,
    url: str,
    on_ready: Callable[[str], None] | None,
) -> None:
    """Run the engine and serve the API while it runs; the drain when serving ends."""
    async with engine:
        logger.info("daemon_listening", url=url, store=config.store_name)
        if on_ready is not None:
            on_ready(url)
        try:
            await server.serve(sockets=[sock])
        except anyio.get_cancelled_exc_class():
            # Nothing of the daemon's cancels the server: the engine's task group
            # failed. Stop now (no drain), and never outlive it half alive.
            logger.critical("daemon_engine_failed", grace=FAILED_EXIT_GRACE)
            _exit_after(FAILED_EXIT_GRACE)
            engine.core.abandon_drain()
            raise
        logger.info("daemon_draining", drain_timeout=config.drain_timeout)


def _first_error(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


def _exit_now(code: int) -> NoReturn:
    """End the process at once: what is committed is safe (as after kill -9), and a thread
    left running must not keep a daemon that no longer serves alive."""
    logging.shutdown()  # the log lines that say why go out first
    os._exit(code)


def _exit_after(seconds: float) -> None:
    """A last resort once the engine has failed: if stopping what is left takes longer than
    ``seconds``, the process ends anyway. A timer thread, not a task: the event loop may be
    what is stuck."""
    timer = threading.Timer(seconds, _exit_now, (1,))
    timer.daemon = True
    timer.start()


async def _on_signals(
    server: uvicorn.Server,
    engine: Engine,
    starting: anyio.CancelScope,
    *,
    task_status: TaskStatus[None],
) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as received:
        task_status.started()
        count = 0
        async for signum in received:
            count += 1
            name = signal.Signals(signum).name
            if count == 1:
                logger.info("daemon_signal", signal=name)
                server.should_exit = True
                if not engine.core.running:  # still starting: stop waiting
                    starting.cancel()
            elif count == 2:
                logger.warning("daemon_drain_abandoned", signal=name)
                engine.core.abandon_drain()
            else:
                logger.warning("daemon_signal_ignored", signal=name, reason="already stopping")


async def _maybe_await(value: Any) -> None:
    if hasattr(value, "__await__"):
        await value
