"""What is particular to container replicas: labels and clean-up, deaths seen from outside,
resource limits, the OOM killer, secrets, images."""

from __future__ import annotations

import contextlib
import logging
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import aiodocker
import anyio
import pytest
from anyio.abc import TaskGroup
from anyio.streams.buffered import BufferedByteReceiveStream

import triggerfish
from tests.integration.test_packages import write_codebase
from triggerfish import ConfigurationError, ExecutionStatus, InvocationFailedError, ServiceState
from triggerfish.engine.replica import protocol
from triggerfish.engine.runtimes.abc import Replica
from triggerfish.engine.runtimes.docker import (
    LABEL_ENGINE,
    LABEL_REPLICA,
    LABEL_SERVICE,
    DockerRuntime,
    default_image,
)
from triggerfish.engine.runtimes.sockets import FrameServer
from triggerfish.testing.contract import Heard, _plan

from . import fns
from .helpers import containers_of, kill_container

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.usefixtures("docker_ready")]
S = ExecutionStatus
MakeEngine = Callable[..., triggerfish.Engine]
HERE = Path(__file__).parent


async def running(handle: triggerfish.FunctionHandle, execution_id: str) -> None:
    with anyio.fail_after(60):
        while (await handle.get(execution_id)).status is not S.RUNNING:
            await anyio.sleep(0.02)


async def test_containers_are_labelled_and_none_outlives_the_engine(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine()
    engine.function(fns.where, runtime="docker", replicas=2)
    async with engine:
        ids = {await engine.handle(fns.where).call_remote() for _ in range(4)}
        found = await containers_of(engine.engine_id, **{LABEL_SERVICE: "where"})
        assert len(found) == 2
        # A container's host name is its id.
        assert {c["Id"][:12] for c in found} >= {i.split("/")[0] for i in ids}
        assert all(c["Labels"][LABEL_REPLICA].startswith("rep-") for c in found)
    assert await containers_of(engine.engine_id) == []


async def test_a_container_killed_from_outside_fails_its_execution_at_once(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine()
    engine.function(fns.sleep_where, runtime="docker")
    async with engine:
        handle = engine.handle(fns.sleep_where)
        execution_id = await handle.start(60)
        await running(handle, execution_id)
        (container,) = await containers_of(engine.engine_id)
        killed_at = time.monotonic()
        await kill_container(container["Id"])
        with pytest.raises(InvocationFailedError) as caught:
            await handle.await_result(execution_id, timeout=30)
        noticed = time.monotonic() - killed_at
        assert caught.value.error_type == "ReplicaDiedError"
        assert "killed by signal 9 (SIGKILL)" in caught.value.error_message
        assert noticed < 3.0  # detection within about a second, with a wide margin
        # Replaced: the service runs the next one on a new container.
        assert not (await handle.call_remote(0)).startswith(container["Id"][:12])


async def test_an_execution_whose_container_is_killed_is_retried(make_engine: MakeEngine) -> None:
    engine = make_engine()
    engine.function(fns.slow_first_attempt, runtime="docker", max_attempts=2, backoff=0)
    async with engine:
        handle = engine.handle(fns.slow_first_attempt)
        execution_id = await handle.start(60)
        await running(handle, execution_id)
        (container,) = await containers_of(engine.engine_id)
        await kill_container(container["Id"])
        assert await handle.await_result(execution_id, timeout=60) == 2
        execution = await handle.get(execution_id)
    assert execution.attempts == 2 and execution.num_failed_attempts == 1
    assert any("died" in c.message for c in execution.status_log)


async def test_resource_limits_are_seen_inside_the_container(make_engine: MakeEngine) -> None:
    engine = make_engine()
    engine.function(fns.limits, runtime="docker", cpu=0.5, memory=0.25, ephemeral_disk=0.0625)
    async with engine:
        seen = await engine.handle(fns.limits).call_remote()
    if seen["cpu.max"] is not None:  # cgroup v2
        assert seen["cpu.max"] == "50000 100000"
    else:
        assert int(seen["cfs_quota"]) / int(seen["cfs_period"]) == 0.5
    assert int(seen["memory.max"]) == 256 << 20
    assert seen["tmp_bytes"] == 64 << 20


async def test_the_oom_killer_is_named_in_the_error(make_engine: MakeEngine) -> None:
    engine = make_engine()
    engine.function(fns.hog, runtime="docker", memory=0.125)
    async with engine:
        with pytest.raises(InvocationFailedError) as caught:
            await engine.handle(fns.hog).call_remote(400)
    assert "killed by the OOM killer (memory limit 0.125 GiB)" in caught.value.error_message


async def test_secrets_reach_the_container_and_nothing_else(
    make_engine: MakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="triggerfish")
    secret = "hunter2-do-not-print-me"
    engine = make_engine()
    engine.function(fns.secret_length, runtime="docker", secrets={"API_TOKEN": secret})
    async with engine:
        handle = engine.handle(fns.secret_length)
        execution_id = await handle.start("API_TOKEN")
        assert await handle.await_result(execution_id, timeout=60) == len(secret)
        execution = await handle.get(execution_id)
        status = engine.service_status("secret_length")
    shown = [execution.model_dump_json(), status.model_dump_json(), repr(execution)]
    shown += [r.getMessage() for r in caplog.records]
    assert any("replica_started" in line for line in shown)  # the log was captured
    assert not [line for line in shown if secret in line]


async def test_a_gpu_where_there_is_none_is_a_clear_start_error(make_engine: MakeEngine) -> None:
    if list(Path("/dev").glob("nvidia[0-9]*")):
        pytest.skip("this machine has a GPU")
    engine = make_engine()
    engine.function(fns.where, runtime="docker", gpu="1")
    async with engine:
        with pytest.raises(InvocationFailedError, match="asks for a GPU"):
            await engine.handle(fns.where).call_remote()
        assert engine.service_status("where").state is ServiceState.ERROR


async def test_a_missing_image_is_a_clear_start_error(make_engine: MakeEngine) -> None:
    engine = make_engine()
    engine.function(fns.where, runtime="docker", image="triggerfish/no-such-image:0")
    async with engine:
        with pytest.raises(InvocationFailedError, match="is not on this Docker engine"):
            await engine.handle(fns.where).call_remote()


def test_functions_of_one_service_must_agree_on_the_image(make_engine: MakeEngine) -> None:
    engine = make_engine()

    class TwoImages:
        @triggerfish.method(image="a:1")
        def one(self) -> None: ...

        @triggerfish.method(image="b:1")
        def two(self) -> None: ...

    with pytest.raises(ConfigurationError, match="names different images"):
        engine.service(TwoImages, runtime="docker")


async def _killed_engine(db: Path | str) -> str:
    """An engine (tests/docker/engine_app.py) that started two containers, killed with
    SIGKILL (no clean-up of any kind); its id."""
    app = await anyio.open_process(
        [sys.executable, "-m", "tests.docker.engine_app", str(db)],
        stdout=subprocess.PIPE,
        stderr=None,
        cwd=HERE.parents[1],
    )
    async with app:
        try:
            assert app.stdout is not None
            with anyio.fail_after(60):
                line = await BufferedByteReceiveStream(app.stdout).receive_until(b"\n", 100)
            engine_id = line.decode().strip()
            assert len(await containers_of(engine_id)) == 2
        finally:
            app.send_signal(signal.SIGKILL)
            await app.wait()
    return engine_id


async def test_a_new_engine_removes_the_containers_a_killed_one_left(tmp_path: Path) -> None:
    db = tmp_path / "engine.db"
    engine_id = await _killed_engine(db)
    left = await containers_of(engine_id)
    assert len(left) == 2  # nobody removed them: they are left over
    engine = triggerfish.Engine(db)
    assert engine.engine_id == engine_id  # the same store: the same engine
    engine.function(fns.where, runtime="docker")
    async with engine:
        await engine.handle(fns.where).call_remote()
        now = await containers_of(engine_id)
        assert not {c["Id"] for c in left} & {c["Id"] for c in now}
        assert len(now) == 1
    assert await containers_of(engine_id) == []


async def test_another_engine_removes_the_containers_a_killed_one_left(
    docker: aiodocker.Docker, tmp_path: Path
) -> None:
    dead = await _killed_engine(tmp_path / "engine.db")
    assert len(await containers_of(dead)) == 2
    # A third engine's container, labelled as the runtime labels them: not to be touched.
    third = f"third-{secrets.token_hex(4)}"
    other = await docker.containers.run(
        {"Image": default_image(), "Cmd": ["sleep", "600"], "Labels": {LABEL_ENGINE: third}}
    )
    runtime = DockerRuntime(f"adopter-{secrets.token_hex(4)}")
    try:
        async with anyio.create_task_group() as tg:
            await runtime.start(tg)
            try:
                heard = Heard()
                mine = await runtime.start_replica(_plan("docker"), heard, tg)
                # Its own id is never one of the gone: its replica lives on.
                assert await runtime.remove_left_by([dead, runtime.engine_id]) == 2
                assert await containers_of(dead) == []
                assert len(await containers_of(third)) == 1
                assert len(await containers_of(runtime.engine_id)) == 1
                assert await runtime.remove_left_by([dead]) == 0  # nothing is left
                await heard.until(
                    "READY", lambda: [m for m in heard.messages if m[0] == protocol.READY]
                )
                assert heard.exits == []
                await mine.stop(5)
            finally:
                with anyio.CancelScope(shield=True):
                    await runtime.aclose()
        assert await containers_of(runtime.engine_id) == []
        assert len(await containers_of(third)) == 1
    finally:
        await other.delete(force=True)


async def test_the_engine_that_adopts_a_killed_ones_work_removes_its_containers(
    postgres_dsn: str,
) -> None:
    """Two engines on one PostgreSQL database: the first, killed with SIGKILL, leaves two
    containers; the second finds it gone at a lease check, adopts its work and removes
    them, its own replica left alone."""
    dead = await _killed_engine(postgres_dsn)
    engine = triggerfish.Engine(triggerfish.PostgresStore(postgres_dsn, lease=0.6))
    engine.function(fns.where, runtime="docker")
    async with engine:
        await engine.handle(fns.where).call_remote()  # its own container serves
        with anyio.fail_after(30):
            while await containers_of(dead):
                await anyio.sleep(0.1)
        assert len(await containers_of(engine.engine_id)) == 1
    assert await containers_of(engine.engine_id) == []


async def test_removing_what_others_left_needs_a_started_runtime() -> None:
    runtime = DockerRuntime(f"unstarted-{secrets.token_hex(4)}")
    assert await runtime.remove_left_by(["gone"]) == 0  # logged, not raised


async def _start_unless_closed(
    runtime: DockerRuntime, heard: Heard, tg: TaskGroup, started: list[Replica]
) -> None:
    with contextlib.suppress(OSError):  # refused: the runtime closed first
        started.append(await runtime.start_replica(_plan("docker"), heard, tg))


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.1, 0.2, 0.4])
async def test_a_replica_still_starting_when_the_runtime_closes_is_removed_first(
    delay: float,
) -> None:
    """The close waits for a start under way, then for its replica's removal, before it
    closes its client: no replica's run is left using a closed client. ``delay``: the
    close comes at a different point of the start each time."""
    runtime = DockerRuntime(f"closing-{secrets.token_hex(4)}")
    heard = Heard()
    started: list[Replica] = []
    async with anyio.create_task_group() as tg:
        await runtime.start(tg)
        tg.start_soon(_start_unless_closed, runtime, heard, tg, started)
        await anyio.sleep(delay)
        await runtime.aclose()
        assert len(heard.exits) == len(started)  # each replica ended, and was told so once
        assert await containers_of(runtime.engine_id) == []


async def test_the_replica_socket_stops_in_the_round_a_replica_connects(tmp_path: Path) -> None:
    """The runtime's close stops its socket server in the very round of the event loop whose
    poll saw a replica connect (a replacement started just before the engine stopped): the
    accept's reader callback is queued behind the close then. The listener is closed, which
    takes that callback back; a cancelled accept would leave it to complete its cancelled
    future (InvalidStateError, which the anyio runner raises here)."""
    server = FrameServer()
    path = str(tmp_path / "engine.sock")
    async with anyio.create_task_group() as tg:
        await tg.start(server.serve, await anyio.create_unix_listener(path))
        await anyio.wait_all_tasks_blocked()  # the accept waits for the socket to be readable
        with socket.socket(socket.AF_UNIX) as replica:
            replica.connect(path)  # seen by the loop's next poll, whose callbacks run after
            await anyio.lowlevel.checkpoint()  # this task's next step: the close
            with anyio.fail_after(5):
                await server.close()
    assert server.refused == 0


async def test_a_runtime_without_a_docker_engine_fails_its_executions_clearly(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    nowhere = f"unix://{tmp_path}/no-docker.sock"
    engine = make_engine(runtimes={"docker": DockerRuntime("nowhere", url=nowhere)})
    engine.function(fns.where, runtime="docker")
    async with engine:
        with pytest.raises(InvocationFailedError, match="no Docker engine answers at"):
            await engine.handle(fns.where).call_remote()


async def test_a_service_json_with_a_runner_image_runs_its_codebase_in_containers(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    code = write_codebase(tmp_path / "code", "model-1", factor=2)
    engine = make_engine()
    async with engine:
        await engine.packages.push(code)
        await engine.deployments.deploy(
            {
                "name": "resizer",
                "packageName": "images",
                "initParams": {"greeting": "hi", "init_log": "/tmp/inits.log"},
                "runtime": {"runnerImage": default_image()},
            }
        )
        assert await engine.handle("resizer.resize").call_remote(4) == "hi model-1 8"
        (container,) = await containers_of(engine.engine_id)
        assert container["Image"] == default_image()
