"""A real Docker engine for these tests, or a skip that says why there is none."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import aiodocker
import pytest

BASE_IMAGE = os.environ.get("TRIGGERFISH_RUNNER_IMAGE", "triggerfish/python:3")


@pytest.fixture
async def docker() -> AsyncIterator[aiodocker.Docker]:
    """A client of a Docker engine that answers and has the runner's base image."""
    client = aiodocker.Docker()
    try:
        try:
            await client.version()
        except (aiodocker.DockerError, OSError) as exc:
            pytest.skip(f"no Docker engine answers ({exc}); scripts/docker-up.sh starts one")
        try:
            await client.images.inspect(BASE_IMAGE)
        except aiodocker.DockerError:
            pytest.skip(f"no image {BASE_IMAGE}; scripts/build-base-image.sh builds it")
        yield client
    finally:
        await client.close()
