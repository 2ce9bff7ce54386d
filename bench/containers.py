"""Container replicas (Docker) against ``docker run`` and against process replicas.

Measures, in one run (well under two minutes):

1. cold start: ``call_remote`` of a no-op function of a service with no replica (``replicas=(0,
   1)``), on the docker runtime, until its result: a container is created and started, its
   runner connects back, loads the function and runs it. Between rounds the service scales
   back to zero (a short idle timeout) and its container is removed. The median of
   ``--rounds`` rounds.
2. ``docker run --rm IMAGE python3 -c pass`` of the same image, with the docker CLI: the
   median of as many rounds, and the ratio of (1) to it.
3. warm round trip: p50 of ``--calls`` sequential ``call_remote`` of a no-op on a warm
   container replica, and the same on a warm process replica (after a warm-up of 200 each).
   The store is sqlite in memory for both.
4. where the Docker engine is in a swarm: (1) and (3) on the swarm runtime too, as
   ``swarm_cold_start_ms`` and ``swarm_warm_roundtrip_p50_ms``.

It needs a Docker engine and the runner image (``bash scripts/docker-up.sh``). The last line
of stdout is one JSON object: {"cold_start_ms": ..., "docker_run_ms": ...,
"cold_start_ratio_vs_docker_run": ..., "warm_roundtrip_p50_ms": ...,
"process_warm_roundtrip_p50_ms": ...}.

Run it with ``python bench/containers.py`` (``--rounds 3 --calls 500`` for a quick one).
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/http.py would shadow the standard library's http, which aiohttp (under aiodocker)
# imports: this directory goes to the end of the path.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.append(str(HERE))

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import aiodocker  # noqa: E402
import anyio  # noqa: E402
from common import percentile, wait_ready  # noqa: E402

from triggerfish import Engine  # noqa: E402
from triggerfish.engine.runtimes.docker import default_image  # noqa: E402


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def noop(x: Any = None) -> None:
    return None


async def cold_starts(rounds: int, runtime: str = "docker") -> list[float]:
    engine = Engine(None)
    engine.function(noop, name="cold", runtime=runtime, replicas=(0, 1), idle_timeout=0.05)
    samples = []
    async with engine:
        handle = engine.handle("cold")
        for _ in range(rounds):
            begun = time.perf_counter()
            await handle.call_remote()
            samples.append((time.perf_counter() - begun) * 1000)
            with anyio.fail_after(30):  # back to zero, its container removed
                while engine.service_status("cold").replicas:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
            await anyio.sleep(0.2)  # let the removal finish off the measured path
    return samples


def docker_runs(rounds: int, image: str) -> list[float]:
    samples = []
    for _ in range(rounds):
        begun = time.perf_counter()
        subprocess.run(["docker", "run", "--rm", image, "python3", "-c", "pass"], check=True)
        samples.append((time.perf_counter() - begun) * 1000)
    return samples


async def warm_p50(runtime: str, calls: int) -> float:
    engine = Engine(None)
    engine.function(noop, name="warm", runtime=runtime)
    async with engine:
        await wait_ready(engine, "warm", 1)
        handle = engine.handle("warm")
        for _ in range(200):
            await handle.call_remote()
        samples = []
        for _ in range(calls):
            begun = time.perf_counter()
            await handle.call_remote()
            samples.append((time.perf_counter() - begun) * 1000)
    return percentile(sorted(samples), 50)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    image = default_image()
    say(f"cold start on the docker runtime ({image}), {args.rounds} rounds")
    cold = await cold_starts(args.rounds)
    say(f"  {', '.join(f'{s:.0f}' for s in cold)} ms")
    say(f"docker run --rm {image} python3 -c pass, {args.rounds} rounds")
    plain = await anyio.to_thread.run_sync(docker_runs, args.rounds, image)
    say(f"  {', '.join(f'{s:.0f}' for s in plain)} ms")
    cold_ms, plain_ms = statistics.median(cold), statistics.median(plain)
    say(f"cold start {cold_ms:.0f} ms, docker run {plain_ms:.0f} ms: {cold_ms / plain_ms:.2f}x")
    say(f"warm round trip: {args.calls} sequential calls on each runtime")
    container = await warm_p50("docker", args.calls)
    process = await warm_p50("process", args.calls)
    say(f"  p50 container {container:.3f} ms, process {process:.3f} ms")
    result = {
        "cold_start_ms": round(cold_ms, 1),
        "docker_run_ms": round(plain_ms, 1),
        "cold_start_ratio_vs_docker_run": round(cold_ms / plain_ms, 3),
        "warm_roundtrip_p50_ms": round(container, 3),
        "process_warm_roundtrip_p50_ms": round(process, 3),
    }
    if await in_a_swarm():
        say(f"the same on the swarm runtime (a single-node swarm), {args.rounds} cold starts")
        swarm_cold = statistics.median(await cold_starts(args.rounds, "swarm"))
        swarm_warm = await warm_p50("swarm", args.calls)
        say(f"  cold start {swarm_cold:.0f} ms, warm p50 {swarm_warm:.3f} ms")
        result["swarm_cold_start_ms"] = round(swarm_cold, 1)
        result["swarm_warm_roundtrip_p50_ms"] = round(swarm_warm, 3)
    else:
        say("no swarm here (docker swarm init): the swarm runtime is not measured")
    return result


async def in_a_swarm() -> bool:
    docker = aiodocker.Docker()
    try:
        return bool((await docker.system.info())["Swarm"]["LocalNodeState"] == "active")
    finally:
        await docker.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="cold starts and docker runs")
    parser.add_argument("--calls", type=int, default=2000, help="warm round trips per runtime")
    result = anyio.run(run, parser.parse_args())
    print(json.dumps(result))


if __name__ == "__main__":
    main()
