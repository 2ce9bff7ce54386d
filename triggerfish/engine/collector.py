"""Python's cyclic garbage collector, paced for an engine's rate of allocation.

At full speed an engine makes a few container objects for each event and execution (records,
rows, the coroutines of callers waiting for a commit) that live until a commit a few
milliseconds later. With CPython's default threshold a young collection runs after every 700
net allocations, that is every few hundred executions, and each one traverses the thousands of
young objects that the work in flight holds: about a fifth of the event loop's CPU in
``bench/events.py``. While an engine runs, the young generation's threshold is therefore at
least ``YOUNG_THRESHOLD``: collections run about a tenth as often, and the garbage that waits
for one (reference cycles only; reference counting frees the rest at once) stays a few MB.

The collector is one per process. The first engine to start raises the threshold (never
lowers it: an application that set a higher one keeps it); when the last one stops, the
thresholds it found come back, unless someone changed them meanwhile.
"""

from __future__ import annotations

import gc
import threading

#: The young generation's threshold while an engine runs (CPython's default is 700).
YOUNG_THRESHOLD = 10_000

_lock = threading.Lock()  # engines may run on several threads' event loops
_running = 0
_found: tuple[int, int, int] | None = None  # the thresholds before the first engine
_set: tuple[int, int, int] | None = None  # the thresholds it set


def engine_started() -> None:
    """An engine starts: pace the collector for it (the first one does)."""
    global _running, _found, _set
    with _lock:
        _running += 1
        if _running > 1:
            return
        young, middle, old = gc.get_threshold()
        if young >= YOUNG_THRESHOLD or young == 0:  # higher already, or collection turned off
            _found = _set = None
            return
        _found, _set = (young, middle, old), (YOUNG_THRESHOLD, middle, old)
        gc.set_threshold(*_set)


def engine_stopped() -> None:
    """An engine stopped: the last one gives back the thresholds it found."""
    global _running, _found, _set
    with _lock:
        _running -= 1
        if _running > 0:
            return
        if _found is not None and gc.get_threshold() == _set:
            gc.set_threshold(*_found)
        _found = _set = None
