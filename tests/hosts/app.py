"""A small, deterministic host application with the agent embedded, for tests.

Prints ``agent: HOST:PORT`` and ``echo: HOST:PORT`` when ready, then reports what
happens to it (``event: ...`` lines) so tests can check effects inside the host.
Usage: python -m tests.hosts.app KEYDIR [--tasks N] [--bind HOST:PORT] [--name NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import threading
import time

import agent
from tests.hosts.child import spawn_argv
from tests.hosts.common import echo, start_agent


def say(line: str) -> None:
    """Report an event to the test on stdout."""
    print(line, flush=True)


async def sleeper() -> None:
    """A named task parked on a sleep at a known line."""
    password = "hunter2-very-secret"  # noqa: F841  (redaction target)
    answer = 42  # noqa: F841
    records = [{"id": 1, "api_key": "k-123456789"}, {"id": 2}]  # noqa: F841
    await asyncio.sleep(3600)  # SLEEPER-LINE


async def child_job() -> None:
    await asyncio.sleep(3600)


async def parent() -> None:
    """A task awaiting another task, so the tree can nest them."""
    job = asyncio.create_task(child_job(), name="child-of-parent")
    await job


async def worker(name: str) -> None:
    while True:
        await asyncio.sleep(0.05)


async def supervisor() -> None:
    """Restart the 'worker' task whenever it ends (one_for_one)."""
    generation = 0
    while True:
        generation += 1
        task = asyncio.create_task(worker("worker"), name="worker")
        say(f"event: worker started generation={generation}")
        await asyncio.wait([task])
        say(f"event: worker ended cancelled={task.cancelled()}")


def busy_thread(stop: threading.Event) -> None:
    """A named thread burning a little CPU so its CPU time is non-zero."""
    while not stop.is_set():
        total = 0
        for i in range(20000):
            total += i * i
        stop.wait(0.01)


def victim_thread() -> None:
    """A thread running Python bytecode, so an async exception lands quickly."""
    try:
        while True:
            time.sleep(0.01)
    except BaseException as exc:
        say(f"event: victim-thread ended by {type(exc).__name__}")
        raise


def side_loop() -> None:
    """A second event loop in another thread: loops must be found in every thread."""

    async def side_task() -> None:
        await asyncio.sleep(3600)

    async def main() -> None:
        await asyncio.gather(asyncio.create_task(side_task(), name="side-task"))

    asyncio.run(main())


async def main(args: argparse.Namespace) -> None:
    keys = args.keys
    server = start_agent(keys, args.name, args.bind)
    agent.expose("settings", {"db_password": "s3cr3t-value", "pool": 4})
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(3):
        queue.put_nowait(i)
    agent.expose("jobs", queue)

    stop = threading.Event()
    threading.Thread(target=busy_thread, args=(stop,), name="busy-thread", daemon=True).start()
    threading.Thread(target=victim_thread, name="victim-thread", daemon=True).start()
    threading.Thread(target=side_loop, name="side-loop", daemon=True).start()
    argv, env = spawn_argv(sys.executable)
    child = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL)
    tasks = [
        asyncio.create_task(sleeper(), name="sleeper-1"),
        asyncio.create_task(parent(), name="parent"),
        asyncio.create_task(supervisor(), name="supervisor"),
    ]
    for i in range(args.tasks):
        tasks.append(asyncio.create_task(child_job(), name=f"bulk-{i}"))
    echo_server = await asyncio.start_server(echo, "127.0.0.1", 0)
    host, port = echo_server.sockets[0].getsockname()[:2]

    def watch_child() -> None:
        code = child.wait()
        say(f"event: child exited code={code}")

    # every thread of the host runs before it says it is ready: a test's first look at
    # the threads must see all the host will have
    threading.Thread(target=watch_child, name="child-watcher", daemon=True).start()
    threading.Thread(
        target=commands, args=(server.address, keys, args.name), name="commands", daemon=True
    ).start()
    say(f"child: {child.pid}")
    say(f"agent: {server.address}")
    if getattr(server, "metrics", None) is not None:  # OBSERVER_AGENT_METRICS was set
        say(f"metrics: {server.metrics.address}")
    say(f"echo: {host}:{port}")
    async with echo_server:
        await echo_server.serve_forever()


def commands(address: str, keys: str, name: str) -> None:
    """stdin commands from the test: stop the agent, start it again on the same address."""
    for line in sys.stdin:
        word = line.strip()
        if word == "agent-stop":
            agent.stop()
            say("event: agent stopped")
        elif word == "agent-start":
            server = start_agent(keys, name, address)
            say(f"event: agent started {server.address}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("keys")
    parser.add_argument("--tasks", type=int, default=0)
    parser.add_argument("--bind", default="127.0.0.1:0", help="where the agent listens")
    parser.add_argument("--name", default="test-host", help="the agent's node name")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parser.parse_args()))
