"""Replicas as Docker Swarm tasks, on a real single-node swarm (``docker swarm init`` on
127.0.0.1), connecting back over TCP with their one-time token."""

from __future__ import annotations

import inspect
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import aiodocker
import anyio
import cloudpickle
import pytest

from triggerfish import (
    ConfigurationError,
    Engine,
    ExecutionStatus,
    InvocationFailedError,
    current_context,
)
from triggerfish.engine.replica import bootstrap
from triggerfish.engine.runtimes.swarm import SwarmRuntime

from .conftest import BASE_IMAGE as DEFAULT_IMAGE

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

# The containers cannot import this test module: its functions travel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def square(x: int) -> int:
    print(f"squaring {x}")
    return x * x


def in_a_container() -> bool:
    return os.getpid() == 1  # the replica is the first process of its own PID namespace


def slow(seconds: float) -> str:
    ctx = current_context()
    ctx.progress.update(50, "half way")
    time.sleep(seconds)
    return "done"


@pytest.fixture(autouse=True)
async def _a_swarm(docker: aiodocker.Docker) -> None:
    """A single-node swarm on 127.0.0.1, if the engine is in none yet (it stays one)."""
    if (await docker.system.info())["Swarm"]["LocalNodeState"] != "active":
        await docker.swarm.init(advertise_addr="127.0.0.1", listen_addr="127.0.0.1:2377")


async def _ours(docker: aiodocker.Docker, engine: str) -> list[Any]:
    services: list[Any] = await docker.services.list(
        filters={"label": f"triggerfish.engine={engine}"}
    )
    return services


async def test_functions_run_on_swarm_replicas_and_none_remain(
    docker: aiodocker.Docker, tmp_path: Path
) -> None:
    engine = Engine(tmp_path / "faas.db")
    engine.function(square, replicas=2, concurrency=2, runtime="swarm")
    engine.function(in_a_container, replicas=1, runtime="swarm")
    engine.function(slow, replicas=1, runtime="swarm")
    engine_id = engine.core.engine_id
    async with engine:
        assert await engine.handle(square).call_remote(7) == 49
        assert [r async for r in engine.handle(square).map(range(10))] == [i * i for i in range(10)]
        assert await engine.handle(in_a_container).call_remote()
        assert len(await _ours(docker, engine_id)) == 4  # one Swarm service per replica
        execution_id = await engine.handle(slow).start(0.5)
        assert await engine.handle(slow).await_result(execution_id, timeout=30) == "done"
        execution = await engine.handle(slow).get(execution_id)
        assert "half way" in [s.message for s in execution.status_log]
        logged = await engine.handle(square).get(
            (await engine.handle(square).list()).execution_ids[0]
        )
        assert any("squaring" in entry.text for entry in logged.logs)
        assert _swarm_runtime(engine).server.refused == 0
    assert await _ours(docker, engine_id) == []


def _swarm_runtime(engine: Engine) -> SwarmRuntime:
    runtime = engine.core.runtimes["swarm"]
    assert isinstance(runtime, SwarmRuntime)
    return runtime


async def test_a_forged_token_is_refused(docker: aiodocker.Docker, tmp_path: Path) -> None:
    engine = Engine(tmp_path / "faas.db")
    engine.function(square, replicas=(0, 1), runtime="swarm")
    async with engine:
        runtime = _swarm_runtime(engine)
        # A task someone else made, with the bootstrap but a token never issued.
        forged = await docker.services.create(
            {
                "ContainerSpec": {
                    "Image": DEFAULT_IMAGE,
                    "Command": ["python3", "-c", inspect.getsource(bootstrap)],
                    "Env": {
                        "TRIGGERFISH_ENGINE": f"127.0.0.1:{runtime.port}",
                        "TRIGGERFISH_REPLICA_ID": "rep-forged",
                        "TRIGGERFISH_REPLICA_TOKEN": "forged-token-0123456789",
                    },
                },
                "RestartPolicy": {"Condition": "none"},
                "Networks": [{"Target": "host"}],
            },
            name="tf-forged",
        )
        try:
            with anyio.fail_after(60):
                while True:
                    tasks = await docker.tasks.list(filters={"service": forged["ID"]})
                    states = [t["Status"] for t in tasks]
                    if states and states[0]["State"] in ("complete", "failed"):
                        break
                    await anyio.sleep(0.2)
            assert states[0]["ContainerStatus"]["ExitCode"] == bootstrap.REFUSED_EXIT
            assert runtime.server.refused == 1
        finally:
            await docker.services.delete(forged["ID"])


async def test_a_killed_task_fails_its_execution_and_is_replaced(
    docker: aiodocker.Docker, tmp_path: Path
) -> None:
    engine = Engine(tmp_path / "faas.db")
    engine.function(slow, replicas=1, runtime="swarm")
    async with engine:
        handle = engine.handle(slow)
        execution_id = await handle.start(60)
        with anyio.fail_after(60):
            while (await handle.get(execution_id)).status is not ExecutionStatus.RUNNING:
                await anyio.sleep(0.05)
        (service,) = await _ours(docker, engine.core.engine_id)
        (task,) = await docker.tasks.list(filters={"service": service["ID"]})
        container = docker.containers.container(task["Status"]["ContainerStatus"]["ContainerID"])
        killed_at = time.monotonic()
        await container.kill()
        with pytest.raises(InvocationFailedError, match="died"):
            await handle.await_result(execution_id, timeout=30)
        assert time.monotonic() - killed_at < 10
        assert await handle.call_remote(0) == "done"  # a new replica serves


async def test_leftovers_of_an_earlier_run_are_removed(
    docker: aiodocker.Docker, tmp_path: Path
) -> None:
    engine = Engine(tmp_path / "faas.db")
    engine.function(square, replicas=1, runtime="swarm")
    left = await docker.services.create(
        {
            "ContainerSpec": {"Image": DEFAULT_IMAGE, "Command": ["sleep", "600"]},
            "RestartPolicy": {"Condition": "none"},
        },
        name="tf-left-behind",
        labels={"triggerfish.engine": engine.core.engine_id},
    )
    async with engine:
        assert await engine.handle(square).call_remote(3) == 9
        services = [s["ID"] for s in await docker.services.list()]
        assert left["ID"] not in services


async def test_another_engine_removes_the_services_a_gone_one_left(
    docker: aiodocker.Docker,
) -> None:
    token = secrets.token_hex(4)
    dead, third = f"dead-{token}", f"third-{token}"

    async def left_by(engine_id: str) -> str:
        """A service labelled as the runtime labels its replicas'."""
        made = await docker.services.create(
            {
                "ContainerSpec": {"Image": DEFAULT_IMAGE, "Command": ["sleep", "600"]},
                "RestartPolicy": {"Condition": "none"},
            },
            name=f"tf-left-{engine_id}-{secrets.token_hex(2)}",
            labels={"triggerfish.engine": engine_id},
        )
        return str(made["ID"])

    await left_by(dead)
    await left_by(dead)
    other = await left_by(third)
    runtime = SwarmRuntime(f"adopter-{token}")
    try:
        async with anyio.create_task_group() as tg:
            await runtime.start(tg)
            try:
                # Its own id is never one of the gone.
                assert await runtime.remove_left_by([dead, runtime.engine_id]) == 2
                assert await _ours(docker, dead) == []
                assert [s["ID"] for s in await _ours(docker, third)] == [other]
                assert await runtime.remove_left_by([dead]) == 0  # nothing is left
            finally:
                with anyio.CancelScope(shield=True):
                    await runtime.aclose()
        assert [s["ID"] for s in await _ours(docker, third)] == [other]
    finally:
        await docker.services.delete(other)


async def test_an_image_that_does_not_exist_fails_executions_fast(
    docker: aiodocker.Docker, tmp_path: Path
) -> None:
    engine = Engine(tmp_path / "faas.db")
    engine.function(square, replicas=1, runtime="swarm", image="triggerfish/no-such:0")
    async with engine:
        started = time.monotonic()
        with pytest.raises(InvocationFailedError, match="did not start"):
            await engine.handle(square).call_remote(2)
        assert time.monotonic() - started < 30
    assert await _ours(docker, engine.core.engine_id) == []


async def test_a_gpu_is_refused_when_registered(tmp_path: Path) -> None:
    engine = Engine(tmp_path / "faas.db")
    with pytest.raises(ConfigurationError, match="GPU"):
        engine.function(square, runtime="swarm", gpu="nvidia")
