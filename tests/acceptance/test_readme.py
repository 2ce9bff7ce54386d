"""The README's examples, run as a reader would run them, so that the documentation cannot
drift from the code.

Every ``python``, ``sh`` and ``toml`` block of the README is an example. The line before a
block may say how it runs, in a comment this test reads: ``<!-- example: KIND: why -->``.

* no comment (Python only): a whole program, run as a script in a folder of its own (where
  ``examples/`` is the project's);
* ``daemon``: run against a daemon on 127.0.0.1:8765 (the README's address), as ``make run``
  leaves it: serving the README's own ``myapp.py`` (the ``app`` block), with
  ``examples/thumbnails`` deployed; ``$KEY`` and ``$TRIGGERFISH_API_KEY`` hold its key;
* ``docker`` / ``swarm``: run where a Docker engine (and a swarm) can be had, else skipped
  saying why;
* ``postgres``: a whole program, run with ``$TRIGGERFISH_STORE`` set to a new database on the
  tests' PostgreSQL server (skipped, saying why, where none can be started);
* ``config``: a daemon config file, read by the daemon's own loader;
* ``app``: the module the daemon serves (see ``daemon``);
* ``fragment`` and ``setup``: not run, with the reason given; a fragment must still compile
  (``bash -n`` for sh), and ``setup`` is a command CI runs itself (``make test``).
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.daemon.helpers import ROOT, Daemon, base_env, cli, start_daemon
from tests.docker.conftest import docker_missing

pytestmark = pytest.mark.slow

README = ROOT / "README.md"
_BLOCK = re.compile(r"^( *)```(python|sh|toml)\n(.*?)^\1```", re.S | re.M)
_MARKER = re.compile(r"<!--\s*example:\s*(\w+)(?::\s*(.*?))?\s*-->")
KINDS = {"run", "postgres", "daemon", "docker", "swarm", "config", "app", "fragment", "setup"}


@dataclass(frozen=True)
class Example:
    line: int
    language: str
    code: str
    kind: str
    why: str

    @property
    def name(self) -> str:
        return f"README.md:{self.line}-{self.language}-{self.kind}"


def _examples() -> list[Example]:
    text = README.read_text()
    found = []
    for match in _BLOCK.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = _MARKER.search(before)
        kind, why = (marker.group(1), marker.group(2) or "") if marker else ("run", "")
        line = text[: match.start()].count("\n") + 1
        code = textwrap.dedent(match.group(3))  # a block inside a list item is indented
        found.append(Example(line, match.group(2), code, kind, why))
    return found


EXAMPLES = _examples()


def test_every_example_says_how_it_runs() -> None:
    assert len(EXAMPLES) >= 20
    for example in EXAMPLES:
        assert example.kind in KINDS, example.name
        if example.kind in ("fragment", "setup"):
            assert example.why, f"{example.name}: say why it does not run"
        if example.language != "python":  # a shell line or a config needs a daemon, a
            assert example.kind != "run", f"{example.name}: say how it runs"  # file...
    assert sum(e.kind == "app" for e in EXAMPLES) == 1


def _folder(tmp_path: Path) -> Path:
    """A reader's folder: empty but for the project's examples."""
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    return tmp_path


def _run(argv: list[str], cwd: Path, env: dict[str, str]) -> str:
    """Run as a reader would; its output. It must end well within three minutes."""
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    return done.stdout


def _run_python(code: str, cwd: Path, env: dict[str, str]) -> None:
    script = cwd / "example.py"
    script.write_text(code)
    _run([sys.executable, str(script)], cwd, env)


def _run_sh(code: str, cwd: Path, env: dict[str, str]) -> None:
    """A JSON answer the example shows in a comment (``# {...}``) must be what it prints."""
    printed = _run(["bash", "-euo", "pipefail", "-c", code], cwd, env)
    for shown in re.findall(r"#\s*(\{.*\})\s*$", code, re.M):
        assert shown in printed, (shown, printed)


def _env(credentials: Path, **extra: str) -> dict[str, str]:
    env = base_env(credentials, **extra)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # `triggerfish`
    return env


@pytest.mark.parametrize("example", [e for e in EXAMPLES if e.kind == "run"], ids=lambda e: e.name)
def test_a_program_runs(example: Example, tmp_path: Path) -> None:
    _run_python(example.code, _folder(tmp_path), _env(tmp_path / "credentials.json"))


@pytest.mark.parametrize(
    "example", [e for e in EXAMPLES if e.kind == "postgres"], ids=lambda e: e.name
)
def test_a_program_on_postgresql_runs(example: Example, tmp_path: Path, postgres_dsn: str) -> None:
    env = _env(tmp_path / "credentials.json", TRIGGERFISH_STORE=postgres_dsn)
    _run_python(example.code, _folder(tmp_path), env)


@pytest.mark.parametrize(
    "example", [e for e in EXAMPLES if e.kind in ("fragment", "setup", "app")], ids=lambda e: e.name
)
def test_a_fragment_compiles(example: Example) -> None:
    if example.language == "python":
        compile(example.code, example.name, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    else:
        checked = subprocess.run(["bash", "-n", "-c", example.code], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stderr


@pytest.mark.parametrize(
    "example", [e for e in EXAMPLES if e.kind == "config"], ids=lambda e: e.name
)
def test_a_config_is_what_the_daemon_reads(example: Example, tmp_path: Path) -> None:
    from triggerfish.daemon.config import load_config

    tomllib.loads(example.code)
    path = tmp_path / "triggerfish.toml"
    path.write_text(example.code.replace('"sha256:..."', '"sha256:' + "0" * 64 + '"'))
    config = load_config(path, environ={})
    assert config.port == 8765


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture(scope="module")
def readme_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    if not _port_free(8765):
        pytest.skip("127.0.0.1:8765, the README's address, is taken by another process")
    folder = tmp_path_factory.mktemp("readme-daemon")
    (app,) = [e for e in EXAMPLES if e.kind == "app"]
    (folder / "myapp.py").write_text(app.code)
    daemon = start_daemon(
        folder,
        app="myapp:setup",
        extra_args=("--port", "8765"),
        env={"PYTHONPATH": f"{ROOT}{os.pathsep}{folder}"},
    )
    try:
        deployed = cli(daemon, "deploy", "examples/thumbnails", timeout=120)
        assert deployed.returncode == 0, deployed.stderr
        yield daemon
    finally:
        daemon.stop()


@pytest.mark.parametrize(
    "example", [e for e in EXAMPLES if e.kind == "daemon"], ids=lambda e: e.name
)
def test_a_daemon_example_runs(example: Example, readme_daemon: Daemon, tmp_path: Path) -> None:
    env = _env(
        readme_daemon.credentials,
        TRIGGERFISH_API_URL=readme_daemon.url,
        TRIGGERFISH_API_KEY=readme_daemon.key,
        KEY=readme_daemon.key,
    )
    if example.language == "python":
        _run_python(example.code, _folder(tmp_path), env)
    else:
        _run_sh(example.code, ROOT, env)  # the paths it names are the project's


@pytest.mark.parametrize(
    "example", [e for e in EXAMPLES if e.kind in ("docker", "swarm")], ids=lambda e: e.name
)
def test_a_container_example_runs(example: Example, tmp_path: Path) -> None:
    reason = docker_missing()
    if reason is not None:
        pytest.skip(reason)
    if example.kind == "swarm":
        state = subprocess.run(
            ["docker", "info", "--format", "{{.Swarm.LocalNodeState}}"],
            capture_output=True,
            text=True,
        )
        if state.stdout.strip() != "active":
            subprocess.run(
                ["docker", "swarm", "init", "--advertise-addr", "127.0.0.1"],
                capture_output=True,
                check=True,
            )
    assert shutil.which("docker") is not None
    _run_python(example.code, _folder(tmp_path), _env(tmp_path / "credentials.json"))
