"""An engine with container replicas, run as a subprocess and killed with SIGKILL by a test:
prints its engine id once two containers serve, then idles."""

from __future__ import annotations

import sys

import anyio

import triggerfish
from tests.docker import fns


async def main(db: str) -> None:
    engine = triggerfish.Engine(db)
    engine.function(fns.where, runtime="docker", replicas=2)
    async with engine:
        await engine.handle(fns.where).call_remote()
        with anyio.fail_after(60):
            while engine.service_status("where").replicas < 2:
                await anyio.sleep(0.05)
        print(engine.engine_id, flush=True)
        await anyio.sleep_forever()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1])
