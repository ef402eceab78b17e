"""What the metrics endpoint costs: scrape time and bytes, and agent CPU per scrape.

    python bench/metrics.py [--tasks 10 10000] [--loops 1] [--scrapes 40] [--repeat 3]
    python bench/metrics.py --workers 1 8 32 [--scrapes 30] [--idle 10] [--repeat 3]
    python bench/metrics.py --workers 1 8 32 --proc-only   # without the workers' own series

For each host size, starts this file as a host (``--host``): the agent with the metrics
endpoint on (or off, for the baseline), ``--loops`` event loops with ``--tasks`` idle
tasks between them, nothing else running. Then, ``--repeat`` times, interleaved:

1. idle CPU: the host's CPU time over ``--idle`` seconds with nobody scraping, metrics on
   and off (the cost of having the endpoint on: the loop-lag probe every second);
2. scrapes: ``--scrapes`` GETs, each after the endpoint's 0.5 s cache has expired, so
   each one collects and renders: the client's wall time per scrape, the agent's own
   collect+render time (observer_agent_metrics_scrape_duration_seconds), the body size,
   and the host's CPU per scrape (CPU over the run, less the idle rate, over the count).

With ``--workers``, each host is instead a pre-fork master (``workers=True``, 10 tasks) that
forks that many workers (each an asyncio loop with 10 idle tasks, and a worker agent)
before its loop starts; its scrape carries every worker's series (agent.metrics.workers).
Two masters per worker count, run interleaved: one whose scrape reads only /proc (its
workers' agents stay dormant, OBSERVER_AGENT_METRICS_WORKER_AGENTS=0), one that also asks
each worker's agent for its own Python series (which wakes them at the first scrape).
Reported besides: the workers' CPU per scrape and at rest, and a worker's RSS and USS,
dormant (/proc only) against awake.

Prints medians and spread and the CPU share at a 15 s scrape interval (per-scrape CPU /
15 s + the endpoint's idle cost), with the load average at the start and the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

INTERVAL = 15.0  # the scrape interval the CPU share is given for


def fork_idle_workers(count: int) -> None:
    """``count`` children, each an asyncio loop with 10 idle tasks (a pre-fork server's
    idle async workers)."""

    async def worker() -> None:
        await asyncio.gather(*(asyncio.sleep(3600) for _ in range(10)))

    for _ in range(count):
        if os.fork() == 0:
            try:
                asyncio.run(worker())
            finally:
                os._exit(0)


def host_main(tasks: int, loops: int, metrics: bool, workers: int = 0) -> None:
    """The measured process: agent (+ metrics), idle tasks spread over ``loops`` loops,
    ``workers`` idle forked workers with agents of their own."""
    import threading

    import agent

    address = "127.0.0.1:0" if metrics else None
    server = agent.start("127.0.0.1:0", metrics=address, workers=workers > 0)
    fork_idle_workers(workers)

    async def idle() -> None:
        await asyncio.sleep(3600)

    async def loop_main(count: int, ready: threading.Event | None) -> None:
        held = [asyncio.create_task(idle(), name=f"idle-{i}") for i in range(count)]
        if ready is not None:
            ready.set()
        await asyncio.gather(*held)

    per_loop = tasks // loops
    for _ in range(loops - 1):
        ready = threading.Event()
        threading.Thread(
            target=lambda r=ready: asyncio.run(loop_main(per_loop, r)), daemon=True
        ).start()
        ready.wait()

    async def main() -> None:
        started = asyncio.create_task(loop_main(tasks - per_loop * (loops - 1), None))
        await asyncio.sleep(0)
        print(f"metrics: {server.metrics.address if server.metrics else '-'}", flush=True)
        await started

    asyncio.run(main())


class Host:
    def __init__(
        self, tasks: int, loops: int, metrics: bool, workers: int = 0, agents: bool = True
    ) -> None:
        argv = [sys.executable, __file__, "--host", "--tasks", str(tasks), "--loops", str(loops)]
        argv += ["--workers", str(workers)]
        if not metrics:
            argv.append("--no-metrics")
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        env["OBSERVER_AGENT_METRICS_WORKER_AGENTS"] = "1" if agents else "0"
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        assert line.startswith("metrics: "), line
        self.address = line.split(" ", 1)[1]
        self.ps = psutil.Process(self.proc.pid)

    def cpu(self) -> float:
        t = self.ps.cpu_times()
        return t.user + t.system

    def workers_cpu(self) -> float:
        total = 0.0
        for child in self.ps.children():
            try:
                t = child.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    def workers_memory(self) -> tuple[float, float]:
        """The median worker's RSS and USS (bytes)."""
        rss, uss = [], []
        for child in self.ps.children():
            with contextlib.suppress(psutil.Error):
                info = child.memory_full_info()
                rss.append(info.rss)
                uss.append(info.uss)
        return statistics.median(rss), statistics.median(uss)

    def scrape(self) -> tuple[float, bytes]:
        host, port = self.address.rsplit(":", 1)
        started = time.perf_counter()
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", "/metrics")
        body = conn.getresponse().read()
        conn.close()
        return time.perf_counter() - started, body

    def stop(self) -> None:
        children = self.ps.children()
        self.proc.terminate()
        self.proc.wait(10)
        for child in children:  # the idle workers wait for a signal forever
            with contextlib.suppress(psutil.Error):
                child.kill()
        psutil.wait_procs(children, timeout=10)


def idle_rate(host: Host, seconds: float) -> float:
    """CPU seconds per second the host burns with nobody asking it anything."""
    return idle_rates(host, seconds)[0]


def idle_rates(host: Host, seconds: float) -> tuple[float, float]:
    """CPU seconds per second the host and all its workers burn with nobody asking."""
    cpu0, workers0, t0 = host.cpu(), host.workers_cpu(), time.monotonic()
    time.sleep(seconds)  # a measurement window, not a synchronisation
    took = time.monotonic() - t0
    return (host.cpu() - cpu0) / took, (host.workers_cpu() - workers0) / took


def scrape_run(host: Host, count: int, idle: float, workers_idle: float = 0.0) -> dict[str, float]:
    host.scrape()  # warm up
    walls, agent_times, sizes = [], [], []
    cpu0, t0, workers0 = host.cpu(), time.monotonic(), host.workers_cpu()
    for _ in range(count):
        time.sleep(0.55)  # past the endpoint's 0.5 s cache: every scrape collects anew
        wall, body = host.scrape()
        walls.append(wall)
        sizes.append(len(body))
        for line in body.decode().splitlines():
            if line.startswith("observer_agent_metrics_scrape_duration_seconds "):
                agent_times.append(float(line.split()[1]))
    elapsed = time.monotonic() - t0
    per_scrape = (host.cpu() - cpu0 - idle * elapsed) / count
    workers = (host.workers_cpu() - workers0 - workers_idle * elapsed) / count
    return {
        "workers_cpu_ms": workers * 1e3,
        "wall_ms": statistics.median(walls) * 1e3,
        "agent_ms": statistics.median(agent_times) * 1e3,
        "bytes": statistics.median(sizes),
        "cpu_ms": per_scrape * 1e3,
    }


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):8.2f} ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-metrics", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tasks", type=int, nargs="+", default=[10, 10000])
    parser.add_argument("--loops", type=int, default=1)
    parser.add_argument("--scrapes", type=int, default=40)
    parser.add_argument("--idle", type=float, default=15.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[])
    args = parser.parse_args()
    if args.host:
        host_main(args.tasks[0], args.loops, not args.no_metrics, (args.workers or [0])[0])
        return
    if args.workers:
        workers_main(args)
        return
    print(f"load average at start: {os.getloadavg()}")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, loops={args.loops}")
    for tasks in args.tasks:
        on, off = Host(tasks, args.loops, True), Host(tasks, args.loops, False)
        runs: dict[str, list[float]] = {}
        try:
            for _ in range(args.repeat):  # interleaved: on/off idle, then scrapes
                runs.setdefault("idle_off_ms_per_s", []).append(idle_rate(off, args.idle) * 1e3)
                rate = idle_rate(on, args.idle)
                runs.setdefault("idle_on_ms_per_s", []).append(rate * 1e3)
                for key, v in scrape_run(on, args.scrapes, rate).items():
                    runs.setdefault(key, []).append(v)
        finally:
            on.stop()
            off.stop()
        print(f"\n{tasks} tasks on {args.loops} loop(s), {args.repeat} runs, median (min-max):")
        labels = {
            "wall_ms": "scrape wall time, client (ms)",
            "agent_ms": "collect+render in the agent (ms)",
            "bytes": "exposition size (bytes)",
            "cpu_ms": "host CPU per scrape (ms)",
            "idle_on_ms_per_s": "host idle CPU, metrics on (ms/s)",
            "idle_off_ms_per_s": "host idle CPU, metrics off (ms/s)",
        }
        for key, label in labels.items():
            print(f"  {label:38s} {spread(runs[key])}")
        endpoint = statistics.median(runs["idle_on_ms_per_s"]) - statistics.median(
            runs["idle_off_ms_per_s"]
        )
        share = statistics.median(runs["cpu_ms"]) / INTERVAL + endpoint
        print(
            f"  => at a {INTERVAL:g} s interval: {share / 10:.3f}% of one core "
            f"({statistics.median(runs['cpu_ms']) / INTERVAL:.3f} ms/s for scrapes, "
            f"{endpoint:.3f} ms/s for the endpoint's loop-lag probe)"
        )
    print(f"\nload average at end: {os.getloadavg()}")


def own_series_of(text: str) -> int:
    """Workers whose own Python series (their loop's task count) are in a scrape."""
    return sum(ln.startswith("python_asyncio_tasks{worker=") for ln in text.splitlines())


def workers_main(args: argparse.Namespace) -> None:
    """Scrapes of pre-fork masters with 1, 8, 32 ... workers, /proc only against with the
    workers' own series, interleaved."""
    print(f"load average at start: {os.getloadavg()}")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, 10 tasks in the master")
    modes = ("proc", "own")
    hosts = {(n, m): Host(10, 1, True, n, agents=m == "own") for n in args.workers for m in modes}
    runs: dict[tuple[int, str], dict[str, list[float]]] = {key: {} for key in hosts}
    try:
        for (n, mode), host in hosts.items():  # every worker up and scraped before measuring
            deadline = time.monotonic() + 60
            while True:
                text = host.scrape()[1].decode()
                ready = f"observer_workers {n}\n" in text
                if ready and (mode == "proc" or own_series_of(text) == n):
                    break
                if time.monotonic() > deadline:
                    print(f"  ({n} workers, {mode}: not all workers' series in the scrape)")
                    break
                time.sleep(0.2)  # polling a condition, not a synchronisation by time
        for _ in range(args.repeat):
            for key, host in hosts.items():
                rate, workers_rate = idle_rates(host, args.idle)
                runs[key].setdefault("idle_on_ms_per_s", []).append(rate * 1e3)
                runs[key].setdefault("workers_idle_ms_per_s", []).append(workers_rate * 1e3)
                for k, v in scrape_run(host, args.scrapes, rate, workers_rate).items():
                    runs[key].setdefault(k, []).append(v)
                rss, uss = host.workers_memory()
                runs[key].setdefault("worker_rss_mb", []).append(rss / 2**20)
                runs[key].setdefault("worker_uss_mb", []).append(uss / 2**20)
    finally:
        for host in hosts.values():
            host.stop()
    labels = {
        "wall_ms": "scrape wall time, client (ms)",
        "agent_ms": "collect+render in the agent (ms)",
        "bytes": "exposition size (bytes)",
        "cpu_ms": "master CPU per scrape (ms)",
        "workers_cpu_ms": "all workers' CPU per scrape (ms)",
        "idle_on_ms_per_s": "master idle CPU, metrics on (ms/s)",
        "workers_idle_ms_per_s": "all workers' CPU at rest (ms/s)",
        "worker_rss_mb": "one worker's RSS (MiB, median)",
        "worker_uss_mb": "one worker's USS (MiB, median)",
    }
    for n in args.workers:
        print(f"\n{n} workers, {args.repeat} runs, median (min-max):")
        print(f"  {'':38s} {'/proc only':>24s} {'with own series':>24s}")
        for key, label in labels.items():
            cells = [f"{spread(runs[(n, m)][key]):>24s}" for m in modes]
            print(f"  {label:38s} {' '.join(cells)}")
        for mode in modes:
            per = statistics.median(runs[(n, mode)]["cpu_ms"]) / INTERVAL
            print(f"  => {mode}: at a {INTERVAL:g} s interval, {per / 10:.4f}% of one core")
    print(f"\nload average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
