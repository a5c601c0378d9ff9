#!/usr/bin/env python3
"""What an idle streamcast costs: CPU per thread over BENCH_IDLE_SECONDS (30) with nothing to do.

Runs `streamcast run` with the worker's default client settings (scripts/bench.py's idle column
uses the bench's 5 ms fetch wait, which nisshi needs for throughput and which makes every consumer
ask the broker 200 times a second), once per role (`worker`, `all`), against the broker in
STREAMCAST_TEST_BOOTSTRAP (scripts/with-broker.sh), after a 20 s settle for the group to form.
Prints the total as % of one core and the busiest threads (from /proc/PID/task/*/stat).
"""
import glob
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402 - the bench's topic and config plumbing

ROOT = bench.ROOT
SECONDS = float(os.environ.get("BENCH_IDLE_SECONDS", "30"))
SETTLE = 20.0
TICK = os.sysconf("SC_CLK_TCK")


def threads(pid: int) -> dict:
    """CPU seconds (utime + stime) per thread id, with the thread's name."""
    out = {}
    for task in glob.glob(f"/proc/{pid}/task/*"):
        try:
            stat = Path(task, "stat").read_text()
        except OSError:
            continue  # the thread ended
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        out[task] = (name, (int(fields[11]) + int(fields[12])) / TICK)
    return out


def measure(role: str, work: Path) -> None:
    names = bench.create_topics(f"idle-{role}")
    config = work / f"{role}.toml"
    config.write_text(bench.config(names, "co2-mlp", False, client_defaults=True, http="127.0.0.1:0"))
    with open(work / f"{role}.log", "w") as log:
        proc = subprocess.Popen([str(ROOT / "target/release/streamcast"), "run", "--config", str(config), "--role", role],
                                stdout=log, stderr=log)
    try:
        time.sleep(SETTLE)
        if proc.poll() is not None:
            sys.exit(f"idle: the worker exited:\n{(work / f'{role}.log').read_text()}")
        before, t0 = threads(proc.pid), time.monotonic()
        time.sleep(SECONDS)
        after, t1 = threads(proc.pid), time.monotonic()
    finally:
        proc.terminate()
        proc.wait(60)
        bench.delete_topics(names)
    wall = t1 - t0
    used = sorted(((cpu - before.get(task, (name, 0.0))[1], name) for task, (name, cpu) in after.items()), reverse=True)
    total = sum(d for d, _ in used)
    busiest = ", ".join(f"{name} {d / wall * 100:.2f}" for d, name in used[:5] if d > 0)
    print(f"idle ({role}): {total / wall * 100:.2f} % of a core over {wall:.0f} s, {len(used)} threads; busiest: {busiest}")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="streamcast-idle-") as work:
        for role in ("worker", "all"):
            measure(role, Path(work))


if __name__ == "__main__":
    main()
