"""The gate replicas on other machines connect back through, with a real bootstrap process."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import zipfile
from io import BytesIO

import anyio
import pytest
from anyio.abc import SocketStream

from triggerfish.engine.replica import bootstrap, protocol
from triggerfish.engine.runtimes.gate import ReplicaGate, runner_bundle

pytestmark = pytest.mark.anyio

BOOTSTRAP = inspect.getsource(bootstrap)


async def _bootstrap(port: int, token: str) -> anyio.abc.Process:
    """A replica as a Swarm task starts: ``python3 -c`` with the bootstrap text only, in an
    empty folder, with neither ``triggerfish`` nor ``cloudpickle`` importable but from the zip."""
    env = {
        "PATH": os.environ["PATH"],
        "TRIGGERFISH_ENGINE": f"127.0.0.1:{port}",
        "TRIGGERFISH_TOKEN": token,
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


async def _frame(stream: SocketStream) -> list[tuple[object, ...]]:
    data = b""
    while len(data) < protocol.HEADER.size:
        data += await stream.receive()
    (size,) = protocol.HEADER.unpack(data[: protocol.HEADER.size])
    body = data[protocol.HEADER.size :]
    while len(body) < size:
        body += await stream.receive()
    return protocol.decode(body)


async def test_a_replica_with_its_token_gets_the_runner_and_speaks_frames() -> None:
    gate = ReplicaGate("127.0.0.1")
    async with anyio.create_task_group() as tg:
        port = await tg.start(gate.serve)
        ticket = gate.issue()
        process = await _bootstrap(port, ticket.token)
        with anyio.fail_after(20):
            stream = await gate.admitted(ticket)
        assert stream is not None
        # The runner, imported from the bundle, answers an init it cannot load with
        # INIT_FAILED over the socket: the frames flow both ways.
        await stream.send(protocol.encode([(protocol.INIT, b"not a pickle")]))
        with anyio.fail_after(20):
            (message,) = await _frame(stream)
        assert message[0] == protocol.INIT_FAILED
        await stream.aclose()
        with anyio.fail_after(20):
            await process.wait()
        # The same token again is refused: a token admits one connection.
        stderr = await _refused(port, ticket.token)
        assert "refused this replica: NO unknown or used token" in stderr
        assert gate.refused == 1
        tg.cancel_scope.cancel()


async def test_a_forged_token_is_refused_and_not_logged(
    capsys: pytest.CaptureFixture[str],
) -> None:
    gate = ReplicaGate("127.0.0.1")
    async with anyio.create_task_group() as tg:
        port = await tg.start(gate.serve)
        gate.issue()
        forged = "forged-" + "x" * 20
        assert "refused" in await _refused(port, forged)
        assert gate.refused == 1
        tg.cancel_scope.cancel()
    assert forged not in capsys.readouterr().out


async def test_a_malformed_greeting_is_refused() -> None:
    gate = ReplicaGate("127.0.0.1")
    async with anyio.create_task_group() as tg:
        port = await tg.start(gate.serve)
        ticket = gate.issue()
        for greeting in (b"HELLO\n", b"TRIGGERFISH \n", b"x" * 500, b"TRIGGERFISH t\nextra"):
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                await stream.send(greeting)
                with anyio.fail_after(20):
                    answer = await stream.receive()
                assert answer.startswith(b"NO "), greeting
        assert gate.refused == 4
        gate.revoke(ticket)
        with anyio.fail_after(1):
            assert await gate.admitted(ticket) is None  # revoked: nobody waits forever
        tg.cancel_scope.cancel()


def test_the_bundle_holds_the_runner_and_cloudpickle() -> None:
    names = set(zipfile.ZipFile(BytesIO(runner_bundle())).namelist())
    assert {"triggerfish/engine/replica/runner.py", "cloudpickle/__init__.py"} <= names
    assert not [n for n in names if not n.endswith(".py")]
