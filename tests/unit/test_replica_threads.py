"""The replica's threads for sync executions: every job runs, on at most ``size`` threads,
started only as jobs need them, and a job never waits while a thread is idle."""

from __future__ import annotations

import threading

import pytest

from triggerfish.engine.replica.threads import SlotThreads

WAIT = 10.0


def _names() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("test-slots")}


def test_threads_start_only_as_jobs_need_them() -> None:
    pool = SlotThreads(8, "test-slots-a")
    for i in range(20):  # one at a time: one thread serves them all
        done = threading.Event()
        pool.submit(done.set)
        assert done.wait(WAIT), f"job {i} never ran"
    assert {n for n in _names() if n.startswith("test-slots-a")} == {"test-slots-a_1"}


def test_jobs_beyond_the_size_wait_for_a_free_thread_and_all_run() -> None:
    pool = SlotThreads(2, "test-slots-b")
    release = threading.Event()
    started = threading.Semaphore(0)
    ran: list[int] = []
    lock = threading.Lock()

    def job(i: int) -> None:
        started.release()
        release.wait(WAIT)
        with lock:
            ran.append(i)

    for i in range(10):
        pool.submit(job, i)
    assert started.acquire(timeout=WAIT) and started.acquire(timeout=WAIT)
    assert not started.acquire(timeout=0.2), "a third job ran with only two threads"
    release.set()
    for _ in range(8):
        assert started.acquire(timeout=WAIT), "a job of the backlog never ran"
    assert {n for n in _names() if n.startswith("test-slots-b")} == {
        "test-slots-b_1",
        "test-slots-b_2",
    }
    deadline = threading.Event()
    while len(ran) < 10 and not deadline.wait(0.01):
        pass
    assert sorted(ran) == list(range(10))


def test_a_job_queued_while_the_others_block_gets_an_idle_thread() -> None:
    pool = SlotThreads(3, "test-slots-c")
    first_done = threading.Event()
    pool.submit(first_done.set)  # thread 1 runs it, then waits idle
    assert first_done.wait(WAIT)
    blocker = threading.Event()
    pool.submit(blocker.wait, WAIT)  # takes the idle thread
    second = threading.Event()
    pool.submit(second.set)  # must not wait behind the blocked one
    assert second.wait(WAIT)
    blocker.set()


def test_a_job_that_raises_leaves_its_thread_serving(capfd: pytest.CaptureFixture[str]) -> None:
    pool = SlotThreads(1, "test-slots-d")

    def broken() -> None:
        raise RuntimeError("job broke")

    pool.submit(broken)
    after = threading.Event()
    pool.submit(after.set)
    assert after.wait(WAIT), "the thread died with the job"
    assert "job broke" in capfd.readouterr().err


def test_a_pool_needs_a_thread() -> None:
    with pytest.raises(ValueError, match="at least one thread"):
        SlotThreads(0, "test-slots-e")
