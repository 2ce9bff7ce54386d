"""triggerfish beside the task systems Python users would pick instead, on the same machine,
the same work, as ratios: Celery (Redis broker and result backend), Ray (local) and, for the
cron workload, APScheduler 3.

One command does it all (``make bench-peers``, or ``python bench/peers/run.py``): it makes
``bench/peers/.venv`` with the peers (never the project's own dependencies), starts
Debian's redis-server and a Celery worker on 127.0.0.1, runs each system's workloads in its
own process, stops everything it started, and writes ``bench/results/peers.json``,
``peers.md`` (the table, with the machine) and ``peers.png`` (the ratios).

Workloads, each with two worker processes on every system:
  1. ``noop`` no-op tasks submitted and all results collected: tasks/s.
  2. one task at a time on a warm worker: round trip p50 and p99.
  3. ``map`` of small CPU tasks (about 1 ms each), results in input order: wall time.
  4. ``cron_jobs`` jobs due every second for ``cron_seconds``: p99 lateness of the job's
     start, and the CPU the system used meanwhile.
1 and 3 are the median of ``runs`` runs after a warm-up run. The last line of output is one
JSON object; ``--quick`` runs smaller numbers in a couple of minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
VENV = HERE / ".venv"
PYTHON = VENV / "bin" / "python"
RESULTS = ROOT / "bench" / "results"
FULL = {
    "noop": 20_000,
    "roundtrips": 1_000,
    "map": 10_000,
    "cron_jobs": 1_000,
    "cron_seconds": 60,
    "runs": 3,
}
QUICK = {
    "noop": 2_000,
    "roundtrips": 300,
    "map": 1_000,
    "cron_jobs": 200,
    "cron_seconds": 10,
    "runs": 1,
}


def say(text: str) -> None:
    print(text, flush=True)


def ensure_venv() -> None:
    marker = VENV / ".installed"
    wanted = (HERE / "requirements.txt").read_text() + str(ROOT)
    if marker.exists() and marker.read_text() == wanted:
        return
    say(f"installing the peers into {VENV} (once)")
    if not PYTHON.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(PYTHON), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "-r", str(HERE / "requirements.txt")], check=True)
    subprocess.run([*pip, "-e", str(ROOT)], check=True)  # triggerfish, from this checkout
    marker.write_text(wanted)


def ensure_redis() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    if os.geteuid() != 0:
        sys.exit("redis-server is missing: apt-get install redis-server (needs root)")
    say("installing Debian's redis-server")
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "redis-server"],
        check=True,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    return shutil.which("redis-server") or sys.exit("redis-server did not install")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """End a process and its group (a Celery worker and its pool)."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def run_system(script: str, env: dict[str, str]) -> dict[str, Any]:
    say(f"-- {script}")
    result = subprocess.run(
        [str(PYTHON), str(HERE / script)],
        cwd=HERE,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    figures: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    say("   " + json.dumps(figures))
    return figures


def _exit_on_term(signum: int, frame: object) -> None:
    raise SystemExit(f"stopped by signal {signum}")  # so that what was started is stopped


def inside(args: argparse.Namespace) -> None:
    signal.signal(signal.SIGTERM, _exit_on_term)
    sys.path.insert(0, str(HERE))
    from work import calibrate

    size: dict[str, Any] = dict(QUICK if args.quick else FULL)
    size["spin_n"] = calibrate()
    say(f"sizes: {size}")
    env = {**os.environ, "PEERS_SIZES": json.dumps(size), "PYTHONPATH": str(HERE)}
    scratch = Path(tempfile.mkdtemp(prefix="triggerfish-peers-"))
    started: list[subprocess.Popen[bytes]] = []
    figures: dict[str, dict[str, Any]] = {}
    try:
        figures["triggerfish"] = run_system("sys_triggerfish.py", env)
        port = free_port()
        redis = subprocess.Popen(
            [ensure_redis(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(scratch)],
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        started.append(redis)
        wait_port(port)
        env["PEERS_REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
        worker = subprocess.Popen(
            [
                str(VENV / "bin" / "celery"),
                "-A",
                "peer_celery",
                "worker",
                "--concurrency=2",
                "--pool=prefork",
                "--loglevel=WARNING",
                "--without-gossip",
                "--without-mingle",
            ],
            cwd=HERE,
            env=env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
        )
        started.append(worker)
        ping = [str(VENV / "bin" / "celery"), "-A", "peer_celery", "inspect", "ping", "-t", "2"]
        deadline = time.monotonic() + 60
        while subprocess.run(ping, cwd=HERE, env=env, capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                raise TimeoutError("the Celery worker did not answer")
        figures["celery"] = run_system("sys_celery.py", env)
        stop(worker)
        figures["ray"] = run_system("sys_ray.py", env)
        figures["apscheduler"] = run_system("sys_apscheduler.py", env)
    finally:
        for process in reversed(started):
            stop(process)
        shutil.rmtree(scratch, ignore_errors=True)
    report(figures, size, args.quick)


def report(figures: dict[str, dict[str, Any]], size: dict[str, Any], quick: bool) -> None:
    tf = figures["triggerfish"]
    summary = {
        "noop_tasks_per_s": {
            s: round(figures[s]["noop_tasks_per_s"], 1) for s in ("triggerfish", "celery", "ray")
        },
        "roundtrip_p50_ms": {
            s: round(figures[s]["roundtrip_p50_ms"], 3) for s in ("triggerfish", "celery", "ray")
        },
        "map_10k_wall_s": {
            s: round(figures[s]["map_10k_wall_s"], 3) for s in ("triggerfish", "celery", "ray")
        },
        "cron_lateness_p99_ms": {
            s: round(figures[s]["cron_lateness_p99_ms"], 2) for s in ("triggerfish", "apscheduler")
        },
    }
    # The ratio says how many times better triggerfish is (above 1: triggerfish wins).
    rows = [
        ("1. no-op tasks/s", "noop_tasks_per_s", True, ("celery", "ray")),
        ("2. round trip p50 ms", "roundtrip_p50_ms", False, ("celery", "ray")),
        ("2. round trip p99 ms", "roundtrip_p99_ms", False, ("celery", "ray")),
        ("3. map wall s", "map_10k_wall_s", False, ("celery", "ray")),
        ("4. cron lateness p99 ms", "cron_lateness_p99_ms", False, ("apscheduler",)),
        ("4. cron CPU s", "cron_cpu_s", False, ("apscheduler",)),
    ]
    lines = [
        "| workload | triggerfish | peer | peer's figure | triggerfish's advantage |",
        "|---|---|---|---|---|",
    ]
    bars: list[tuple[str, float]] = []
    for label, key, higher_better, peers in rows:
        for peer in peers:
            ours, theirs = float(tf[key]), float(figures[peer][key])
            ratio = (ours / theirs if higher_better else theirs / ours) if ours and theirs else 0
            lines.append(f"| {label} | {ours:,.3g} | {peer} | {theirs:,.3g} | {ratio:.2f}x |")
            bars.append((f"{label}\nvs {peer}", ratio))
    machine = (
        f"{platform.node()}: {os.cpu_count()} cores, {platform.platform()}, "
        f"Python {platform.python_version()}"
    )
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    table = "\n".join(lines)
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "-quick" if quick else ""
    (RESULTS / f"peers{suffix}.md").write_text(
        f"# triggerfish beside its peers ({'quick' if quick else 'full'} run)\n\n"
        f"{when}; {machine}.\nSizes: {json.dumps(size)}.\n\n{table}\n\n"
        "Advantage: how many times better triggerfish's figure is (above 1x it wins).\n\n"
        f"All figures:\n\n```json\n{json.dumps(figures, indent=2)}\n```\n"
    )
    (RESULTS / f"peers{suffix}.json").write_text(json.dumps(summary, indent=2) + "\n")
    chart(bars, RESULTS / f"peers{suffix}.png")
    say(table)
    print(json.dumps(summary), flush=True)


def chart(bars: list[tuple[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(11, 5))
    labels = [b[0] for b in bars]
    values = [b[1] for b in bars]
    axes.bar(labels, values, color=["tab:green" if v >= 1 else "tab:red" for v in values])
    axes.axhline(1, color="black", linewidth=0.8)
    axes.set_yscale("log")
    axes.set_ylabel("triggerfish's advantage (x, log)")
    axes.tick_params(axis="x", labelsize=7, labelrotation=30)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller numbers, one run")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        inside(args)
        return
    ensure_venv()
    os.execv(str(PYTHON), [str(PYTHON), __file__, "--inside", *sys.argv[1:]])


if __name__ == "__main__":
    main()
