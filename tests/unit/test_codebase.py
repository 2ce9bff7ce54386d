"""Codebase zips and package/service definitions: deterministic, checked, safe to extract."""

from __future__ import annotations

import contextlib
import io
import json
import struct
import threading
import tracemalloc
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from triggerfish import ConfigurationError, DefinitionError, Engine
from triggerfish.engine import codebase
from triggerfish.models import PackageDefinition, ServiceDefinition

MiB = 1024 * 1024


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def zeros_zip(
    size: int,
    declared: int | None = None,
    *,
    forged_crc: bool = False,
    files: dict[str, str] | None = None,
) -> bytes:
    """A zip of ``files`` (default: a ``main.py``) and ``data.bin``, ``size`` zero bytes
    deflated (written in chunks, so a big one costs no memory). With ``declared``, a zip bomb:
    data.bin's size in its local header and in the central directory say ``declared``
    instead; ``forged_crc`` gives it the CRC of its first ``declared`` bytes too, which stock
    zipfile then reads without a word."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in (files or {"main.py": "x = 1\n"}).items():
            archive.writestr(name, text)
        with archive.open("data.bin", "w") as member:
            zeros = bytes(MiB)
            for start in range(0, size, MiB):
                member.write(zeros[: min(MiB, size - start)])
    data = bytearray(buffer.getvalue())
    if declared is None:
        return bytes(data)
    end = data.rfind(b"PK\x05\x06")  # the end of central directory record
    (count,) = struct.unpack_from("<H", data, end + 10)
    (entry,) = struct.unpack_from("<I", data, end + 16)
    for _ in range(count):
        name_length, extra_length, comment_length = struct.unpack_from("<HHH", data, entry + 28)
        if data[entry + 46 : entry + 46 + name_length] == b"data.bin":
            (local,) = struct.unpack_from("<I", data, entry + 42)
            for crc_at, size_at in ((entry + 16, entry + 24), (local + 14, local + 22)):
                struct.pack_into("<I", data, size_at, declared)
                if forged_crc:
                    struct.pack_into("<I", data, crc_at, zlib.crc32(bytes(declared)))
        entry += 46 + name_length + extra_length + comment_length
    return bytes(data)


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


@pytest.mark.parametrize("forged_crc", [False, True])
def test_a_zip_bomb_is_refused_by_the_bytes_it_inflates(forged_crc: bool) -> None:
    bomb = zeros_zip(8 * MiB, declared=1024, forged_crc=forged_crc)
    assert len(bomb) < 64 * 1024
    assert zipfile.ZipFile(io.BytesIO(bomb)).getinfo("data.bin").file_size == 1024
    with pytest.raises(ConfigurationError) as caught:
        codebase.check_zip(bomb, unpacked_limit=MiB)
    assert str(caught.value).startswith("the codebase is too large when inflated: ")
    # main.py's 6 bytes leave MiB - 6 for data.bin, which inflates past them.
    assert f"'data.bin' declares 1024 bytes but inflates to more than {MiB - 6} " in str(
        caught.value
    )
    # The same content, honest, passes within the limit and is refused beyond it.
    honest = zeros_zip(8 * MiB)
    assert codebase.check_zip(honest, unpacked_limit=9 * MiB) == ["main.py", "data.bin"]
    with pytest.raises(ConfigurationError, match=r"too large: unpacked, .* declare 8388614 "):
        codebase.check_zip(honest, unpacked_limit=MiB)


@pytest.mark.parametrize("forged_crc", [False, True])
def test_a_member_inflating_past_its_declared_size_is_refused(forged_crc: bool) -> None:
    bomb = zeros_zip(8 * MiB, declared=1024, forged_crc=forged_crc)
    # Within the limit, still a lie; with a forged CRC, the CRC of all it inflates is wrong.
    lie = r"'data\.bin' declares 1024 bytes but inflates to "
    expected = lie + (r"more than \d+: Bad CRC-32" if forged_crc else "8388608; it is refused")
    with pytest.raises(ConfigurationError, match=expected):
        codebase.check_zip(bomb, unpacked_limit=16 * MiB)


def test_damaged_and_unusual_members_are_refused_naming_them() -> None:
    good = _zip({"main.py": b"x = 1\n" * 100})
    start = good.index(b"main.py") + len("main.py")  # its compressed data follows its name
    damaged = good[:start] + b"\xff" * 8 + good[start + 8 :]
    with pytest.raises(ConfigurationError, match=r"'main\.py' declares 600 bytes and cannot be"):
        codebase.check_zip(damaged)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_BZIP2) as archive:
        archive.writestr("main.py", "x = 1\n")
    with pytest.raises(ConfigurationError, match=r"'main\.py' is compressed with method 12"):
        codebase.check_zip(buffer.getvalue())


def test_extract_refuses_a_bomb_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bomb = zeros_zip(8 * MiB, declared=1024)
    with pytest.raises(ConfigurationError, match="too large when inflated"):
        codebase.extract(bomb, tmp_path / "out", unpacked_limit=MiB)
    assert list(tmp_path.iterdir()) == []
    # extract counts what it writes on its own too, should its check_zip be fooled.
    monkeypatch.setattr(codebase, "check_zip", lambda *args, **kwargs: [])
    with pytest.raises(ConfigurationError, match="too large when inflated"):
        codebase.extract(bomb, tmp_path / "out", unpacked_limit=MiB)
    assert list(tmp_path.iterdir()) == []
    target = codebase.extract(zeros_zip(2 * MiB), tmp_path / "out", unpacked_limit=3 * MiB)
    assert (target / "data.bin").stat().st_size == 2 * MiB


def test_read_member_refuses_an_oversize_package_json() -> None:
    package = json.dumps({"name": "x", "modules": [{"functions": [{"name": "f"}]}]}).encode()
    assert codebase.read_member(_zip({"package.json": package}), "package.json") == package
    padded = package + b" " * (2 * MiB)  # still valid JSON
    with pytest.raises(ConfigurationError, match=r"'package\.json' .*too large: it declares 2097"):
        codebase.read_member(_zip({"package.json": padded}), "package.json")
    # One that declares a small size and inflates to more is stopped just past the limit.
    bomb = bytearray(_zip({"package.json": padded}))
    for at in (bomb.index(b"PK\x03\x04") + 22, bomb.index(b"PK\x01\x02") + 24):
        struct.pack_into("<I", bomb, at, len(package))
    with pytest.raises(ConfigurationError, match=r"declares \d+ bytes but inflates to more than"):
        codebase.read_member(bytes(bomb), "package.json")


def _traced_peak(work: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        with contextlib.suppress(ConfigurationError):
            work()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_checking_and_extracting_take_memory_by_the_chunk_not_by_the_member(
    tmp_path: Path,
) -> None:
    bomb = zeros_zip(64 * MiB, declared=1024)
    with pytest.raises(ConfigurationError, match="inflates to 67108864"):
        codebase.check_zip(bomb, unpacked_limit=128 * MiB)
    assert _traced_peak(lambda: codebase.check_zip(bomb, unpacked_limit=128 * MiB)) < 8 * MiB
    honest = zeros_zip(64 * MiB)
    target = tmp_path / "out"
    peak = _traced_peak(lambda: codebase.extract(honest, target, unpacked_limit=128 * MiB))
    assert (target / "data.bin").stat().st_size == 64 * MiB
    assert peak < 8 * MiB


@pytest.mark.anyio
async def test_push_checks_the_zip_off_the_event_loop(
    make_engine: Callable[..., Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    loop_thread = threading.get_ident()
    threads: list[tuple[str, int]] = []

    def recorded(name: str) -> Callable[..., object]:
        real = getattr(codebase, name)

        def call(*args: object, **kwargs: object) -> object:
            threads.append((name, threading.get_ident()))
            return real(*args, **kwargs)

        return call

    for name in ("check_zip", "read_member"):
        monkeypatch.setattr(codebase, name, recorded(name))
    package = {"name": "p", "modules": [{"functions": [{"name": "f"}]}]}
    data = _zip({"main.py": b"def f():\n    pass\n", "package.json": json.dumps(package).encode()})
    async with make_engine() as engine:
        assert (await engine.packages.push(data)).revision == 1
    assert {name for name, _ in threads} == {"check_zip", "read_member"}
    assert all(thread != loop_thread for _, thread in threads), threads


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
