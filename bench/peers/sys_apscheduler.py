"""The cron workload on APScheduler 3: an AsyncIOScheduler (its default executor and job
store, in memory) with ``cron_jobs`` interval jobs every second, started on the same whole
second; lateness is when each run of the job function starts against its scheduled second,
as for triggerfish."""

from __future__ import annotations

import asyncio
import math
import os
import time
from datetime import datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from work import cpu_seconds, emit, percentile, sizes

FIRST = math.floor(time.time()) + 3  # every job's first run, on a whole second
WINDOW = int(sizes()["cron_seconds"])
runs: dict[int, int] = {}
lateness: list[float] = []


async def job(number: int) -> None:
    """Run k of a job was due at FIRST + k (coalesce off: each run happens)."""
    now = time.time()
    k = runs.get(number, 0)
    runs[number] = k + 1
    if k < WINDOW:  # runs due after the measured window do not count
        lateness.append((now - (FIRST + k)) * 1000)


async def main() -> None:
    size = sizes()
    scheduler = AsyncIOScheduler()
    first = FIRST
    for i in range(size["cron_jobs"]):
        scheduler.add_job(
            job,
            "interval",
            args=(i,),
            seconds=1,
            start_date=datetime.fromtimestamp(first),
            id=f"every-second-{i}",
            max_instances=1,
            misfire_grace_time=None,
            coalesce=False,
        )
    scheduler.start()
    await asyncio.sleep(first - time.time())
    cpu_before = cpu_seconds([os.getpid()])
    await asyncio.sleep(size["cron_seconds"])
    cpu_used = cpu_seconds([os.getpid()]) - cpu_before
    scheduler.shutdown(wait=False)
    emit(
        {
            "system": "apscheduler",
            "cron_lateness_p50_ms": percentile(lateness, 50),
            "cron_lateness_p99_ms": percentile(lateness, 99),
            "cron_cpu_s": round(cpu_used, 2),
            "cron_runs": len(lateness),
            "cron_runs_expected": size["cron_jobs"] * size["cron_seconds"],
        }
    )


if __name__ == "__main__":
    asyncio.run(main())
