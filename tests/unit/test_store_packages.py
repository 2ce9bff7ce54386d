"""The Store contract for packages, revisions and deployed services, run against every backend."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

import anyio
import pytest

from triggerfish import ConfigurationError, MemoryStore, Store
from triggerfish.models import ExecutionQuery as Q
from triggerfish.models import ExecutionStatus, PackageDefinition, ServiceDefinition

from .test_store import record

pytestmark = pytest.mark.anyio

PACKAGE = PackageDefinition.parse(
    {"name": "img", "modules": [{"entryPoint": "main.py", "functions": [{"name": "resize"}]}]}
)
SERVICE = ServiceDefinition.parse({"name": "resizer", "packageName": "img"})


async def test_revisions_are_numbered_and_codebases_kept_once(
    store_factory: Callable[[], Store],
) -> None:
    store = store_factory()
    async with anyio.create_task_group() as tg:
        await store.start(tg)
        first = await store.add_package_revision(PACKAGE, b"zip-1", 10.0)
        second = await store.add_package_revision(PACKAGE, b"zip-2", 11.0)
        changed = PACKAGE.model_copy(update={"description": "only the definition changed"})
        third = await store.add_package_revision(changed, None, 12.0)
        assert (first.revision, second.revision, third.revision) == (1, 2, 3)
        assert first.codebase_sha256 == hashlib.sha256(b"zip-1").hexdigest()
        assert third.codebase_sha256 == second.codebase_sha256  # the update reused it
        assert (third.codebase_size, third.created_at.timestamp()) == (5, 12.0)
        assert await store.codebase(first.codebase_sha256) == b"zip-1"
        assert await store.codebase("0" * 64) is None
        with pytest.raises(ConfigurationError, match="no revision whose codebase"):
            await store.add_package_revision(PACKAGE.model_copy(update={"name": "new"}), None, 13.0)
        assert await store.package_names() == ["img"]
        assert await store.package_revisions("missing") == []
        await store.aclose()
    # Durable: a store opened again on the same file or database (memory starts empty, by
    # contract).
    again = store_factory()
    async with anyio.create_task_group() as tg:
        await again.start(tg)
        revisions = await again.package_revisions("img")
        if not isinstance(again, MemoryStore):
            assert revisions == [first, second, third]
            assert revisions[2].package.description == "only the definition changed"
            assert await again.codebase(second.codebase_sha256) == b"zip-2"
        else:
            assert revisions == []
        await again.aclose()


async def test_concurrent_pushes_get_distinct_revisions(
    store_factory: Callable[[], Store],
) -> None:
    store = store_factory()
    numbers: list[int] = []

    async def push(i: int) -> None:
        numbers.append((await store.add_package_revision(PACKAGE, b"z%d" % i, 1.0)).revision)

    async with anyio.create_task_group() as tg:
        await store.start(tg)
        async with anyio.create_task_group() as pushers:
            for i in range(20):
                pushers.start_soon(push, i)
                store.save(record())  # group commits run in between
        assert sorted(numbers) == list(range(1, 21))
        await store.aclose()


async def test_service_versions_and_activity(store_factory: Callable[[], Store]) -> None:
    store = store_factory()
    async with anyio.create_task_group() as tg:
        await store.start(tg)
        one = await store.add_service_version(SERVICE, "default_module", 2, 20.0)
        two = await store.add_service_version(SERVICE, "default_module", 1, 21.0)
        other = await store.add_service_version(
            SERVICE.model_copy(update={"name": "aaa"}), "default_module", 1, 22.0
        )
        assert (one.version, two.version, other.version) == (1, 2, 1)
        assert one.definition.package_revision == 2  # "latest" pinned to what it resolved to
        assert two.revision == 1 and two.package == "img" and two.module == "default_module"
        assert await store.service_versions("resizer") == [one, two]
        assert await store.service_versions() == [other, one, two]
        assert await store.inactive_services() == set()
        await store.set_service_active("resizer", False)
        await store.add_service_version(SERVICE, "default_module", 2, 23.0)
        assert await store.inactive_services() == {"resizer"}  # a deploy keeps it paused
        await store.set_service_active("resizer", True)
        assert await store.inactive_services() == set()
        await store.aclose()


async def test_a_function_filter_includes_its_pinned_revisions(
    store_factory: Callable[[], Store],
) -> None:
    store = store_factory()
    async with anyio.create_task_group() as tg:
        await store.start(tg)
        rev1, rev2, rev10 = record("s.f@1"), record("s.f@2"), record("s.f@10")
        plain, others = record("s.f"), [record("s.fx@1"), record("s.f.g"), record("s")]
        await store.insert([rev1, rev2, rev10, plain, *others])
        ids = await store.list_ids(Q(function="s.f", limit=100))
        assert sorted(ids) == sorted(r.id for r in (rev1, rev2, rev10, plain))
        assert await store.list_ids(Q(function="s.f@1")) == [rev1.id]
        assert [r.id for r in await store.find(Q(function="s.f@10"))] == [rev10.id]
        counts = await store.count_by_status(Q(function="s.f"))
        assert counts[ExecutionStatus.PENDING] == 4
        await store.aclose()


async def test_direct_writes_need_an_open_store() -> None:
    with pytest.raises(Exception, match="not open"):
        await MemoryStore().add_package_revision(PACKAGE, b"z", time.time())
