"""The main job: the daemon on its embedded default (a sqlite file, process replicas), with an
example package deployed, an event and a cron trigger firing, and what they caused.

    python -m examples.daemon_demo        (what ``make run`` does; Ctrl-C stops the daemon)

1. starts ``triggerfish serve`` with its data in ``.triggerfish/`` (the store, the key hashes;
   the key itself is saved for this user, so the CLI works with no set-up),
2. pushes ``examples/thumbnails`` as the next revision of package ``thumbnails`` and deploys its
   ``service.json``: service ``thumbnailer`` with an Item Created trigger and a cron trigger,
3. emits an Item Created event for an image, waits for the execution it caused and for the
   cron trigger's first firing, and prints the executions,
4. leaves the daemon running: try ``triggerfish executions list`` or ``triggerfish status``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio

from triggerfish import Client
from triggerfish.engine.codebase import zip_directory

HERE = Path(__file__).resolve().parent
URL = os.environ.get("TRIGGERFISH_API_URL", "http://127.0.0.1:8765")


async def wait_healthy(client: Client, daemon: subprocess.Popen[bytes]) -> None:
    # The daemon is another process with no "ready" event to wait on: /health is polled.
    with anyio.fail_after(60):
        while True:
            if daemon.poll() is not None:
                sys.exit(f"the daemon exited with status {daemon.returncode}")
            try:
                await client.health()
                return
            except Exception:
                await anyio.sleep(0.1)


async def show(client: Client, function: str) -> None:
    page = await client.list_executions(function=function, limit=5)
    for execution_id in page.execution_ids:
        ex = await client.get(execution_id)
        cause = f"trigger {ex.trigger_id}" if ex.trigger_id else ""
        print(f"  {ex.id}  {ex.function:<24} {ex.status:<10} {ex.result!r:<28} {cause}")


async def demo(daemon: subprocess.Popen[bytes]) -> None:
    async with Client(URL) as probe:
        await wait_healthy(probe, daemon)
    # Opened now: on its first start the daemon has just saved this user's key.
    async with Client(URL) as client:
        data = zip_directory(HERE / "thumbnails")
        pushed = await client.request(
            "POST", "/packages", content=data, headers={"Content-Type": "application/zip"}
        )
        revision = pushed.json()
        service = (HERE / "thumbnails" / "service.json").read_text()
        deployed = (
            await client.request(
                "POST",
                "/services",
                content=service.encode(),
                headers={"Content-Type": "application/json"},
            )
        ).json()
        print(
            f"pushed package {revision['name']} revision {revision['revision']}, deployed "
            f"service {deployed['name']} version {deployed['version']}"
        )

        image = {"id": f"img-{int(time.time())}", "metadata": {"system": {"mimetype": "image/png"}}}
        caused = await client.emit("Item", "Created", image)
        print(f"event Item Created {image['id']} caused {caused}")
        for execution_id in caused:
            print(f"  result: {await client.await_result(execution_id, timeout=60)!r}")
        heartbeat = client.function("thumbnailer.heartbeat")
        print("waiting for the cron trigger (every 10 s)...")
        with anyio.fail_after(30):
            # Polled: the remote client has no event to wait on for a trigger's firing.
            while not (await heartbeat.list(limit=1, status="SUCCEEDED")).execution_ids:  # noqa: ASYNC110
                await anyio.sleep(0.5)
        print("\nexecutions:")
        for function in ("thumbnailer.thumbnail", "thumbnailer.heartbeat"):
            await show(client, function)
    print(
        f"\nthe daemon keeps running at {URL} (Ctrl-C stops it); try in another shell:\n"
        "  triggerfish executions list\n  triggerfish triggers list\n"
        '  triggerfish emit Item Created --body \'{"id": "img-2", '
        '"metadata": {"system": {"mimetype": "image/jpeg"}}}\''
    )


def main() -> None:
    port = URL.rsplit(":", 1)[1]
    daemon = subprocess.Popen(
        [sys.executable, "-m", "triggerfish", "serve", "--data-dir", ".triggerfish", "--port", port]
    )
    try:
        anyio.run(demo, daemon)
        daemon.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)  # drains: running executions finish first
            daemon.wait()


if __name__ == "__main__":
    main()
