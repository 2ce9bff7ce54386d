"""Codebases: a package's code as a zip, made deterministically, checked, and extracted safely.

The same directory always zips to the same bytes (sorted entries, fixed timestamps and
permissions), so its sha256 says whether the code changed. A zip from elsewhere is checked
before it is stored: every member's path must stay inside the codebase (no absolute paths, no
``..``: a "zip slip" would write outside the extraction directory), and its sizes must stay
within the limits, packed and unpacked.

The unpacked size is counted by inflating every member, in chunks, never by trusting the sizes
a zip declares: a "zip bomb" declares a small file that inflates to gigabytes. Inflating stops
as soon as the running total passes the limit, so memory stays at a chunk or so whatever a
member holds. That costs CPU (about a second for 500 MiB), so async code calls these functions
in a worker thread (``anyio.to_thread.run_sync``), never on the event loop.
"""

from __future__ import annotations

import copy
import io
import os
import shutil
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from ..errors import ConfigurationError

__all__ = [
    "MAX_CODEBASE_BYTES",
    "MAX_MEMBER_READ_BYTES",
    "MAX_UNPACKED_BYTES",
    "check_zip",
    "extract",
    "read_member",
    "zip_directory",
]

#: The largest codebase zip a package may have.
MAX_CODEBASE_BYTES = 100 * 1024 * 1024
#: The most its files may hold once unpacked, counted in bytes actually inflated (a zip bomb
#: stops here).
MAX_UNPACKED_BYTES = 500 * 1024 * 1024
#: The largest file ``read_member`` returns (it reads package.json).
MAX_MEMBER_READ_BYTES = 1024 * 1024
#: Members are inflated this much at a time.
_CHUNK = 1024 * 1024
#: The methods a member may be compressed with. bzip2 and LZMA are refused: zipfile inflates
#: a chunk of those without bound, so one small chunk could fill the memory.
_METHODS = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED})
#: The size ``_inflate`` tells zipfile a member has, so that it inflates the real stream to its
#: end instead of stopping at the declared size; the counting is ours.
_UNBOUNDED = 1 << 62
_SKIP_DIRS = frozenset({"__pycache__", ".git"})
_SKIP_SUFFIXES = (".pyc", ".pyo")
_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip can hold


def _too_big(what: str, size: int, limit: int) -> ConfigurationError:
    return ConfigurationError(
        f"the codebase is too large: {what} {size} bytes, at most {limit} are accepted "
        "(leave data out of the package, or fetch it in __init__)"
    )


def _too_big_inflated(info: zipfile.ZipInfo, inflated: int, limit: int) -> ConfigurationError:
    """Inflating ``info`` took the files past ``limit`` after ``inflated`` bytes of it."""
    lying = "but" if inflated > info.file_size else "and"
    return ConfigurationError(
        f"the codebase is too large when inflated: its files inflate to more than {limit} "
        f"bytes, at most {limit} are accepted; its member {info.filename!r} declares "
        f"{info.file_size} bytes {lying} inflates to more than {inflated - 1} (leave data out "
        "of the package, or fetch it in __init__)"
    )


def _inflate(
    archive: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    budget: int,
    sink: Callable[[bytes], object] | None = None,
) -> int:
    """Inflate one member chunk by chunk, giving each chunk to ``sink``; the number of bytes
    it really inflates to, counted as they come.

    Inflating stops once more than ``budget`` bytes came: the answer is then over ``budget``
    (and the member may hold more). Within ``budget``, a member that inflates to another size
    than it declares, or that is damaged (bad CRC, truncated, corrupt deflate stream), raises
    ConfigurationError naming it.
    """
    if info.compress_type not in _METHODS:
        raise ConfigurationError(
            f"the codebase zip's member {info.filename!r} is compressed with method "
            f"{info.compress_type}; only stored and deflate members are accepted"
        )
    # zipfile stops inflating at the declared size (after inflating a whole read at once);
    # told a size it never reaches, it inflates the real stream, and this counts it.
    unbounded = copy.copy(info)
    unbounded.file_size = _UNBOUNDED
    inflated = 0
    try:
        with archive.open(unbounded) as member:
            while inflated <= budget:
                chunk = member.read(min(_CHUNK, budget + 1 - inflated))
                if not chunk:
                    break
                inflated += len(chunk)
                if sink is not None:
                    sink(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        # RuntimeError: an encrypted member; NotImplementedError: an unknown method.
        if inflated > info.file_size:
            what = f"declares {info.file_size} bytes but inflates to more than {inflated}"
        else:
            what = f"declares {info.file_size} bytes and cannot be inflated after {inflated}"
        raise ConfigurationError(
            f"the codebase zip's member {info.filename!r} {what}: "
            f"{exc or type(exc).__name__}; it is refused"
        ) from None
    if inflated <= budget and inflated != info.file_size:
        raise ConfigurationError(
            f"the codebase zip's member {info.filename!r} declares {info.file_size} bytes but "
            f"inflates to {inflated}; it is refused"
        )
    return inflated


def _open(data: bytes) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ConfigurationError(f"the codebase is not a zip file: {exc}") from None


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
    """The names of the files in a codebase zip, once it is known to be safe to extract.

    Every member is inflated (in chunks, nothing kept) and counted: ConfigurationError once
    the bytes inflated pass ``unpacked_limit``, or the sizes declared do, and for a member
    that inflates to another size than it declares, is damaged, is a symbolic link or has a
    path leading outside the codebase. CPU-bound for up to seconds: not for the event loop.
    """
    if len(data) > limit:
        raise _too_big("the zip has", len(data), limit)
    names = []
    with _open(data) as archive:
        infos = archive.infolist()
        for info in infos:
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
            if not info.is_dir():
                names.append(info.filename)
        declared = sum(info.file_size for info in infos)
        if declared > unpacked_limit:  # refused before inflating anything
            raise _too_big("unpacked, its files declare", declared, unpacked_limit)
        total = 0
        for info in infos:
            inflated = _inflate(archive, info, unpacked_limit - total)
            total += inflated
            if total > unpacked_limit:
                raise _too_big_inflated(info, inflated, unpacked_limit)
    return names


def read_member(data: bytes, name: str, limit: int = MAX_MEMBER_READ_BYTES) -> bytes | None:
    """One file of a codebase zip, or None if it has no file of that name. It is inflated in
    chunks: one of more than ``limit`` bytes (declared or inflated) raises ConfigurationError."""
    with _open(data) as archive:
        try:
            info = archive.getinfo(name)
        except KeyError:
            return None
        if info.file_size > limit:
            raise ConfigurationError(
                f"{name!r} in the codebase is too large: it declares {info.file_size} bytes, "
                f"at most {limit} are read"
            )
        chunks: list[bytes] = []
        if _inflate(archive, info, limit, chunks.append) > limit:
            raise ConfigurationError(
                f"{name!r} in the codebase is too large: it declares {info.file_size} bytes "
                f"but inflates to more than {limit}, at most {limit} are read"
            )
        return b"".join(chunks)


def extract(data: bytes, target: Path, unpacked_limit: int = MAX_UNPACKED_BYTES) -> Path:
    """Extract a codebase zip to ``target`` unless it is there already; returns ``target``.

    It is unpacked next to ``target`` and renamed into place, so ``target`` either does not
    exist or holds the whole codebase, even if two engines extract it at once. The zip is
    checked first (``check_zip``), and the bytes written are counted again against
    ``unpacked_limit`` as they are inflated, chunk by chunk; on any error nothing is left.
    CPU- and disk-bound: not for the event loop.
    """
    if target.is_dir():
        return target
    check_zip(data, unpacked_limit=unpacked_limit)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    total = 0
    try:
        with _open(data) as archive:
            for info in archive.infolist():
                destination = staging.joinpath(*PurePosixPath(info.filename).parts)
                # check_zip refused escaping paths; this says so again where it matters.
                if not destination.resolve().is_relative_to(staging.resolve()):
                    raise ConfigurationError(f"{info.filename!r} leads outside the codebase")
                if info.is_dir():
                    destination.mkdir(parents=True, exist_ok=True)
                    continue
                destination.parent.mkdir(parents=True, exist_ok=True)
                with destination.open("wb") as file:
                    inflated = _inflate(archive, info, unpacked_limit - total, file.write)
                total += inflated
                if total > unpacked_limit:  # check_zip said no already; this is the backstop
                    raise _too_big_inflated(info, inflated, unpacked_limit)
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
