"""The example app: functions and a class service on warm process replicas, every execution
stored in a sqlite file, then a table of what ran.

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
        print(f"word counts {counts}, thumbnails {thumbs}, greeting {greeting!r}\n")
        print(f"{'execution':<30} {'function':<14} {'status':<10} {'tries':>5}  result")
        for function in ("word_count", "thumbnail", "Greeter.greet"):
            handle = engine.handle(function)
            for execution_id in (await handle.list(limit=10)).execution_ids:
                ex = await handle.get(execution_id)
                print(
                    f"{ex.id:<30} {ex.function:<14} {ex.status:<10} {ex.attempts:>5}  {ex.result!r}"
                )
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
