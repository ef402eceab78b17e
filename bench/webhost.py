"""aiohttp server for bench/overhead.py: our agent embedded, N idle tasks, one core.

``GET /`` answers a short text. The process pins itself to ``--cpu`` before it starts
any thread, so the agent's threads share that one core with the server's loop.

stdin: ``cpu`` answers ``cpu: {json}`` with CPU seconds used so far by the whole
process (``process``, which keeps the time of threads that have ended), by the live
threads whose names start with ``observer-agent`` (``agent_live``) and by every other
live thread (``host``). ``process - host`` is then the agent's share, including the
connection threads that came and went (``observer ps`` opens one per call).
The first line is ``ready: {json}``: pid, url, agent address, tasks.
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil
from aiohttp import web

import agent
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


def commands() -> None:
    for line in sys.stdin:
        if line.strip() == "cpu":
            print(f"cpu: {json.dumps(cpu_split())}", flush=True)
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
