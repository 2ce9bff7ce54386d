"""The package's imports point one way: no module imports, however indirectly and however
lazily (inside a function, or for type checking only), a module that imports it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import triggerfish

PACKAGE = Path(triggerfish.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str) -> set[str]:
    """Every module of the package that ``path`` imports, anywhere in it."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("triggerfish"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            if not module.startswith("triggerfish"):
                continue
            for alias in node.names:  # ``from pkg import sub`` imports pkg.sub; else pkg
                submodule = f"{module}.{alias.name}"
                found.add(submodule if submodule in MODULES else module)
    return found


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        graph[name] = {m for m in _imports(path, name) if m in MODULES and m != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_there_is_no_import_cycle() -> None:
    graph = _graph()
    assert len(graph) > 50  # it read the package
    assert "triggerfish.engine.lifecycle" in graph["triggerfish.engine.core"]
    assert _cycles(graph) == []


def test_the_floors_point_down() -> None:
    graph = _graph()
    assert not any(m.startswith("triggerfish") for m in graph["triggerfish.errors"])
    for bottom in ("triggerfish.engine.events", "triggerfish.engine.lifecycle"):
        above = {"registry", "triggering", "timeouts", "nested", "reports", "claims", "core"}
        above |= {"forwarding"}
        assert not {f"triggerfish.engine.{m}" for m in above} & graph[bottom], bottom
    middle = ["registry", "triggering", "timeouts", "nested", "reports", "claims", "forwarding"]
    for part in middle:
        others = {f"triggerfish.engine.{m}" for m in middle if m != part}
        assert not others & graph[f"triggerfish.engine.{part}"], part
    client_side = graph["triggerfish.sdk.client"]
    assert not any(m.startswith("triggerfish.engine.core") for m in client_side)


def test_the_blocking_forms_import_the_async_ones_never_the_reverse() -> None:
    graph = _graph()
    blocking = "triggerfish.sdk.blocking"
    assert {"triggerfish.sdk.engine", "triggerfish.sdk.client"} <= graph[blocking]
    for asynchronous in (
        "triggerfish.sdk.engine",
        "triggerfish.sdk.client",
        "triggerfish.sdk.handle",
    ):
        assert blocking not in graph[asynchronous], asynchronous


def test_with_engine_and_with_client_are_typed(tmp_path: Path) -> None:
    """What mypy (strict) makes of ``with Engine() as e`` and ``with Client() as c``."""
    snippet = tmp_path / "uses.py"
    snippet.write_text(
        "from triggerfish import Client, Engine\n"
        "with Engine() as e:\n    reveal_type(e)\n"
        "with Client() as c:\n    reveal_type(c)\n"
    )
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent", str(snippet)],
        capture_output=True,
        text=True,
        cwd=PACKAGE.parent,
    )
    assert 'Revealed type is "triggerfish.sdk.blocking.BlockingEngine"' in checked.stdout
    assert 'Revealed type is "triggerfish.sdk.blocking.BlockingClient"' in checked.stdout
    assert checked.returncode == 0, checked.stdout
    assert triggerfish.Engine.__module__ == "triggerfish.sdk.entry"
    assert triggerfish.Client.__module__ == "triggerfish.sdk.remote"


def test_both_handles_implement_the_one_protocol() -> None:
    from triggerfish.sdk.base import BaseFunctionHandle
    from triggerfish.sdk.client import RemoteFunctionHandle

    for handle in (triggerfish.FunctionHandle, RemoteFunctionHandle):
        assert issubclass(handle, BaseFunctionHandle)
        assert not handle.__abstractmethods__  # type: ignore[attr-defined]


def test_the_embedded_engine_loads_no_client() -> None:
    """``from triggerfish import Engine`` loads neither the remote client nor aiohttp."""
    code = (
        "import sys; from triggerfish import Engine;"
        "print(sorted({'aiohttp', 'triggerfish.sdk.client'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
