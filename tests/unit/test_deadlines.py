from __future__ import annotations

from triggerfish.engine.deadlines import DeadlineQueue


def test_expiry_order_rearm_and_disarm() -> None:
    woken: list[int] = []
    queue = DeadlineQueue(lambda: woken.append(1))
    queue.arm("a", 10, now=0)
    queue.arm("b", 5, now=1)  # earlier than a: wakes the sleeper
    queue.arm("c", 10, now=2)
    assert len(woken) == 2 and queue.next_deadline() == 6
    queue.arm("b", 5, now=8)  # re-armed (a progress update): now 13
    queue.disarm("c")
    assert "c" not in queue and len(queue) == 2
    assert queue.pop_expired(9.9) == []
    assert queue.pop_expired(10) == ["a"]
    assert queue.next_deadline() == 13
    assert queue.pop_expired(100) == ["b"]
    assert queue.next_deadline() is None and len(queue) == 0


def test_many_keys_leave_nothing_behind() -> None:
    queue = DeadlineQueue()
    for i in range(10_000):
        queue.arm(i, 300, now=i / 1000)
        queue.disarm(i)
    assert len(queue) == 0 and queue.next_deadline() is None
