"""Images derived from a base image with a function's ``requirements`` and ``include_data``
(Descartes Labs' Function fields): built once per distinct recipe, cached by a hash of all
that goes in, with the build log kept.

How a derived image is made, so the base image needs only python3 (no pip, no network):

1. The engine's own pip installs the requirements into a folder (``pip install --target``),
   for the base image's Python. Where the image's Python version and platform are the
   engine's own, sdists build as usual; otherwise only wheels for the image's version and
   platform are taken (``--only-binary=:all:``).
2. That folder and the data files go into a build context beside a Dockerfile that copies
   them to ``/opt/triggerfish/site`` (on ``PYTHONPATH``) and ``/opt/triggerfish/data`` (the
   working directory, so a data file opens by the relative path it was given by).
3. The Docker engine builds it, tagged ``triggerfish/derived:<hash>``. The hash covers the
   base image's id, the requirements and every data file's path and content, so a changed
   file is a new image and an unchanged recipe is never built twice (also across restarts:
   the tag is looked up first).

A failed build is remembered with its log until the recipe changes or the engine restarts,
so executions waiting for it fail with that log at once instead of each building again.
"""

from __future__ import annotations

import enum
import gzip
import hashlib
import io
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import aiodocker
import anyio

from ...errors import ImageBuildError
from ...log import logger
from ...models import FunctionSpec

__all__ = ["BuildState", "ImageBuild", "ImageBuilder", "Recipe", "build_log_dir", "recipe_for"]

DERIVED_REPOSITORY = "triggerfish/derived"
SITE_DIR = "/opt/triggerfish/site"
DATA_DIR = "/opt/triggerfish/data"
_LOG_TAIL = 4000


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """What a derived image holds: ``requirements`` (pip's requirement strings) and
    ``include_data`` (files, folders or glob patterns, relative to ``root``) over ``base``."""

    base: str
    requirements: tuple[str, ...] = ()
    include_data: tuple[str, ...] = ()
    root: Path = field(default_factory=Path.cwd)

    @property
    def plain(self) -> bool:
        """Nothing to add: the base image is used as it is."""
        return not self.requirements and not self.include_data


def recipe_for(base: str, functions: Iterable[FunctionSpec], code_paths: Sequence[str]) -> Recipe:
    """What a replica of a service with ``functions`` needs over ``base``: all their
    requirements and data files. Data paths are relative to the service's codebase (a
    deployed package) or else the engine's working directory."""
    specs = list(functions)
    return Recipe(
        base=base,
        requirements=tuple(sorted({r for f in specs for r in f.requirements})),
        include_data=tuple(sorted({d for f in specs for d in f.include_data})),
        root=Path(code_paths[0]) if code_paths else Path.cwd(),
    )


def build_log_dir() -> Path:
    """Where build logs are written (one file per recipe, named by its hash)."""
    return Path(tempfile.gettempdir()) / "triggerfish-builds"


class BuildState(enum.StrEnum):
    BUILDING = "building"
    BUILT = "built"
    BUILD_FAILED = "build_failed"


@dataclass
class ImageBuild:
    """One recipe's build: its image tag, where it stands, and its log so far."""

    key: str
    tag: str
    state: BuildState = BuildState.BUILDING
    log: list[str] = field(default_factory=list)
    done: anyio.Event = field(default_factory=anyio.Event, repr=False)

    @property
    def log_text(self) -> str:
        return "".join(self.log)

    def write(self, text: str) -> None:
        self.log.append(text if text.endswith("\n") else text + "\n")


class ImageBuilder:
    """Builds derived images on one Docker engine; one build per recipe at a time.

    ``image_for`` is safe to call from many replica starts at once: the first builds, the
    others wait for it. Build logs are also written to ``log_dir`` (``<hash>.log``).
    """

    def __init__(self, docker: aiodocker.Docker, log_dir: Path) -> None:
        self._docker = docker
        self._log_dir = log_dir
        self._builds: dict[str, ImageBuild] = {}
        self._pythons: dict[str, tuple[str, str]] = {}

    def builds(self) -> list[ImageBuild]:
        """Every build this engine has started, newest last."""
        return list(self._builds.values())

    def build_of(self, key: str) -> ImageBuild | None:
        return self._builds.get(key)

    async def image_for(self, recipe: Recipe) -> str:
        """The image to run ``recipe`` in, built first if need be.

        Raises ImageBuildError (with the build log) when the recipe cannot be built; the
        same error again, without building again, for as long as it is remembered.
        """
        if recipe.plain:
            return recipe.base
        build = await self._build_for(recipe)
        await build.done.wait()
        if build.state is BuildState.BUILD_FAILED:
            raise _failure(build)
        return build.tag

    async def _build_for(self, recipe: Recipe) -> ImageBuild:
        try:
            base_id = (await self._docker.images.inspect(recipe.base))["Id"]
        except aiodocker.DockerError as exc:
            raise ImageBuildError(
                f"base image {recipe.base!r} is not on this Docker engine ({exc.message}); "
                "build it with scripts/build-base-image.sh, or pull it",
                log="",
            ) from None
        files = await anyio.to_thread.run_sync(_data_files, recipe)
        key = await anyio.to_thread.run_sync(_recipe_key, base_id, recipe, files)
        build = self._builds.get(key)
        if build is not None:
            return build
        build = self._builds[key] = ImageBuild(key=key, tag=f"{DERIVED_REPOSITORY}:{key[:16]}")
        # Shielded, so a replica start cancelled mid-way leaves no build half done for the
        # others waiting on it.
        with anyio.CancelScope(shield=True):
            try:
                await self._build(build, recipe, files)
                build.state = BuildState.BUILT
            except Exception as exc:  # whatever broke, the log says it
                build.state = BuildState.BUILD_FAILED
                build.write(f"error: {exc}")
                logger.error("image_build_failed", image=build.tag, error=str(exc)[:300])
            finally:
                build.done.set()
                await anyio.to_thread.run_sync(self._save_log, build)
        return build

    async def _build(
        self, build: ImageBuild, recipe: Recipe, files: list[tuple[str, Path]]
    ) -> None:
        try:
            await self._docker.images.inspect(build.tag)
        except aiodocker.DockerError:
            pass
        else:
            build.write(f"image {build.tag} was built before; using it")
            return
        logger.info("image_build_started", image=build.tag, base=recipe.base)
        build.write(f"building {build.tag} from {recipe.base}")
        async with anyio.TemporaryDirectory(prefix="triggerfish-build-") as scratch:
            site = Path(scratch) / "site"
            if recipe.requirements:
                await self._install(build, recipe, site)
            context = await anyio.to_thread.run_sync(
                _build_context, recipe, files, site if recipe.requirements else None
            )
        await self._docker_build(build, context)
        logger.info("image_built", image=build.tag)

    async def _install(self, build: ImageBuild, recipe: Recipe, site: Path) -> None:
        version, platform = await self._image_python(recipe.base)
        command = [sys.executable, "-m", "pip", "install", "--no-input", "--target", str(site)]
        here = f"{sys.version_info[0]}.{sys.version_info[1]}", sysconfig.get_platform()
        if (version, platform) != here:
            command += _cross_flags(version, platform)
        command += ["--", *recipe.requirements]
        build.write("$ pip install " + " ".join(recipe.requirements))
        result = await anyio.run_process(command, check=False, stderr=subprocess.STDOUT)
        build.write(result.stdout.decode(errors="replace"))
        if result.returncode != 0:
            raise ImageBuildError(f"pip install exited with code {result.returncode}", log="")

    async def _image_python(self, image: str) -> tuple[str, str]:
        """The base image's Python version ("3.11") and platform ("linux-x86_64")."""
        if image not in self._pythons:
            probe = (
                "import sys, sysconfig; "
                "print('%d.%d' % sys.version_info[:2], sysconfig.get_platform())"
            )
            container = await self._docker.containers.run(
                {
                    "Image": image,
                    "Cmd": ["python3", "-c", probe],
                    "Labels": {"triggerfish.probe": "1"},
                }
            )
            try:
                status = await container.wait()
                output = "".join(await container.log(stdout=True, stderr=True))
            finally:
                await container.delete(force=True)
            words = output.split()
            if status.get("StatusCode") != 0 or len(words) != 2:
                raise ImageBuildError(f"python3 in {image!r} did not run: {output.strip()}", log="")
            self._pythons[image] = (words[0], words[1])
        return self._pythons[image]

    async def _docker_build(self, build: ImageBuild, context: bytes) -> None:
        stream = self._docker.images.build(
            fileobj=io.BytesIO(context),
            encoding="gzip",
            tag=build.tag,
            labels={"triggerfish.recipe": build.key},
            stream=True,
        )
        try:
            async for chunk in stream:
                _log_chunk(build, chunk)
        except aiodocker.DockerError as exc:
            raise ImageBuildError(f"docker build failed: {exc.message}", log="") from None
        try:
            await self._docker.images.inspect(build.tag)
        except aiodocker.DockerError:
            raise ImageBuildError("docker build ended without an image", log="") from None

    def _save_log(self, build: ImageBuild) -> None:
        self._log_dir.mkdir(parents=True, exist_ok=True)
        (self._log_dir / f"{build.key}.log").write_text(build.log_text)


def _failure(build: ImageBuild) -> ImageBuildError:
    tail = build.log_text[-_LOG_TAIL:]
    return ImageBuildError(
        f"image {build.tag} failed to build; its log ends with:\n{tail}", log=build.log_text
    )


def _log_chunk(build: ImageBuild, chunk: dict[str, Any]) -> None:
    if "stream" in chunk:
        build.log.append(str(chunk["stream"]))
    if "error" in chunk:
        raise ImageBuildError(f"docker build failed: {chunk['error']}", log="")


def _cross_flags(version: str, platform: str) -> list[str]:
    """pip options that take only wheels made for another Python version or platform."""
    arch = platform.rpartition("-")[2].replace("-", "_")
    tags = [f"manylinux_2_28_{arch}", f"manylinux2014_{arch}", f"linux_{arch}"]
    flags = ["--only-binary=:all:", "--implementation", "cp", "--python-version", version]
    for tag in tags:
        flags += ["--platform", tag]
    return flags


def _data_files(recipe: Recipe) -> list[tuple[str, Path]]:
    """``(path in the image's data folder, file on this machine)`` for every data file."""
    root = recipe.root.resolve()
    found: dict[str, Path] = {}
    for pattern in recipe.include_data:
        relative = PurePosixPath(pattern)
        if relative.is_absolute() or ".." in relative.parts or not pattern.strip():
            raise ImageBuildError(
                f"include_data {pattern!r}: give a path inside {root}, relative to it", log=""
            )
        matches = (
            sorted(root.glob(pattern)) if any(c in pattern for c in "*?[") else [root / pattern]
        )
        matches = [m for m in matches if m.exists()]
        if not matches:
            raise ImageBuildError(f"include_data {pattern!r} matches no file under {root}", log="")
        for match in matches:
            for path in sorted(match.rglob("*")) if match.is_dir() else [match]:
                if path.is_file():
                    found[path.relative_to(root).as_posix()] = path
    return sorted(found.items())


def _recipe_key(base_id: str, recipe: Recipe, files: Sequence[tuple[str, Path]]) -> str:
    digest = hashlib.sha256()
    digest.update(base_id.encode())
    for requirement in recipe.requirements:
        digest.update(b"\0r" + requirement.encode())
    for name, path in files:
        digest.update(b"\0d" + name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _build_context(recipe: Recipe, files: Sequence[tuple[str, Path]], site: Path | None) -> bytes:
    lines = [f"FROM {recipe.base}"]
    if site is not None:
        lines += [f"COPY site {SITE_DIR}", f"ENV PYTHONPATH={SITE_DIR}"]
    if files:
        lines.append(f"COPY data {DATA_DIR}")
    lines.append(f"WORKDIR {DATA_DIR}")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        dockerfile = ("\n".join(lines) + "\n").encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
        if site is not None:
            site.mkdir(exist_ok=True)
            tar.add(site, arcname="site")
        for name, path in files:
            tar.add(path, arcname=f"data/{name}")
    return gzip.compress(buffer.getvalue(), compresslevel=1)
