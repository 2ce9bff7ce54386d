"""Codebases: a package's code as a zip, made deterministically, checked, and extracted safely.

The same directory always zips to the same bytes (sorted entries, fixed timestamps and
permissions), so its sha256 says whether the code changed. A zip from elsewhere is checked
before it is stored: every member's path must stay inside the codebase (no absolute paths, no
``..``: a "zip slip" would write outside the extraction directory), and its sizes must stay
within the limits, packed and unpacked.
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from ..errors import ConfigurationError

__all__ = [
    "MAX_CODEBASE_BYTES",
    "MAX_UNPACKED_BYTES",
    "check_zip",
    "extract",
    "read_member",
    "zip_directory",
]

#: The largest codebase zip a package may have.
MAX_CODEBASE_BYTES = 100 * 1024 * 1024
#: The most its files may hold once unpacked (a zip bomb stops here).
MAX_UNPACKED_BYTES = 500 * 1024 * 1024
_SKIP_DIRS = frozenset({"__pycache__", ".git"})
_SKIP_SUFFIXES = (".pyc", ".pyo")
_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip can hold


def _too_big(what: str, size: int, limit: int) -> ConfigurationError:
    return ConfigurationError(
        f"the codebase is too large: {what} {size} bytes, at most {limit} are accepted "
        "(leave data out of the package, or fetch it in __init__)"
    )


def zip_directory(directory: str | Path, limit: int = MAX_CODEBASE_BYTES) -> bytes:
    """The directory as a zip: every file below it but __pycache__, .git and compiled Python,
    in sorted order, dated 1980-01-01, mode 644 (755 for executables)."""
    root = Path(directory)
    if not root.is_dir():
        raise ConfigurationError(f"{str(directory)!r} is not a directory")
    buffer = io.BytesIO()
    unpacked = 0
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for current, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
            for name in sorted(files):
                if name.endswith(_SKIP_SUFFIXES):
                    continue
                path = Path(current, name)
                data = path.read_bytes()
                unpacked += len(data)
                if unpacked > limit:
                    raise _too_big("its files hold more than", limit, limit)
                info = zipfile.ZipInfo(path.relative_to(root).as_posix(), _EPOCH)
                executable = path.stat().st_mode & stat.S_IXUSR
                info.external_attr = (0o100755 if executable else 0o100644) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, data)
    blob = buffer.getvalue()
    if len(blob) > limit:
        raise _too_big("the zip has", len(blob), limit)
    return blob


def check_zip(
    data: bytes, limit: int = MAX_CODEBASE_BYTES, unpacked_limit: int = MAX_UNPACKED_BYTES
) -> list[str]:
    """The names of the files in a codebase zip, once it is known to be safe to extract."""
    if len(data) > limit:
        raise _too_big("the zip has", len(data), limit)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise ConfigurationError(f"the codebase is not a zip file: {exc}") from None
    names = []
    total = 0
    with archive:
        for info in archive.infolist():
            path = PurePosixPath(info.filename)
            if (
                info.filename.startswith(("/", "\\"))
                or "\\" in info.filename
                or ".." in path.parts
                or (path.parts and ":" in path.parts[0])
            ):
                raise ConfigurationError(
                    f"the codebase zip holds {info.filename!r}, a path that leads outside the "
                    "codebase; it is refused"
                )
            if stat.S_ISLNK(info.external_attr >> 16):
                raise ConfigurationError(
                    f"the codebase zip holds a symbolic link, {info.filename!r}; it is refused"
                )
            total += info.file_size
            if total > unpacked_limit:
                raise _too_big("its files unpack to more than", unpacked_limit, unpacked_limit)
            if not info.is_dir():
                names.append(info.filename)
    return names


def read_member(data: bytes, name: str) -> bytes | None:
    """One file of a codebase zip, or None if it has no file of that name."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        try:
            return archive.read(name)
        except KeyError:
            return None


def extract(data: bytes, target: Path) -> Path:
    """Extract a codebase zip to ``target`` unless it is there already; returns ``target``.

    It is unpacked next to ``target`` and renamed into place, so ``target`` either does not
    exist or holds the whole codebase, even if two engines extract it at once.
    """
    if target.is_dir():
        return target
    check_zip(data)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for info in archive.infolist():
                destination = staging.joinpath(*PurePosixPath(info.filename).parts)
                # check_zip refused escaping paths; this says so again where it matters.
                if not destination.resolve().is_relative_to(staging.resolve()):
                    raise ConfigurationError(f"{info.filename!r} leads outside the codebase")
                if info.is_dir():
                    destination.mkdir(parents=True, exist_ok=True)
                    continue
                destination.parent.mkdir(parents=True, exist_ok=True)
                destination.write_bytes(archive.read(info))
                mode = (info.external_attr >> 16) & 0o777
                destination.chmod(0o755 if mode & stat.S_IXUSR else 0o644)
        try:
            staging.rename(target)
        except OSError:
            if not target.is_dir():  # not another engine's extraction winning the race
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
