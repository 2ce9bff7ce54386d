"""A real ``triggerfish serve`` in a subprocess, and the real CLI against it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).parents[2]
APP = "tests.daemon.daemon_app:setup"
#: Variables of the developer's shell that would point a test at another daemon or key.
_SCRUBBED = (
    "TRIGGERFISH_API_URL",
    "TRIGGERFISH_API_KEY",
    "TRIGGERFISH_API_KEYS",
    "TRIGGERFISH_CONFIG",
    "TRIGGERFISH_HOST",
    "TRIGGERFISH_PORT",
    "TRIGGERFISH_DATA_DIR",
    "TRIGGERFISH_STORE",
    "TRIGGERFISH_MAX_BODY_BYTES",
    "TRIGGERFISH_DRAIN_TIMEOUT",
    "TRIGGERFISH_KILL_GRACE",
    "TRIGGERFISH_APP",
)
_SERVING = re.compile(r"triggerfish serving on (\S+)")


def base_env(credentials: Path, **extra: str) -> dict[str, str]:
    """The environment of a daemon or CLI process: this checkout first on the path, its own
    credentials file, none of the caller's triggerfish settings."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["TRIGGERFISH_CREDENTIALS"] = str(credentials)
    env["COLUMNS"] = "250"  # rich tables print ids whole
    env["NO_COLOR"] = "1"
    env.update(extra)
    return env


def poll(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.02) -> Any:
    """``predicate()`` once it is truthy; fails after ``timeout`` seconds naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


@dataclass
class Daemon:
    """A running daemon: where it listens, its key, its files and its process."""

    url: str
    key: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    stderr_path: Path
    credentials: Path
    headers: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.headers = {"X-API-Key": self.key}

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def http(self, **options: Any) -> httpx.Client:
        """A raw HTTP client with the key."""
        options.setdefault("timeout", 30)
        return httpx.Client(base_url=self.url, headers=self.headers, **options)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM and wait; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            raise

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


def start_daemon(
    directory: Path,
    *,
    app: str = APP,
    data_dir: Path | None = None,
    key: str | None = None,
    extra_args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    timeout: float = 30,
) -> Daemon:
    """``python -m triggerfish serve`` on a free port of 127.0.0.1, ready when it returns.

    With no ``key``, the daemon makes one on its first start and saves it in the credentials
    file in ``directory``; a restart on the same data dir passes the key it made then."""
    directory.mkdir(parents=True, exist_ok=True)
    data_dir = data_dir or directory / "data"
    credentials = directory / "credentials.json"
    n = len(list(directory.glob("daemon-*.stderr")))
    stderr_path = directory / f"daemon-{n}.stderr"
    command = [sys.executable, "-m", "triggerfish", "serve", "--data-dir", str(data_dir)]
    command += ["--port", "0", "--app", app, *extra_args]
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=base_env(credentials, **(env or {})),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )

    def serving() -> str | None:
        if process.poll() is not None:
            text = stderr_path.read_text(errors="replace")
            raise AssertionError(f"the daemon exited with {process.returncode}:\n{text}")
        found = _SERVING.search(stderr_path.read_text(errors="replace"))
        return found.group(1) if found else None

    try:
        url = poll(serving, timeout, "the daemon to listen")
        if key is None:
            key = json.loads(credentials.read_text())[url]

        def healthy() -> bool:
            try:
                return httpx.get(f"{url}/health", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        poll(healthy, timeout, "/health to answer")
    except BaseException:
        process.kill()
        process.wait(timeout=10)
        raise
    assert isinstance(key, str) and key, f"no API key for {url} in {credentials}"
    return Daemon(url, key, data_dir, process, stderr_path, credentials)


def cli(
    daemon: Daemon | None,
    *args: str,
    key: str | None = None,
    url: str | None = None,
    timeout: float = 60,
    credentials: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """The real ``triggerfish`` command, as a user runs it, pointed at ``daemon``."""
    extra: dict[str, str] = {}
    if daemon is not None or url is not None:
        extra["TRIGGERFISH_API_URL"] = url or (daemon.url if daemon else "")
    if daemon is not None or key is not None:
        extra["TRIGGERFISH_API_KEY"] = key or (daemon.key if daemon else "")
    if credentials is None:
        assert daemon is not None, "say which credentials file a CLI without a daemon reads"
        credentials = daemon.credentials
    return subprocess.run(
        [sys.executable, "-m", "triggerfish", *args],
        cwd=ROOT,
        env=base_env(credentials, **extra),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def cli_process(daemon: Daemon, *args: str) -> subprocess.Popen[str]:
    """The real ``triggerfish`` command, pointed at ``daemon``, left running: for the commands
    that stream (``logs -f``, ``watch``)."""
    return subprocess.Popen(
        [sys.executable, "-m", "triggerfish", *args],
        cwd=ROOT,
        env=base_env(
            daemon.credentials, TRIGGERFISH_API_URL=daemon.url, TRIGGERFISH_API_KEY=daemon.key
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_finished(daemon: Daemon, execution_id: str, timeout: float = 30) -> dict[str, Any]:
    """An execution once it has ended, asked of the daemon with ``?timeout=`` long polls."""
    with daemon.http() as http:

        def finished() -> dict[str, Any] | None:
            answer = http.get(f"/executions/{execution_id}/result", params={"timeout": 1})
            assert answer.status_code in (200, 202), answer.text
            body: dict[str, Any] = answer.json()
            return body if body["finished"] else None

        result: dict[str, Any] = poll(finished, timeout, f"{execution_id} to finish")
        return result
