"""Snapshot cost: agent collect time, bytes on the wire, round trip, host loop stall.

    python bench/snapshot.py [--tasks 1000 10000 100000] [--repeat 5]

Targets (2-core machine): 10k tasks round trip <= 100 ms; 100k <= 1 s; host loop
stall <= 10 ms at 100k; agent CPU with no observer connected ~0.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from observer.client import connect  # noqa: E402
from observer.keygen import generate  # noqa: E402


def start_host(keys: Path, tasks: int, monitor: bool = True) -> tuple[subprocess.Popen, str]:
    argv = [sys.executable, str(ROOT / "bench" / "host.py"), str(keys), "--tasks", str(tasks)]
    if not monitor:
        argv.append("--no-monitor")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, bufsize=1
    )
    line = proc.stdout.readline()
    if not line.startswith("agent: "):
        proc.kill()
        raise SystemExit(f"host failed to start: {line!r}")
    return proc, line.split()[1]


def host_command(proc: subprocess.Popen, word: str) -> str | None:
    proc.stdin.write(word + "\n")
    proc.stdin.flush()
    return proc.stdout.readline().strip() if word == "report" else None


def measure(keys, km, tasks: int, repeat: int) -> dict[str, float]:
    proc, address = start_host(keys, tasks)
    try:
        node = connect(
            address, token_file=km.operator_token, fingerprint=km.fingerprint, timeout=60
        )
        node.snapshot(limit=tasks + 100)  # warm up: registers ids, loads code paths
        rtts, collects, stalls = [], [], []
        size = 0
        for _ in range(repeat):
            host_command(proc, "reset")
            host_command(proc, "report")  # make sure the reset ran before we start
            started = time.perf_counter()
            snap = node.snapshot(limit=tasks + 100)
            rtts.append(time.perf_counter() - started)
            collects.append(snap.collect_seconds)
            size = node.last_size
            stalls.append(float(host_command(proc, "report").split()[1]))
            assert len(snap.tasks) >= tasks, (len(snap.tasks), tasks)
        node.close()
        return {
            "tasks": tasks,
            "collect_ms": statistics.median(collects) * 1000,
            "rtt_ms": statistics.median(rtts) * 1000,
            "rtt_best_ms": min(rtts) * 1000,
            "wire_kib": size / 1024,
            "stall_ms": max(stalls) * 1000,
            "stall_median_ms": statistics.median(stalls) * 1000,
        }
    finally:
        proc.kill()
        proc.wait()


def idle_agent_cpu(keys, km, seconds: float) -> tuple[float, float]:
    """CPU seconds used by the agent's threads with no observer connected, over ``seconds``."""
    proc, address = start_host(keys, 1000, monitor=False)
    try:
        with connect(address, token_file=km.operator_token, fingerprint=km.fingerprint) as node:
            agent_tids = {t.native_id for t in node.threads() if t.is_agent}
        time.sleep(1.0)  # let the connection thread end
        p = psutil.Process(proc.pid)

        def agent_cpu() -> float:
            return sum(t.user_time + t.system_time for t in p.threads() if t.id in agent_tids)

        def total_cpu() -> float:
            times = p.cpu_times()
            return times.user + times.system

        a0, t0 = agent_cpu(), total_cpu()
        time.sleep(seconds)
        return agent_cpu() - a0, total_cpu() - t0
    finally:
        proc.kill()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        km = generate(Path(tmp) / "keys")
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus; 50 idle threads in host")
        print(
            f"{'tasks':>8} {'collect ms':>11} {'round trip ms':>14} {'best ms':>8} "
            f"{'wire KiB':>9} {'worst stall ms':>15} {'median stall ms':>16}"
        )
        for n in args.tasks:
            r = measure(km.directory, km, n, args.repeat)
            print(
                f"{n:>8} {r['collect_ms']:>11.1f} {r['rtt_ms']:>14.1f} {r['rtt_best_ms']:>8.1f} "
                f"{r['wire_kib']:>9.0f} {r['stall_ms']:>15.2f} {r['stall_median_ms']:>16.2f}"
            )
        agent_s, total_s = idle_agent_cpu(km.directory, km, args.idle_seconds)
        print(
            f"idle, no observer, {args.idle_seconds:.0f}s: "
            f"agent threads used {agent_s * 1000:.1f} ms "
            f"CPU ({agent_s / args.idle_seconds * 100:.3f}% of a core); whole host "
            f"{total_s * 1000:.1f} ms"
        )


if __name__ == "__main__":
    main()
