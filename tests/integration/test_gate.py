"""The door replicas on other machines come in by: the FrameServer in welcome mode on TCP,
with a real bootstrap process."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import zipfile
from io import BytesIO

import anyio
import pytest

from triggerfish.engine.replica import bootstrap, protocol
from triggerfish.engine.runtimes.sockets import Connection, FrameServer
from triggerfish.engine.runtimes.swarm import runner_bundle

pytestmark = pytest.mark.anyio

BOOTSTRAP = inspect.getsource(bootstrap)


async def _gate(tg: anyio.abc.TaskGroup) -> tuple[FrameServer, int]:
    server = FrameServer(welcome=runner_bundle())
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await tg.start(server.serve, listener)
    return server, port


async def _bootstrap(port: int, token: str, replica_id: str = "rep-1") -> anyio.abc.Process:
    """A replica as a Swarm task starts: ``python3 -c`` with the bootstrap text only, in an
    empty folder, with neither ``triggerfish`` nor ``cloudpickle`` importable but from the zip."""
    env = {
        "PATH": os.environ["PATH"],
        "TRIGGERFISH_ENGINE": f"127.0.0.1:{port}",
        "TRIGGERFISH_REPLICA_ID": replica_id,
        "TRIGGERFISH_REPLICA_TOKEN": token,
    }
    return await anyio.open_process(
        [sys.executable, "-I", "-S", "-c", BOOTSTRAP],  # no site-packages,
        env=env,
        cwd="/",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def _refused(port: int, token: str) -> str:
    """Run a bootstrap that is to be refused; its stderr."""
    process = await _bootstrap(port, token)
    assert process.stderr is not None
    with anyio.fail_after(20):
        stderr = b"".join([chunk async for chunk in process.stderr]).decode()
        assert await process.wait() == bootstrap.REFUSED_EXIT
    return stderr


async def _frame(connection: Connection) -> list[tuple[object, ...]]:
    header = await connection.receive.receive_exactly(protocol.HEADER.size)
    body = await connection.receive.receive_exactly(protocol.HEADER.unpack(header)[0])
    return protocol.decode(body)


async def test_a_replica_with_its_token_gets_the_runner_and_speaks_frames() -> None:
    async with anyio.create_task_group() as tg:
        server, port = await _gate(tg)
        expected = server.expect("rep-1")
        process = await _bootstrap(port, expected.token)
        with anyio.fail_after(20):
            connection = await expected.connection()
        # The runner, imported from the bundle, answers an init it cannot load with
        # INIT_FAILED over the socket: the frames flow both ways.
        await connection.stream.send(protocol.encode([(protocol.INIT, b"not a pickle")]))
        with anyio.fail_after(20):
            (message,) = await _frame(connection)
        assert message[0] == protocol.INIT_FAILED
        await connection.stream.aclose()
        with anyio.fail_after(20):
            await process.wait()
        # The same token again is refused: a token admits one connection.
        stderr = await _refused(port, expected.token)
        assert "refused this replica: NO unknown replica or token" in stderr
        assert server.refused == 1
        tg.cancel_scope.cancel()


async def test_a_forged_token_is_refused_and_not_logged(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with anyio.create_task_group() as tg:
        server, port = await _gate(tg)
        server.expect("rep-1")
        forged = "forged-" + "x" * 20
        assert "refused" in await _refused(port, forged)
        assert server.refused == 1
        tg.cancel_scope.cancel()
    assert forged not in capsys.readouterr().out


async def test_a_malformed_or_withdrawn_hello_is_refused() -> None:
    async with anyio.create_task_group() as tg:
        server, port = await _gate(tg)
        expected = server.expect("rep-1")
        withdrawn = server.expect("rep-2")
        await withdrawn.aclose()  # its replica gave up starting
        greetings = (
            b"HELLO\n",
            b"hello rep-1\n",
            b"x" * 500,
            f"hello rep-1 {expected.token[:-1]}\n".encode(),
            f"hello rep-2 {withdrawn.token}\n".encode(),
        )
        for greeting in greetings:
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                await stream.send(greeting)
                with anyio.fail_after(20):
                    answer = await stream.receive()
                assert answer.startswith(b"NO "), greeting
        assert server.refused == len(greetings)
        tg.cancel_scope.cancel()


def test_the_bundle_holds_the_runner_and_cloudpickle() -> None:
    names = set(zipfile.ZipFile(BytesIO(runner_bundle())).namelist())
    assert {"triggerfish/engine/replica/runner.py", "cloudpickle/__init__.py"} <= names
    assert not [n for n in names if not n.endswith(".py")]
