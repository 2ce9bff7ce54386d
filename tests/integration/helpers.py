from __future__ import annotations

import os
from pathlib import Path

import anyio

from triggerfish import FunctionHandle


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def kill9(pid: int) -> None:
    os.kill(pid, 9)


async def wait_for_file(path: Path, timeout: float = 10) -> str:
    with anyio.fail_after(timeout):
        while not path.exists() or not path.read_text():
            await anyio.sleep(0.01)
    return path.read_text()


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    points = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    running = best = 0
    for _, delta in points:
        running += delta
        best = max(best, running)
    return best


async def all_ids(handle: FunctionHandle, page_size: int = 50) -> list[str]:
    """Every execution id of a function, walking ``list`` page by page (newest first)."""
    ids: list[str] = []
    offset = None
    while True:
        page = await handle.list(offset=offset, limit=page_size)
        ids.extend(page.execution_ids)
        if page.offset is None:
            return ids
        offset = page.offset
