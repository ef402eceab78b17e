"""A host whose tasks are older than the agent, for the truthful-values tests.

Before the agent starts it makes ``early`` (named) and an unnamed task, and prints
``event: early mono=M`` (its monotonic clock when they were made). Then it reads stdin:
``clock`` prints ``event: clock mono=M``; ``start`` starts the agent (``agent: HOST:PORT``
and ``echo: HOST:PORT``); ``late`` makes ``late`` (named), an unnamed task and three
finished tasks it keeps (one returned, one cancelled, one raised ValueError), printing
``event: late mono=M``; ``stop`` stops the agent and says the loop's task factory
(``event: stopped factory=none|app|eager|...``). The host's own task factory
(``--app-factory``) counts its calls: ``event: app-factory calls=N`` on ``calls``.
With ``--agent-first`` the agent starts before the loop exists (as ``python -m agent run``
does): the host waits up to HOOK_WAIT seconds for the agent to hook its loop, says
``event: hooked in=S`` (or ``event: hooked never``), makes ``after-hook`` and prints the
agent's address itself.
Usage: python -m tests.hosts.ages KEYDIR [--app-factory] [--eager] [--agent-first]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import threading
import time
from typing import Any

import agent
from tests.hosts.common import echo, start_agent

HOOK_WAIT = 5.0  # seconds: the agent looks for new loops every second, sampled or not


def say(line: str) -> None:
    print(line, flush=True)


async def inner_wait() -> None:
    await asyncio.sleep(3600)  # INNER-LINE


async def outer_job() -> None:
    """Runs outer_job, suspended in inner_wait: what ps and tree must tell apart."""
    await inner_wait()


async def parked() -> None:
    await asyncio.sleep(3600)


async def finishes() -> int:
    return 1


async def fails() -> None:
    raise ValueError("kept failed task")


class Host:
    """What the commands act on, on the host's loop."""

    def __init__(self, keys: str) -> None:
        self.keys = keys
        self.server: Any = None
        self.keep: list[asyncio.Task[Any]] = []
        self.calls = 0

    def app_factory(self, loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return asyncio.Task(coro, loop=loop, **kwargs)

    async def late(self) -> None:
        self.keep.append(asyncio.create_task(parked(), name="late"))
        self.keep.append(asyncio.create_task(outer_job()))
        done = asyncio.create_task(finishes(), name="finished-ok")
        cancelled = asyncio.create_task(parked(), name="finished-cancelled")
        failed = asyncio.create_task(fails(), name="finished-failed")
        await asyncio.sleep(0)
        cancelled.cancel()
        await asyncio.wait([done, cancelled, failed])
        self.keep += [done, cancelled, failed]
        say(f"event: late mono={time.monotonic()!r}")


def commands(loop: asyncio.AbstractEventLoop, host: Host, echo_address: str) -> None:
    for line in sys.stdin:
        word = line.strip()
        if word == "clock":
            say(f"event: clock mono={time.monotonic()!r}")
        elif word == "start":
            host.server = start_agent(host.keys, "ages-host")
            say(f"agent: {host.server.address}")
            say(f"echo: {echo_address}")
        elif word == "late":
            asyncio.run_coroutine_threadsafe(host.late(), loop).result()
        elif word == "calls":
            say(f"event: app-factory calls={host.calls}")
        elif word == "stop":
            agent.stop()
            factory = loop.get_task_factory()
            names = {None: "none", host.app_factory: "app"}
            eager = getattr(asyncio, "eager_task_factory", None)
            name = "eager" if eager and factory is eager else names.get(factory, repr(factory))
            say(f"event: stopped factory={name}")


FIRST: Any = None  # the agent started before the loop (--agent-first)


async def main(args: argparse.Namespace) -> None:
    host = Host(args.keys)
    host.server = FIRST
    loop = asyncio.get_running_loop()
    if args.eager:
        loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
    elif args.app_factory:
        loop.set_task_factory(host.app_factory)
    host.keep.append(asyncio.create_task(parked(), name="early"))
    host.keep.append(asyncio.create_task(parked()))
    await asyncio.sleep(0)
    say(f"event: early mono={time.monotonic()!r}")
    if host.server is not None:  # --agent-first: wait (bounded) for the agent's hook
        began = time.monotonic()
        while loop.get_task_factory() is None and time.monotonic() - began < HOOK_WAIT:
            await asyncio.sleep(0.02)
        waited = time.monotonic() - began
        say(f"event: hooked {'never' if loop.get_task_factory() is None else f'in={waited:.2f}'}")
        host.keep.append(asyncio.create_task(parked(), name="after-hook"))
    echo_server = await asyncio.start_server(echo, "127.0.0.1", 0)
    address = "{}:{}".format(*echo_server.sockets[0].getsockname()[:2])
    threading.Thread(target=commands, args=(loop, host, address), daemon=True).start()
    say("event: ready")
    if host.server is not None:
        say(f"agent: {host.server.address}")
        say(f"echo: {address}")
    async with echo_server:
        await echo_server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("keys")
    parser.add_argument("--app-factory", action="store_true")
    parser.add_argument("--eager", action="store_true")
    parser.add_argument("--agent-first", action="store_true")
    arguments = parser.parse_args()
    if arguments.agent_first:
        FIRST = start_agent(arguments.keys, "ages-host")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(arguments))
