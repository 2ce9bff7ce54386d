"""What engines on one PostgreSQL database tell each other: payloads within the server's
limit, read back as they were told; and names told while nobody read them."""

from __future__ import annotations

import anyio
import pytest

from triggerfish.engine.told import Told
from triggerfish.store.sharing import payloads, read_payload


def test_messages_are_split_into_payloads_within_the_limit_and_read_back_in_order() -> None:
    messages = [f"exe-{n:020d}" for n in range(2000)] + ["é" * 3000, "x" * 100]
    told = payloads("engine-a", messages)
    assert len(told) > 1
    assert all(len(p.encode()) < 8000 for p in told)  # the server's limit, in bytes
    heard: list[str] = []
    for payload in told:
        sender, lines = read_payload(payload)
        assert sender == "engine-a"
        heard += lines
    assert heard == messages
    assert payloads("engine-a", []) == []


@pytest.mark.anyio
async def test_names_told_gather_until_read_and_none_means_everything() -> None:
    told = Told()
    told.add(["a", "b"])
    told.add(["b", "c"])
    assert await told.take() == {"a", "b", "c"}
    told.add(None)
    told.add(["d"])
    assert await told.take() is None  # some may have gone unheard: read everything
    taken: list[set[str] | None] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: _take_into(told, taken))
        await anyio.sleep(0.01)
        assert taken == []  # nothing told yet: it waits
        told.add(["e"])
    assert taken == [{"e"}]


async def _take_into(told: Told, taken: list[set[str] | None]) -> None:
    taken.append(await told.take())
