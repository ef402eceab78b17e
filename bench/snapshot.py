"""Snapshot cost: a cold full listing, the steady incremental refresh, and what each costs
the host (agent CPU, worst loop stall, GC collections run in the host meanwhile).

    python bench/snapshot.py [--tasks 10000 100000] [--repeat 5] [--depth 3]
                             [--waits 1] [--root /work/main] [--idle-seconds 20]

For each size, a fresh host (bench/host.py: N tasks ``--depth`` coroutines deep, 50 idle
threads, a 1 ms loop-stall monitor, gc.callbacks counting collections per generation):
- plain walk: the host's own loop walking every task's await chain (function and line of
  each coroutine), the best of two runs made after the cold call: the floor a listing is
  held against (us per task);
- cold: the very first Node.snapshot() on a persistent link (decode included): round
  trip, agent CPU (its threads' CPU time), agent CPU per task and its ratio to the plain
  walk, bytes and round trips, worst loop stall, GC collections gen0/gen1/gen2;
- steady: ``--repeat`` refreshes ``--interval`` apart (each a pass of its own) with
  nothing changing: median round trip, agent CPU per refresh (total / repeats: thread CPU
  is counted in 10 ms ticks), rows received, worst stall, collections.
``--root DIR`` runs the agent and the client of another checkout (e.g. /work/main) with
this script and this host, for a comparison in the same run.

Targets (2-core machine): cold 100k <= 500 ms, 10k <= 60 ms; worst stall <= 10 ms, the
first call included; no gen2 collection during a call; agent CPU per task <= 3x the plain
walk; 1M tasks complete.
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
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _root_from_argv() -> Path:
    """The checkout whose agent and client are measured (--root), before imports."""
    if "--root" in sys.argv:
        return Path(sys.argv[sys.argv.index("--root") + 1]).resolve()
    return ROOT


CODE = _root_from_argv()
sys.path.insert(0, str(CODE))
if CODE != ROOT:
    sys.path.insert(1, str(ROOT))

from observer.client import connect  # noqa: E402
from observer.keygen import generate  # noqa: E402


class Host:
    """bench/host.py with ``tasks`` tasks, the agent from CODE."""

    def __init__(
        self, keys: Path, tasks: int, depth: int, waits: int = 1, monitor: bool = True
    ) -> None:
        argv = [sys.executable, str(HERE / "host.py"), str(keys), "--tasks", str(tasks)]
        argv += ["--depth", str(depth), "--waits", str(waits)]
        if not monitor:
            argv.append("--no-monitor")
        env = dict(os.environ, PYTHONPATH=str(CODE))
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            bufsize=1,
        )
        assert self.proc.stdout is not None and self.proc.stdin is not None
        line = self.proc.stdout.readline()
        if not line.startswith("agent: "):
            self.stop()
            raise SystemExit(f"host failed to start: {line!r} {self.proc.stderr.read()[-2000:]}")
        self.address = line.split()[1]
        self.psutil = psutil.Process(self.proc.pid)

    def send(self, word: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(word + "\n")
        self.proc.stdin.flush()

    def ask(self, word: str, answer: str) -> list[str]:
        assert self.proc.stdout is not None
        self.send(word)
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise SystemExit(f"host exited: {self.proc.stderr.read()[-2000:]}")
            if line.startswith(answer + ":"):
                return line.split()[1:]

    def reset(self) -> None:
        self.send("reset")
        self.ask("report", "stall")  # answered once the reset was applied

    def report(self) -> tuple[float, list[int]]:
        words = self.ask("report", "stall")
        return float(words[0]), [int(w) for w in words[2:5]]

    def thread_cpu(self, tids: set[int]) -> float:
        return sum(t.user_time + t.system_time for t in self.psutil.threads() if t.id in tids)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def measure(
    keys: Any, tasks: int, depth: int, waits: int, repeat: int, interval: float
) -> dict[str, Any]:
    host = Host(keys.directory, tasks, depth, waits)
    try:
        node = connect(
            host.address, token_file=keys.operator_token, fingerprint=keys.fingerprint, timeout=600
        )
        agent_tids = {t.native_id for t in node.threads() if t.is_agent}
        limit = tasks + 1000
        host.reset()
        cpu0 = host.thread_cpu(agent_tids)
        rss0 = host.psutil.memory_info().rss
        started, mine = time.perf_counter(), time.process_time()
        snap = node.snapshot(limit=limit)
        cold_rtt = time.perf_counter() - started
        client_cpu = time.process_time() - mine
        cold_cpu = host.thread_cpu(agent_tids) - cpu0
        cold_stall, cold_gc = host.report()
        grown = host.psutil.memory_info().rss - rss0
        stats = getattr(node, "last_listing", None)
        assert len(snap.tasks) >= tasks, (len(snap.tasks), tasks)
        walks = [host.ask("chain", "chain") for _ in range(2)]  # after: the call came first
        plain_us = min(float(s) / max(1, int(n)) for s, n in walks) * 1e6
        result: dict[str, Any] = {
            "tasks": tasks,
            "plain_us": plain_us,
            "cold_ms": cold_rtt * 1000,
            "client_ms": client_cpu * 1000,
            "cold_collect_ms": snap.collect_seconds * 1000,
            "cold_cpu_ms": cold_cpu * 1000,
            "cold_us_task": cold_cpu / tasks * 1e6,
            "cold_kib": (stats.size if stats else node.last_size) / 1024,
            "cold_trips": stats.chunks if stats else 1,
            "cold_stall_ms": cold_stall * 1000,
            "cold_gc": cold_gc,
            "cold_rss_mb": grown / 1e6,
        }
        rtts, stalls, rows, gcs = [], [], [], [0, 0, 0]
        cpu0 = host.thread_cpu(agent_tids)
        for _ in range(repeat):
            time.sleep(interval)  # more than the agent's sharing window: a pass each
            host.reset()
            started = time.perf_counter()
            snap = node.snapshot(limit=limit)
            rtts.append(time.perf_counter() - started)
            stall, counts = host.report()
            stalls.append(stall)
            gcs = [a + b for a, b in zip(gcs, counts, strict=True)]
            stats = getattr(node, "last_listing", None)
            rows.append(stats.rows if stats else len(snap.tasks))
        steady_cpu = host.thread_cpu(agent_tids) - cpu0  # includes the resets' idle time
        result.update(
            steady_ms=statistics.median(rtts) * 1000,
            steady_cpu_ms=steady_cpu / repeat * 1000,
            steady_rows=statistics.median(rows),
            steady_stall_ms=max(stalls) * 1000,
            steady_gc=gcs,
        )
        node.close()
        return result
    finally:
        host.stop()


def idle_agent_cpu(keys: Any, seconds: float) -> tuple[float, float]:
    """CPU seconds used by the agent's threads with no observer connected, over ``seconds``."""
    host = Host(keys.directory, 1000, 1, monitor=False)
    try:
        node = connect(host.address, token_file=keys.operator_token, fingerprint=keys.fingerprint)
        with node:
            agent_tids = {t.native_id for t in node.threads() if t.is_agent}
        time.sleep(1.0)  # let the connection thread end

        def total_cpu() -> float:
            times = host.psutil.cpu_times()
            return times.user + times.system

        a0, t0 = host.thread_cpu(agent_tids), total_cpu()
        time.sleep(seconds)
        return host.thread_cpu(agent_tids) - a0, total_cpu() - t0
    finally:
        host.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--waits", type=int, default=1, help="places to wait in the innermost")
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--idle-seconds", type=float, default=0.0)
    parser.add_argument("--root", default=str(ROOT), help="checkout whose agent/client to run")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, load {load:.1f}; code from "
        f"{CODE}; tasks {args.depth} coroutines deep, the innermost with {args.waits} place(s) "
        "to wait; 50 idle threads in host"
    )
    print(
        f"{'tasks':>8} | {'plain':>5} | {'cold ms':>8} {'client':>6} {'cpu ms':>7} {'us/t':>5} "
        f"{'x':>4} "
        f"{'KiB':>7} {'trips':>5} {'stall':>6} {'gc 0/1/2':>9} {'+MB':>5} | {'steady ms':>9} "
        f"{'cpu ms':>7} {'rows':>6} {'stall':>6} {'gc 0/1/2':>9}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        keys = generate(Path(tmp) / "keys")
        for n in args.tasks:
            try:
                r = measure(keys, n, args.depth, args.waits, args.repeat, args.interval)
            except Exception as exc:  # a failed size loses its own row only
                print(f"{n:>8} | failed: {type(exc).__name__}: {exc}"[:300])
                continue
            print(
                f"{n:>8} | {r['plain_us']:>5.2f} | {r['cold_ms']:>8.0f} {r['client_ms']:>6.0f} "
                f"{r['cold_cpu_ms']:>7.0f} "
                f"{r['cold_us_task']:>5.2f} {r['cold_us_task'] / r['plain_us']:>4.1f} "
                f"{r['cold_kib']:>7.0f} {r['cold_trips']:>5} {r['cold_stall_ms']:>6.1f} "
                f"{'/'.join(map(str, r['cold_gc'])):>9} {r['cold_rss_mb']:>5.0f} | "
                f"{r['steady_ms']:>9.1f} "
                f"{r['steady_cpu_ms']:>7.1f} {r['steady_rows']:>6.0f} "
                f"{r['steady_stall_ms']:>6.1f} {'/'.join(map(str, r['steady_gc'])):>9}",
                flush=True,
            )
        if args.idle_seconds > 0:
            agent_s, total_s = idle_agent_cpu(keys, args.idle_seconds)
            print(
                f"idle, no observer, {args.idle_seconds:.0f}s: agent threads used "
                f"{agent_s * 1000:.1f} ms CPU ({agent_s / args.idle_seconds * 100:.3f}% of a "
                f"core); whole host {total_s * 1000:.1f} ms"
            )
    print(
        "columns: plain = in-loop await-chain walk, us/task; cold = first snapshot (round "
        "trip ms, client CPU ms (decode), agent CPU ms, agent CPU us/task, x = that / plain, "
        "KiB and round trips on "
        "the wire, worst loop stall ms, GC collections per generation during the call, host "
        "RSS growth MB); "
        "steady = median refresh round trip, agent CPU per refresh, rows received, worst "
        "stall over the refreshes, collections over all of them"
    )


if __name__ == "__main__":
    main()
