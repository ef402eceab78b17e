"""What a worker's own agent costs while nobody observes it.

    python bench/worker_idle.py [--workers 4] [--rounds 3] [--window 20]

Starts tests/hosts/forker.py with and without ``--workers`` (interleaved, ``--rounds``
each), forks ``--workers`` idle children from each (os.fork, waiting for a signal), and
once every child has said it is ready, reads each child's RSS and USS (private memory),
then its CPU time over ``--window`` seconds. Prints per-worker medians for both kinds of
master and the difference: what the worker's agent costs.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from observer.keygen import generate  # noqa: E402
from tests.helpers import HostProcess, line_value  # noqa: E402


def one_round(keys: Path, with_agents: bool, workers: int, window: float) -> list[dict]:
    args = [sys.executable, "-m", "tests.hosts.forker", str(keys)]
    master = HostProcess(args + (["--workers"] if with_agents else []))
    try:
        line_value(master, "agent")
        line_value(master, "echo")
        pids = []
        for _ in range(workers):
            mark = master.mark()
            master.send("fork os idle")
            pid = int(master.wait_line(r"^event: forked (\d+)", start=mark).group(1))
            master.wait_line(rf"^event: child {pid} ", start=mark)
            pids.append(pid)
        procs = [psutil.Process(pid) for pid in pids]
        rows = []
        for proc in procs:
            full = proc.memory_full_info()
            rows.append({"rss": full.rss, "uss": full.uss, "cpu0": sum(proc.cpu_times()[:2])})
        time.sleep(window)  # the measurement window itself, not synchronisation
        for proc, row in zip(procs, rows, strict=True):
            row["cpu"] = sum(proc.cpu_times()[:2]) - row.pop("cpu0")
            row["threads"] = proc.num_threads()
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
            master.send(f"reap {pid}")
            master.wait_line(rf"^event: reaped {pid} ")
        return rows
    finally:
        master.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window", type=float, default=20.0)
    args = parser.parse_args()
    print(
        "load average:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    )
    results: dict[bool, list[dict]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        keys = Path(tmp)
        generate(keys)
        for _ in range(args.rounds):
            for with_agents in (False, True):
                results[with_agents] += one_round(keys, with_agents, args.workers, args.window)
    med = {}
    for with_agents, rows in results.items():
        label = "with worker agents" if with_agents else "no worker agents  "
        med[with_agents] = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        spread = {k: (min(r[k] for r in rows), max(r[k] for r in rows)) for k in ("uss", "cpu")}
        m = med[with_agents]
        print(
            f"{label}: n={len(rows)} RSS {m['rss'] / 2**20:.2f} MiB, "
            f"USS {m['uss'] / 2**20:.2f} MiB "
            f"(min {spread['uss'][0] / 2**20:.2f}, max {spread['uss'][1] / 2**20:.2f}), "
            f"CPU {m['cpu'] * 1000:.1f} ms per {args.window:g} s "
            f"(min {spread['cpu'][0] * 1000:.1f}, max {spread['cpu'][1] * 1000:.1f}), "
            f"threads {m['threads']:g}"
        )
    print(
        f"worker agent costs: RSS +{(med[True]['rss'] - med[False]['rss']) / 2**20:.2f} MiB, "
        f"USS +{(med[True]['uss'] - med[False]['uss']) / 2**20:.2f} MiB, CPU "
        f"+{(med[True]['cpu'] - med[False]['cpu']) * 1000 / args.window:.2f} ms/s"
    )
    print(
        "load average:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    )


if __name__ == "__main__":
    main()
