"""A host with a known hot spot, for the sampling profiler's tests.

Usage: python -m tests.hosts.profiled KEYDIR
Its loop runs a task named ``hot-task`` that burns CPU in ``hot_function`` in short steps
(yielding to the loop between them), and a task ``sleepy-task`` that only waits; a thread
``waiter`` blocks on a queue (idle). Prints ``agent: HOST:PORT``, ``echo: HOST:PORT`` and
``ready``.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sys
import threading

from tests.hosts.common import echo, start_agent


def hot_function(rounds: int) -> int:
    """The hot spot: pure bytecode, so every sample of the loop thread lands here."""
    total = 0
    for i in range(rounds):
        total += i * i % 7
    return total


async def hot() -> None:
    while True:
        # ~20 ms of CPU a step: longer than the GIL switch interval (5 ms), so the sampler
        # gets the GIL while the step runs, not only at the loop's select between steps
        hot_function(250_000)
        await asyncio.sleep(0)


async def sleepy() -> None:
    while True:
        await asyncio.sleep(0.5)


async def main(keys: str) -> None:
    server = start_agent(keys, "profiled-host")
    jobs: queue.Queue[str] = queue.Queue()
    threading.Thread(target=jobs.get, name="waiter", daemon=True).start()
    hot_task = asyncio.create_task(hot(), name="hot-task")
    sleepy_task = asyncio.create_task(sleepy(), name="sleepy-task")
    echo_server = await asyncio.start_server(echo, "127.0.0.1", 0)
    host, port = echo_server.sockets[0].getsockname()[:2]
    print(f"agent: {server.address}", flush=True)
    print(f"echo: {host}:{port}", flush=True)
    print("ready", flush=True)
    async with echo_server:
        await echo_server.serve_forever()
    del hot_task, sleepy_task


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(sys.argv[1]))
