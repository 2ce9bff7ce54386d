from __future__ import annotations

import json
from typing import Any

import aiodocker

from triggerfish.engine.runtimes.docker import LABEL_ENGINE


async def containers_of(engine_id: str, **labels: str) -> list[dict[str, Any]]:
    """The containers (running or not) labelled with this engine's id and ``labels``."""
    wanted = [f"{LABEL_ENGINE}={engine_id}", *(f"{k}={v}" for k, v in labels.items())]
    docker = aiodocker.Docker()
    try:
        found = await docker.containers.list(all=True, filters=json.dumps({"label": wanted}))
        return [c._container for c in found]
    finally:
        await docker.close()


async def kill_container(container_id: str) -> None:
    docker = aiodocker.Docker()
    try:
        await docker.containers.container(container_id).kill()
    finally:
        await docker.close()
