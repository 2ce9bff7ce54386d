"""The Docker tests need a Docker engine and the runner image (``bash scripts/docker-up.sh``
gives both); without them they skip, saying which is missing."""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import AsyncIterator

import aiodocker
import pytest

from triggerfish.engine.runtimes.docker import default_image


@functools.cache
def docker_missing() -> str | None:
    """Why container replicas cannot run here, or None if they can."""
    where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"

    async def check() -> str | None:
        try:
            docker = aiodocker.Docker()
        except Exception as exc:
            return f"no Docker engine answers at {where}: {exc}"
        try:
            await docker.version()
        except Exception as exc:
            return f"no Docker engine answers at {where}: {exc}"
        else:
            try:
                await docker.images.inspect(default_image())
            except aiodocker.DockerError:
                return (
                    f"the runner image {default_image()} is not on the Docker engine at {where} "
                    "(bash scripts/build-base-image.sh builds it)"
                )
            return None
        finally:
            await docker.close()

    return asyncio.run(check())


@pytest.fixture
def docker_ready() -> None:
    reason = docker_missing()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture(params=["process", "docker"])
def runtime(request: pytest.FixtureRequest) -> str:
    """Each runtime the core behaviours are checked on."""
    if request.param == "docker":
        reason = docker_missing()
        if reason is not None:
            pytest.skip(reason)
    return str(request.param)


BASE_IMAGE = default_image()


@pytest.fixture
async def docker(docker_ready: None) -> AsyncIterator[aiodocker.Docker]:
    """A client of the Docker engine, for tests that look at it or act on it directly."""
    client = aiodocker.Docker()
    try:
        yield client
    finally:
        await client.close()
