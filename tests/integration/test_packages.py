"""Packages, revisions and deployed services, on real replicas and sqlite files."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

import triggerfish
from triggerfish import (
    ConfigurationError,
    DefinitionError,
    ExecutionStatus,
    InvocationFailedError,
    ServiceState,
)

from .helpers import all_ids

pytestmark = pytest.mark.anyio
S = ExecutionStatus
MakeEngine = Callable[..., triggerfish.Engine]

MAIN = """\
import pathlib

import tools


class ServiceRunner:
    def __init__(self, greeting, init_log):
        # Loaded once per replica: the model file of this revision and a line in the log.
        self.greeting = greeting
        self.model = pathlib.Path("model.txt").read_text().strip()
        with open(init_log, "a") as log:
            log.write("init\\n")

    def resize(self, size):
        return f"{self.greeting} {self.model} {tools.scale(size)}"
"""
TOOLS = (
    "def scale(size):\n    return size * {factor}\n\n\ndef shout(text):\n    return text.upper()\n"
)
PACKAGE = {
    "name": "images",
    "modules": [
        {
            "name": "default_module",
            "entryPoint": "main.py",
            "className": "ServiceRunner",
            "initInputs": [{"name": "greeting"}, {"name": "init_log"}],
            "functions": [{"name": "resize", "input": [{"name": "size", "type": "Json"}]}],
        },
        {"name": "tools", "entryPoint": "tools.py", "functions": [{"name": "shout"}]},
    ],
}


def write_codebase(root: Path, model: str, factor: int, package: object = PACKAGE) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "main.py").write_text(MAIN)
    (root / "tools.py").write_text(TOOLS.format(factor=factor))
    (root / "model.txt").write_text(model + "\n")
    (root / "package.json").write_text(json.dumps(package))
    return root


@pytest.fixture
def code(tmp_path: Path) -> Path:
    """A codebase directory at its first state: model-1, sizes doubled."""
    return write_codebase(tmp_path / "code", "model-1", factor=2)


def service(tmp_path: Path, **fields: object) -> dict[str, object]:
    return {
        "name": "resizer",
        "packageName": "images",
        "initParams": {"greeting": "hi", "init_log": str(tmp_path / "inits.log")},
        "runtime": {"concurrency": 2, "autoscaler": {"minReplicas": 1, "maxReplicas": 1}},
        **fields,
    }


async def test_revisions_deploy_invoke_older_revision_and_roll_back(
    make_engine: MakeEngine, tmp_path: Path, code: Path
) -> None:
    engine = make_engine()
    async with engine:
        first = await engine.packages.push(code)
        one = await engine.deployments.deploy(service(tmp_path))
        resize = engine.handle("resizer.resize")
        assert [await resize.call_remote(n) for n in (1, 2, 3)] == [
            "hi model-1 2",
            "hi model-1 4",
            "hi model-1 6",
        ]
        assert (tmp_path / "inits.log").read_text() == "init\n"  # __init__ ran once

        write_codebase(code, "model-2", factor=10)
        second = await engine.packages.push(code)
        assert (first.revision, second.revision) == (1, 2)
        assert first.codebase_sha256 != second.codebase_sha256
        two = await engine.deployments.deploy(
            service(tmp_path, initParams=None)
            | {"initParams": {"greeting": "yo", "init_log": str(tmp_path / "inits.log")}}
        )
        assert (one.version, one.revision, two.version, two.revision) == (1, 1, 2, 2)
        assert await resize.call_remote(1) == "yo model-2 10"
        # Revision 1 still answers while 2 is deployed, by keyword or by name.
        assert await engine.handle("resizer.resize", revision=1).call_remote(1) == "hi model-1 2"
        assert await engine.handle("resizer.resize@1").call_remote(2) == "hi model-1 4"

        ids = await all_ids(resize)
        revisions = sorted([(await engine.get(i)).revision for i in ids], key=str)
        assert revisions == [1, 1, 1, 1, 1, 2]  # the plain name lists every revision
        execution = await engine.get(ids[0])
        assert (execution.function, execution.revision) == ("resizer.resize@1", 1)
        assert len(await all_ids(engine.handle("resizer.resize", revision=2))) == 1

        # Rollback: deploying an older revision is just a deploy.
        three = await engine.deployments.deploy(service(tmp_path, packageRevision=1))
        assert (three.version, three.revision) == (3, 1)
        assert await resize.call_remote(5) == "hi model-1 10"
        versions = await engine.deployments.versions("resizer")
        assert [(v.version, v.revision) for v in versions] == [(1, 1), (2, 2), (3, 1)]
        assert engine.deployments.get("resizer").revision == 1
        assert engine.deployments.status("resizer").state is ServiceState.ACTIVE


async def test_a_plain_functions_module_and_updating_the_definition_only(
    make_engine: MakeEngine, code: Path
) -> None:
    engine = make_engine()
    async with engine:
        await engine.packages.push(code)
        await engine.deployments.deploy(name="tools", packageName="images", moduleName="tools")
        assert await engine.handle("tools.shout").call_remote("quiet") == "QUIET"
        changed = json.loads(json.dumps(PACKAGE))
        changed["modules"][1]["functions"].append({"name": "scale"})
        updated = await engine.packages.update("images", changed)
        assert updated.revision == 2
        assert updated.codebase_sha256 == (await engine.packages.get("images", 1)).codebase_sha256
        await engine.deployments.deploy(name="tools", packageName="images", moduleName="tools")
        assert await engine.handle("tools.scale").call_remote(4) == 8
        with pytest.raises(DefinitionError, match=r"initParams\.x: not an init input"):
            await engine.deployments.deploy(
                name="other", packageName="images", moduleName="tools", initParams={"x": 1}
            )
        with pytest.raises(DefinitionError, match=r"packageRevision: .* no revision 7"):
            await engine.deployments.deploy(name="other", packageName="images", packageRevision=7)


async def test_pause_keeps_work_pending_and_triggers_quiet_until_resume(
    make_engine: MakeEngine, tmp_path: Path, code: Path
) -> None:
    engine = make_engine()
    async with engine:
        await engine.packages.push(write_codebase(code, "m", factor=1))
        trigger = {
            "name": "on-item",
            "function": "resize",
            "resource": "Item",
            "actions": ["Created"],
        }
        await engine.deployments.deploy(service(tmp_path, triggers=[trigger]))
        resize = engine.handle("resizer.resize")
        assert await resize.call_remote(1) == "hi m 1"
        status = await engine.deployments.pause("resizer")
        assert status.state is ServiceState.INACTIVE
        queued = [await resize.start(n) for n in (2, 3, 4)]
        assert await engine.emit("Item", "Created", "paused", "item-1") == []
        await anyio.sleep(1.0)
        assert {(await resize.get(i)).status for i in queued} == {S.PENDING}
        assert engine.deployments.status("resizer").replicas == 0  # its replicas went down
        assert engine.triggers.get("on-item").stats.suppressed == 1
        assert await engine.deployments.resume("resizer")
        assert [await resize.await_result(i, timeout=20) for i in queued] == [
            "hi m 2",
            "hi m 3",
            "hi m 4",
        ]
        assert engine.deployments.status("resizer").state is ServiceState.ACTIVE
        (fired,) = await engine.emit("Item", "Created", "body", "item-2")
        assert await resize.await_result(fired, timeout=20) == "hi m body"


async def test_a_codebase_whose_import_fails_puts_the_service_in_error(
    make_engine: MakeEngine, tmp_path: Path, code: Path
) -> None:
    (code / "main.py").write_text("import tools\nraise RuntimeError('no model file here')\n")
    engine = make_engine()
    async with engine:
        await engine.packages.push(code)
        await engine.deployments.deploy(service(tmp_path))
        with pytest.raises(InvocationFailedError) as caught:
            await engine.handle("resizer.resize").call_remote(1)
        assert caught.value.error_type == "ServiceInitError"
        assert "no model file here" in caught.value.error_message
        assert "main.py" in caught.value.remote_traceback
        status = engine.deployments.status("resizer")
        assert status.state is ServiceState.ERROR and status.error is not None
        assert status.error.type == "RuntimeError" and "no model file here" in status.error.message
        assert 'main.py", line 2' in status.error.traceback
        (execution_id,) = await all_ids(engine.handle("resizer.resize"))
        assert (await engine.get(execution_id)).status is S.FAILED


async def test_bad_packages_are_refused_naming_the_field(
    make_engine: MakeEngine, code: Path
) -> None:
    engine = make_engine()
    async with engine:
        (code / "package.json").write_text('{"name": "images", "modules": [')
        with pytest.raises(DefinitionError, match=r"package\.json: malformed JSON"):
            await engine.packages.push(code)
        missing = {**PACKAGE, "modules": [{**PACKAGE["modules"][0], "entryPoint": "app.py"}]}  # type: ignore[dict-item]
        with pytest.raises(DefinitionError) as caught:
            await engine.packages.push(code, missing)
        assert caught.value.where == "modules[0].entryPoint"
        assert "'app.py' is not in the codebase" in str(caught.value)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("main.py", MAIN)
            archive.writestr("../escape.py", "owned = True\n")
        with pytest.raises(ConfigurationError, match=r"'\.\./escape\.py'.*refused"):
            await engine.packages.push(buffer.getvalue(), PACKAGE)  # type: ignore[arg-type]
        assert await engine.packages.list() == []


async def test_codebase_download_and_restart_on_the_same_file(
    make_engine: MakeEngine, tmp_path: Path, code: Path
) -> None:
    (code / "__pycache__").mkdir()
    (code / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"\0")
    engine = make_engine()
    async with engine:
        pushed = await engine.packages.push(code)
        write_codebase(code, "model-2", factor=3)
        await engine.packages.push(code)
        await engine.deployments.deploy(service(tmp_path, packageRevision=1))
        await engine.deployments.deploy(service(tmp_path))
        resize = engine.handle("resizer.resize")
        assert await resize.call_remote(1) == "hi model-2 3"
        await engine.deployments.pause("resizer")
        waiting = [await resize.start(n) for n in (1, 2)]
        old = await engine.handle("resizer.resize@1").start(1)
        blob = await engine.packages.codebase("images", 1)
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    assert sorted(files) == ["main.py", "model.txt", "package.json", "tools.py"]
    assert files["model.txt"] == b"model-1\n" and files["main.py"] == MAIN.encode()

    again = make_engine()
    async with again:
        assert [r.revision for r in await again.packages.revisions("images")] == [1, 2]
        assert (await again.packages.get("images", 1)) == pushed
        assert await again.packages.codebase("images", 1) == blob
        assert again.deployments.get("resizer").version == 2
        assert again.deployments.status("resizer").state is ServiceState.INACTIVE  # kept
        resize = again.handle("resizer.resize")
        assert (await resize.get(waiting[0])).status is S.PENDING
        await again.deployments.resume("resizer")
        assert [await resize.await_result(i, timeout=20) for i in waiting] == [
            "hi model-2 3",
            "hi model-2 6",
        ]
        assert await resize.await_result(old, timeout=20) == "hi model-1 2"
        assert await resize.call_remote(5) == "hi model-2 15"
        assert again.deployments.status("resizer").state is ServiceState.ACTIVE


async def test_a_relative_sqlite_path_keeps_codebases_beside_it(
    tmp_path: Path, code: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    async with triggerfish.Engine("relative.db", kill_grace=1.0) as engine:
        pushed = await engine.packages.push(code)
        await engine.deployments.deploy(service(tmp_path))
        assert await engine.handle("resizer.resize").call_remote(1) == "hi model-1 2"
    assert (tmp_path / "codebases" / pushed.codebase_sha256 / "main.py").read_text() == MAIN
