"""A host for CPU per task: a task burning CPU, one blocking its loop, idle ones.

Usage: python -m tests.hosts.taskcpu KEYDIR
``hot-task`` burns ~10 ms of CPU per step in ``hot_function`` (and sleeps 10 ms between
steps) and adds the CPU it measured around each burn (its thread's clock) to the exposed
``stats`` (``hot_cpu``, seconds); ``blocker-task`` blocks its loop in ``time.sleep`` (wall
time, next to no CPU); ten ``idle-N`` tasks only wait. A thread prints
``event: tools [...] watched N`` whenever the sys.monitoring tools registered in the
process, or the events set on hot's code, change. Prints ``agent:``, ``echo:``, ``ready``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import time

import agent
from tests.hosts.common import echo, start_agent

stats = {"hot_cpu": 0.0, "hot_steps": 0}


def hot_function(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


async def hot() -> None:
    while True:
        started = time.thread_time()
        hot_function(0.01)
        stats["hot_cpu"] += time.thread_time() - started
        stats["hot_steps"] += 1
        await asyncio.sleep(0.01)


async def blocker() -> None:
    while True:
        time.sleep(0.02)  # the loop is blocked, the CPU is not used
        await asyncio.sleep(0.1)


async def idle() -> None:
    await asyncio.sleep(3600)


def watch_tools() -> None:
    """Print the process's sys.monitoring state whenever it changes (3.12+)."""
    monitoring = getattr(sys, "monitoring", None)
    last = None
    while True:
        if monitoring is not None:
            tools = [monitoring.get_tool(i) for i in range(6)]
            watched = sum(monitoring.get_local_events(i, hot.__code__) != 0 for i in range(6))
            now = (tools, watched)
            if now != last:
                print(f"event: tools {tools} watched {watched}", flush=True)
                last = now
        time.sleep(0.05)


async def main(keys: str) -> None:
    server = start_agent(keys, "taskcpu-host")
    agent.expose("stats", stats)
    threading.Thread(target=watch_tools, name="tool-watch", daemon=True).start()
    tasks = [asyncio.create_task(hot(), name="hot-task")]
    tasks.append(asyncio.create_task(blocker(), name="blocker-task"))
    tasks += [asyncio.create_task(idle(), name=f"idle-{i}") for i in range(10)]
    echo_server = await asyncio.start_server(echo, "127.0.0.1", 0)
    host, port = echo_server.sockets[0].getsockname()[:2]
    print(f"agent: {server.address}", flush=True)
    print(f"echo: {host}:{port}", flush=True)
    print("ready", flush=True)
    async with echo_server:
        await echo_server.serve_forever()
    del tasks


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(sys.argv[1]))
