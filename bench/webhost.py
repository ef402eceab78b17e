"""aiohttp server for bench/overhead.py: our agent embedded, N idle tasks, one core.

``GET /`` answers a short text. The process pins itself to ``--cpu`` before it starts
any thread, so the agent's threads share that one core with the server's loop.

stdin: ``cpu`` answers ``cpu: {json}`` with CPU seconds used so far by the whole
process (``process``, which keeps the time of threads that have ended), by the live
threads whose names start with ``observer-agent`` (``agent_live``) and by every other
live thread (``host``). ``process - host`` is then the agent's share, including the
connection threads that came and went (``observer ps`` opens one per call).
``runs`` answers ``runs: {json}``: agent/collect/pacing.py's run_lengths since the last
``runs`` (the CPU the agent's threads ran between hand-overs: how many, the longest, how
many over 0.5/1/2/5 ms), and starts counting afresh.
The first line is ``ready: {json}``: pid, url, agent address, tasks.
``floor RATE [NICE]`` starts (RATE 0: stops) the floor of any in-process sampler: a thread that
wakes RATE times a second, takes the GIL and reads ``sys._current_frames()``, nothing
more (answers ``floor: RATE``); it is named like the agent's threads so that its CPU is
counted as the agent's share, as a profile's sampler thread is; NICE (Linux) lowers that
thread's scheduling priority by that much.
``BENCH_WEBHOST_THREADS=N`` in the environment adds N idle threads, each waiting on an
event 20 calls deep (what a profiler then samples besides the loop).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil
from aiohttp import web

import agent
from agent.collect.pacing import run_lengths
from bench.peerhost import spawn

AGENT_PREFIX = "observer-agent"


def cpu_split() -> dict[str, float]:
    """CPU seconds of the process, of its live agent threads and of its other threads."""
    proc = psutil.Process()
    names = {t.native_id: t.name for t in threading.enumerate()}
    agent_live = host = 0.0
    for t in proc.threads():
        used = t.user_time + t.system_time
        if names.get(t.id, "").startswith(AGENT_PREFIX):
            agent_live += used
        else:
            host += used
    total = proc.cpu_times()
    return {"process": total.user + total.system, "agent_live": agent_live, "host": host}


class FloorSampler:
    """The least an in-process sampler does: wake at a rate, take the GIL, read every
    thread's frame; what the agent's profiler costs beyond it is its own."""

    def __init__(self) -> None:
        self._stop: threading.Lock | None = None

    def set_rate(self, rate: float, nice: int = 0) -> None:
        if self._stop is not None:
            self._stop.release()
            self._stop = None
        if rate > 0:
            stop = threading.Lock()
            stop.acquire()
            self._stop = stop
            thread = threading.Thread(
                target=self._run, args=(stop, rate, nice), name="observer-agent-floor", daemon=True
            )
            thread.start()

    @staticmethod
    def _run(stop: threading.Lock, rate: float, nice: int) -> None:
        if nice:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
        period = 1.0 / rate
        due = time.monotonic()
        while True:
            frames = sys._current_frames()
            del frames
            due += period
            wait = due - time.monotonic()
            if wait < 0:
                due, wait = time.monotonic(), 0.0
            if stop.acquire(True, wait):
                return


def commands() -> None:
    floor = FloorSampler()
    for line in sys.stdin:
        words = line.split()
        if words == ["cpu"]:
            print(f"cpu: {json.dumps(cpu_split())}", flush=True)
        elif words == ["runs"]:
            print(f"runs: {json.dumps(run_lengths(reset=True))}", flush=True)
        elif len(words) in (2, 3) and words[0] == "floor":
            floor.set_rate(float(words[1]), int(words[2]) if len(words) == 3 else 0)
            print(f"floor: {words[1]}", flush=True)
    os._exit(0)  # the driver closed our stdin: it is gone


def idle_threads(count: int, depth: int = 20) -> None:
    """``count`` threads that wait forever, ``depth`` calls deep."""
    never = threading.Event()

    def deep(n: int) -> None:
        if n:
            deep(n - 1)
        else:
            never.wait()

    for i in range(count):
        threading.Thread(target=deep, args=(depth,), name=f"idle-{i}", daemon=True).start()


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="hello")


async def main(args: argparse.Namespace) -> None:
    keys = Path(args.keys)
    server = agent.start(
        "127.0.0.1:0",
        tls_cert=str(keys / "agent.crt"),
        tls_key=str(keys / "agent.key"),
        tokens={"operator": (keys / "operator.token").read_text().strip()},
        name="bench-web",
    )
    idle_threads(int(os.environ.get("BENCH_WEBHOST_THREADS", "0") or 0))
    started, census = spawn("flat", args.tasks, 1)
    await census.done.wait()
    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    port = int(runner.addresses[0][1])
    threading.Thread(target=commands, name="commands", daemon=True).start()
    info = {
        "pid": os.getpid(),
        "url": f"http://127.0.0.1:{port}/",
        "agent": server.address,
        "tasks": len(asyncio.all_tasks()),
        "cpus": sorted(os.sched_getaffinity(0)),
    }
    print(f"ready: {json.dumps(info)}", flush=True)
    await asyncio.Event().wait()
    del started


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("keys", help="a directory made by observer keygen")
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--cpu", type=int, help="the one CPU to run on (default: all allowed)")
    cli = parser.parse_args()
    if cli.cpu is not None:
        os.sched_setaffinity(0, {cli.cpu})  # before any thread: they all inherit it
    asyncio.run(main(cli))
