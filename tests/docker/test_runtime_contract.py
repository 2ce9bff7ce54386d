"""The runtime contract on container replicas: the local Docker engine, and a Swarm."""

from __future__ import annotations

import aiodocker
import pytest

from triggerfish.engine.runtimes.abc import Runtime
from triggerfish.engine.runtimes.docker import DockerRuntime
from triggerfish.engine.runtimes.swarm import SwarmRuntime
from triggerfish.testing.contract import RuntimeContract

pytestmark = pytest.mark.slow


@pytest.mark.usefixtures("docker_ready")
class TestDockerRuntime(RuntimeContract):
    runtime_name = "docker"

    @pytest.fixture
    def runtime(self) -> Runtime:
        return DockerRuntime("contract-docker")


@pytest.mark.usefixtures("docker_ready")
class TestSwarmRuntime(RuntimeContract):
    runtime_name = "swarm"

    @pytest.fixture
    async def runtime(self, docker: aiodocker.Docker) -> Runtime:
        if (await docker.system.info())["Swarm"]["LocalNodeState"] != "active":
            await docker.swarm.init(advertise_addr="127.0.0.1", listen_addr="127.0.0.1:2377")
        return SwarmRuntime("contract-swarm")
