"""An app embedding the engine, run as a subprocess by the crash tests.

``start DB DIR N``: starts N executions of each function, prints their ids, then idles.
``resume DB DIR``: waits for every unfinished execution and prints each one's status log.
``cron DB DIR``: a trigger firing every second; once one firing is stored, holds the store's
writer (prints ``held``), so that the firings after it run but are never committed.
``cron-resume DB DIR``: restarts, lets the misfire policy act, stops the trigger, and prints
the trigger's stats and every stored firing.
``once DB DIR``: a Once trigger; emits one event and kills itself (SIGKILL) the moment the
emit returns, before the event loop runs again.
``once-resume DB DIR``: restarts, waits for the fired execution, prints the trigger's stats.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import anyio

import triggerfish


def work(i: int, directory: str) -> int:
    context = triggerfish.current_context()
    with open(Path(directory) / "runs", "a") as log:
        log.write(f"{context.execution_id} {context.attempt} {os.getpid()}\n")
    time.sleep(0.3)
    return i


def work_once(i: int, directory: str) -> int:
    return work(i, directory)


def ticked(directory: str) -> str:
    execution_id = triggerfish.current_context().execution_id
    with open(Path(directory) / "ticks", "a") as log:
        log.write(f"{execution_id}\n")
    return execution_id


def build(db: str) -> triggerfish.Engine:
    engine = triggerfish.Engine(db, drain_timeout=1)
    engine.function(work, replicas=1, concurrency=2, max_attempts=2, backoff=0)
    engine.function(work_once, replicas=1, concurrency=2, max_attempts=1)
    # A firing whose start was stored before the writer was held lost its attempt at the kill:
    # a second attempt runs it again, as a restart does for any function that allows one.
    engine.function(ticked, max_attempts=2, backoff=0)
    return engine


async def start(db: str, directory: str, count: int) -> None:
    engine = build(db)
    async with engine:
        ids = []
        for function in (work, work_once):
            handle = engine.handle(function)
            ids += await handle.start_many(((i, directory), {}) for i in range(count))
        print(json.dumps(ids), flush=True)
        await anyio.sleep_forever()


async def resume(db: str) -> None:
    engine = build(db)
    async with engine:
        for function in (work, work_once):
            await engine.handle(function).wait_for_completion(timeout=60)
        report = {}
        for function in (work, work_once):
            handle = engine.handle(function)
            offset = None
            while True:
                page = await handle.list(offset=offset, limit=100)
                for execution_id in page.execution_ids:
                    execution = await handle.get(execution_id)
                    report[execution_id] = {
                        "function": execution.function,
                        "status": execution.status.value,
                        "attempts": execution.attempts,
                        "log": [[c.status.value, c.message] for c in execution.status_log],
                        "error": execution.error.type if execution.error else None,
                    }
                if page.offset is None:
                    break
                offset = page.offset
        print(json.dumps(report), flush=True)


async def cron(db: str, directory: str) -> None:
    engine = build(db)
    async with engine:
        await engine.triggers.create(
            {
                "name": "tick",
                "function": "ticked",
                "cron": "* * * * * *",
                "input": {"directory": directory},
                "misfire": "run_once",
                "misfireGrace": 60,
            }
        )
        handle = engine.handle(ticked)
        while not (await handle.list()).execution_ids:
            await anyio.sleep(0.05)

        async def hold_the_writer() -> None:
            print("held", flush=True)
            await anyio.sleep_forever()

        await engine._core.store._exclusive(hold_the_writer)


ON_ITEM = {
    "name": "on-item",
    "function": "work_once",
    "resource": "Item",
    "actions": ["Created"],
    "executionMode": "Once",
}


async def once(db: str, directory: str) -> None:
    engine = build(db)
    async with engine:
        await engine.triggers.create({**ON_ITEM, "input": {"directory": directory}})
        (execution_id,) = await engine.emit("Item", "Created", {"id": "item-1"})
        print(json.dumps(execution_id), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # the execution is stored; nothing after it is


async def once_resume(db: str) -> None:
    engine = build(db)
    async with engine:
        await engine.handle(work_once).wait_for_completion(timeout=30)
        stats = engine.triggers.get("on-item").stats
        executions = (await engine.handle(work_once).list()).execution_ids
        print(json.dumps({"fired": stats.fired, "executions": list(executions)}), flush=True)


async def cron_resume(db: str) -> None:
    engine = build(db)
    restarted_at = time.time()
    async with engine:
        await anyio.sleep(1.5)  # the restart's misfire run, and a firing or so after it
        await engine.triggers.deactivate("tick")
        handle = engine.handle(ticked)
        await handle.wait_for_completion(timeout=30)
        stats = engine.triggers.get("tick").stats
        firings = []
        for execution_id in (await handle.list(limit=1000)).execution_ids:
            execution = await handle.get(execution_id)
            assert execution.event is not None
            firings.append(
                {
                    "id": execution_id,
                    "scheduled": execution.event["scheduled"],
                    "created_at": execution.created_at.timestamp(),
                    "status": execution.status.value,
                    "attempts": execution.attempts,
                    "error": execution.error.type if execution.error else None,
                }
            )
        report = {"fired": stats.fired, "missed": stats.missed, "firings": firings}
        print(json.dumps({"restarted_at": restarted_at, **report}), flush=True)


if __name__ == "__main__":
    mode, db, directory = sys.argv[1:4]
    if mode == "start":
        anyio.run(start, db, directory, int(sys.argv[4]))
    elif mode == "cron":
        anyio.run(cron, db, directory)
    elif mode == "cron-resume":
        anyio.run(cron_resume, db)
    elif mode == "once":
        anyio.run(once, db, directory)
    elif mode == "once-resume":
        anyio.run(once_resume, db)
    else:
        anyio.run(resume, db)
