"""The example app: functions and a class service on warm process replicas, an event trigger
and a cron trigger, every execution stored in a sqlite file, then a table of what ran.

    python -m examples.quickstart [DB_PATH]
"""

from __future__ import annotations

import sys
import time

import anyio

import triggerfish
from triggerfish import Engine, current_context, method

engine = Engine(sys.argv[1] if len(sys.argv) > 1 else "triggerfish-example.db")


@engine.function(replicas=2, concurrency=4)
def word_count(text: str) -> int:
    return len(text.split())


@engine.function(timeout=5, max_attempts=3, backoff=0.1)
def thumbnail(item_id: int) -> str:
    progress = current_context().progress
    for step in range(1, 4):
        time.sleep(0.05)
        progress.update(step * 33, f"step {step} of 3")
    if current_context().attempt == 1 and item_id == 3:
        raise ConnectionError("storage hiccup")  # retried, then it succeeds
    return f"thumb-{item_id}.png"


@engine.function()
def on_upload(item: dict[str, str]) -> str:
    return f"indexed {item['id']} from {item['dir']}"


@engine.function()
def heartbeat() -> str:
    return time.strftime("%H:%M:%S")


# Fired by events and by the clock; kept in the sqlite file, applied again (by name) each run.
engine.add_trigger(
    {
        "name": "uploads",
        "function": "on_upload",
        "resource": "Item",
        "actions": ["Created"],
        "filter": {"dir": "/incoming/*"},
        "executionMode": "Once",
    }
)
engine.add_trigger({"name": "every-2s", "function": "heartbeat", "cron": "*/2 * * * * *"})


@engine.service(init_params={"greeting": "hello"})
class Greeter:
    def __init__(self, greeting: str) -> None:
        self.greeting = greeting  # runs once per replica: load a model here

    @method
    def greet(self, name: str) -> str:
        print(f"greeting {name}")  # captured into the execution's logs
        return f"{self.greeting}, {name}"


async def main() -> None:
    async with engine:
        counts = [n async for n in engine.handle(word_count).map(["a b c", "d e", "f"])]
        thumbs = [t async for t in engine.handle(thumbnail).map(range(1, 5))]
        greeting = await engine.handle("Greeter.greet").call_remote("world")
        print(f"word counts {counts}, thumbnails {thumbs}, greeting {greeting!r}")
        stamp = int(time.time())
        caused = await engine.emit("Item", "Created", {"id": f"doc-{stamp}", "dir": "/incoming/a"})
        ignored = await engine.emit("Item", "Created", {"id": f"tmp-{stamp}", "dir": "/tmp"})
        print(f"event on /incoming caused {len(caused)} execution, on /tmp {len(ignored)}")
        await anyio.sleep(2.1)  # the cron trigger fires at least once meanwhile
        await engine.triggers.deactivate("every-2s")
        for function in ("on_upload", "heartbeat"):
            await engine.handle(function).wait_for_completion(timeout=10)
        print()
        print(f"{'execution':<30} {'function':<14} {'status':<10} {'tries':>5}  result")
        for function in ("word_count", "thumbnail", "Greeter.greet", "on_upload", "heartbeat"):
            handle = engine.handle(function)
            for execution_id in (await handle.list(limit=10)).execution_ids:
                ex = await handle.get(execution_id)
                cause = f"  (trigger {ex.trigger_id})" if ex.trigger_id else ""
                row = f"{ex.id:<30} {ex.function:<14} {ex.status:<10} {ex.attempts:>5}"
                print(f"{row}  {ex.result!r}{cause}")
        for trigger in engine.triggers.list():
            print(f"trigger {trigger.name}: fired {trigger.stats.fired}")
        retried = await engine.handle(thumbnail).list(status=triggerfish.ExecutionStatus.SUCCEEDED)
        for execution_id in retried.execution_ids:
            ex = await engine.get(execution_id)
            if ex.num_failed_attempts:
                print(f"\n{ex.id} status log:")
                for change in ex.status_log:
                    note = f" {change.progress}%" if change.progress is not None else ""
                    print(f"  {change.time:%H:%M:%S.%f} {change.status:<9}{note} {change.message}")


if __name__ == "__main__":
    anyio.run(main)
