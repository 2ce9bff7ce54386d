"""The threads a replica runs its sync executions on: one per concurrency slot, at most.

``concurrent.futures.ThreadPoolExecutor`` does this too, but each ``submit`` makes a Future
(a Condition and its RLock) and takes a semaphore written in Python: for a function that does
nothing, that was the larger part of a replica's CPU. A replica needs neither (an execution
reports its own end), so a job here is one ``SimpleQueue.put`` and a count under a C lock.
"""

from __future__ import annotations

import queue
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any

Job = tuple[Callable[..., Any], tuple[Any, ...]]


class SlotThreads:
    """Runs jobs on up to ``size`` threads, started as jobs need them and kept until exit.

    Every job queued is matched to exactly one thread that will take it: an idle thread, a
    thread started for it, or (all ``size`` busy) the next thread to finish, which takes a
    job from the backlog instead of going idle. So a job never waits while a thread sleeps.
    A job's exception is printed to stderr (the engine logs a replica's stderr); the thread
    goes on.
    """

    def __init__(self, size: int, name: str) -> None:
        if size < 1:
            raise ValueError(f"a pool needs at least one thread, got {size}")
        self._size = size
        self._name = name
        self._jobs: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0  # threads waiting for a job that none of the queued ones is meant for
        self._backlog = 0  # jobs queued while every thread was busy

    def submit(self, function: Callable[..., Any], *args: Any) -> None:
        with self._lock:
            if self._idle:
                self._idle -= 1
                start = False
            elif self._threads < self._size:
                self._threads += 1
                start = True
            else:
                self._backlog += 1
                start = False
            number = self._threads
        self._jobs.put((function, args))
        if start:
            threading.Thread(target=self._serve, name=f"{self._name}_{number}", daemon=True).start()

    def _serve(self) -> None:
        while True:
            function, args = self._jobs.get()
            try:
                function(*args)
            except BaseException:  # a job that fails must not take its thread with it
                traceback.print_exc(file=sys.stderr)
            with self._lock:
                if self._backlog:
                    self._backlog -= 1  # the job it takes next was queued for the next free one
                else:
                    self._idle += 1
