"""Functions the Docker tests run: inside containers they import from this module, which the
runtime mounts at the same path (it is on the engine's sys.path)."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from triggerfish import InvocationCancelledError, current_context, method


def where() -> str:
    """Which replica this is: host name (a container's id) and process id."""
    return f"{socket.gethostname()}/{os.getpid()}"


def sleep_where(seconds: float) -> str:
    """Sleeps in short steps, so that a cancel raised into it lands soon."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        time.sleep(0.02)
    return where()


def hears_cancel(seconds: float) -> str:
    try:
        sleep_where(seconds)
    except InvocationCancelledError:
        print("saw the cancel")
        raise
    return "not cancelled"


def slow_first_attempt(seconds: float) -> int:
    attempt = current_context().attempt
    if attempt == 1:
        time.sleep(seconds)
    return attempt


def limits() -> dict[str, object]:
    """The cgroup limits and /tmp size this replica sees (cgroup v2, else v1)."""

    def read(*paths: str) -> str | None:
        for path in paths:
            if Path(path).exists():
                return Path(path).read_text().strip()
        return None

    tmp = os.statvfs("/tmp")
    return {
        "cpu.max": read("/sys/fs/cgroup/cpu.max"),
        "cfs_quota": read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"),
        "cfs_period": read("/sys/fs/cgroup/cpu/cpu.cfs_period_us"),
        "memory.max": read(
            "/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"
        ),
        "tmp_bytes": tmp.f_blocks * tmp.f_frsize,
    }


def hog(megabytes: int) -> int:
    """Holds ``megabytes`` of memory, touched."""
    block = b"x" * (megabytes << 20)
    time.sleep(0.5)
    return len(block)


def secret_length(name: str) -> int:
    value = os.environ.get(name, "")
    print(f"the secret has {len(value)} characters")
    return len(value)


_inits = 0


class Counter:
    """A class service: how often ``__init__`` ran in this replica."""

    def __init__(self, label: str) -> None:
        global _inits
        _inits += 1
        self.label = label

    @method
    def inits(self) -> dict[str, object]:
        return {"inits": _inits, "label": self.label, "where": where()}


def six_and_settings() -> str:
    """What a derived image adds: a requirement (six) and a data file, by its relative path."""
    import six  # type: ignore[import-untyped]  # in the derived image only

    return f"{six.__version__} {Path('conf/settings.txt').read_text()}"
