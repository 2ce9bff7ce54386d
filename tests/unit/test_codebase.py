"""Codebase zips and package/service definitions: deterministic, checked, safe to extract."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from triggerfish import ConfigurationError, DefinitionError
from triggerfish.engine import codebase
from triggerfish.models import PackageDefinition, ServiceDefinition


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_the_same_directory_zips_to_the_same_bytes_without_caches(tmp_path: Path) -> None:
    (tmp_path / "pkg" / "__pycache__").mkdir(parents=True)
    (tmp_path / ".git").mkdir()
    (tmp_path / "main.py").write_text("x = 1\n")
    (tmp_path / "pkg" / "util.py").write_text("y = 2\n")
    (tmp_path / "pkg" / "__pycache__" / "util.cpython-311.pyc").write_bytes(b"\0")
    (tmp_path / "stale.pyc").write_bytes(b"\0")
    (tmp_path / ".git" / "HEAD").write_text("ref\n")
    first = codebase.zip_directory(tmp_path)
    (tmp_path / "main.py").touch()  # a new mtime changes nothing
    assert codebase.zip_directory(tmp_path) == first
    assert codebase.check_zip(first) == ["main.py", "pkg/util.py"]
    assert codebase.read_member(first, "pkg/util.py") == b"y = 2\n"
    assert codebase.read_member(first, "missing.py") is None


def test_a_codebase_over_the_limit_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "data.bin").write_bytes(b"x" * 2000)
    with pytest.raises(ConfigurationError, match=r"too large.*at most 1000"):
        codebase.zip_directory(tmp_path, limit=1000)
    with pytest.raises(ConfigurationError, match="too large"):
        codebase.check_zip(_zip({"a": b"x" * 5000}), unpacked_limit=1000)
    with pytest.raises(ConfigurationError, match="not a directory"):
        codebase.zip_directory(tmp_path / "data.bin")
    with pytest.raises(ConfigurationError, match="not a zip"):
        codebase.check_zip(b"not a zip")


@pytest.mark.parametrize("name", ["../evil.py", "a/../../evil.py", "/etc/evil.py", "C:/evil.py"])
def test_paths_leading_outside_the_codebase_are_refused(tmp_path: Path, name: str) -> None:
    data = _zip({"main.py": b"", name: b"owned"})
    with pytest.raises(ConfigurationError, match="leads outside the codebase"):
        codebase.check_zip(data)
    with pytest.raises(ConfigurationError, match="leads outside the codebase"):
        codebase.extract(data, tmp_path / "target")
    assert not (tmp_path / "target").exists() and not (tmp_path / "evil.py").exists()


def test_extract_unpacks_once_and_keeps_modes(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "main.py").write_text("print(1)\n")
    (source / "run.sh").write_text("#!/bin/sh\n")
    (source / "run.sh").chmod(0o755)
    target = codebase.extract(codebase.zip_directory(source), tmp_path / "out")
    assert (target / "main.py").read_text() == "print(1)\n"
    assert (target / "run.sh").stat().st_mode & 0o777 == 0o755
    # Extracting again leaves what is there (another engine may run from it).
    assert codebase.extract(b"ignored", target) == target
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]


@pytest.mark.parametrize(
    ("document", "where"),
    [
        ('{"name": "x", "modules": [', "package.json"),
        ({"name": "x", "modules": []}, "modules"),
        (
            {"name": "x", "modules": [{"entryPoint": "../x.py", "functions": [{"name": "f"}]}]},
            "modules[0].entryPoint",
        ),
        (
            {"name": "x", "modules": [{"entryPoint": "main.txt", "functions": [{"name": "f"}]}]},
            "modules[0].entryPoint",
        ),
        (
            {"name": "x", "modules": [{"functions": [{"name": "not a name"}]}]},
            "modules[0].functions[0].name",
        ),
        (
            {"name": "x", "modules": [{"functions": [{"name": "f"}, {"name": "f"}]}]},
            "modules[0].functions",
        ),
        (
            {"name": "x", "modules": [{"entrypoint": "main.py", "functions": [{"name": "f"}]}]},
            "modules[0].entrypoint",
        ),
        ({"name": "a/b", "modules": [{"functions": [{"name": "f"}]}]}, "name"),
    ],
)
def test_a_bad_package_json_names_the_field(document: object, where: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        PackageDefinition.parse(document)
    assert caught.value.where == where
    assert str(caught.value).startswith(f"{where}: ")


def test_package_json_defaults_and_round_trip() -> None:
    package = PackageDefinition.parse(
        '{"name": "img", "modules": [{"className": "ServiceRunner", '
        '"initInputs": [{"name": "size", "type": "Json"}], "functions": [{"name": "resize"}]}]}'
    )
    module = package.module(None)
    assert (module.name, module.entry_point, module.class_name) == (
        "default_module",
        "main.py",
        "ServiceRunner",
    )
    assert package.to_json()["modules"][0]["entryPoint"] == "main.py"
    assert PackageDefinition.parse(package.to_json()) == package
    with pytest.raises(ConfigurationError, match=r"moduleName: .* no module 'other'"):
        package.module("other")


def test_a_bad_service_json_names_the_field() -> None:
    good = {"name": "resizer", "packageName": "img"}
    service = ServiceDefinition.parse(good)
    assert service.package_revision == "latest" and service.runtime.concurrency == 1
    bad = [
        ({**good, "name": "has.dot"}, "name"),
        ({**good, "packageRevision": 0}, "packageRevision"),
        (
            {**good, "runtime": {"autoscaler": {"minReplicas": 3, "maxReplicas": 2}}},
            "runtime.autoscaler.maxReplicas",
        ),
        ({**good, "functions": {"resize": {"timeout": -1}}}, "functions.resize.timeout"),
    ]
    for document, where in bad:
        with pytest.raises(DefinitionError) as caught:
            ServiceDefinition.parse(document)
        assert caught.value.where == where, document
