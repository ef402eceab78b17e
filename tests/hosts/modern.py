"""A host using the asyncio features that differ between Python versions, for the tests.

- eager tasks (3.12+): a loop in thread ``eager-loop`` whose task factory is
  ``asyncio.eager_task_factory``; its task ``eager-sleeper`` started eagerly and suspended.
- TaskGroup (3.11+): ``tg-owner`` awaits a group holding ``tg-child-1`` and ``tg-child-2``.
- asyncio.timeout (3.11+): ``timeout-owner`` awaits ``timeout-child`` inside a timeout.
- asyncio.Runner (3.11+): threads ``runner-1`` and ``runner-2`` each run their own loop
  with a task ``runner-N-task``.
- every version: ``shield-owner`` awaits ``shielded`` through shield, ``waitfor-owner``
  awaits ``waitfor-child`` through wait_for, ``gather-owner`` gathers ``gathered-1/2``.

Prints ``feature: NAME yes|no`` for each version-dependent feature, ``agent: ADDR`` and
``echo: ADDR`` when ready, and ``event: NAME ended cancelled=True`` when a leaf task is cancelled.
Usage: python -m tests.hosts.modern KEYDIR
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import threading

from tests.hosts.common import echo, start_agent

FEATURES = {
    "eager": hasattr(asyncio, "eager_task_factory"),
    "taskgroup": hasattr(asyncio, "TaskGroup"),
    "timeout": hasattr(asyncio, "timeout"),
    "runner": hasattr(asyncio, "Runner"),
}


def say(line: str) -> None:
    print(line, flush=True)


async def leaf(name: str) -> None:
    """Park forever; report how the task ended."""
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        say(f"event: {name} ended cancelled=True")
        raise


def spawn(coro: object, name: str) -> asyncio.Task[None]:
    return asyncio.get_running_loop().create_task(coro, name=name)  # type: ignore[arg-type]


async def taskgroup_owner() -> None:
    async with asyncio.TaskGroup() as group:  # type: ignore[attr-defined]
        group.create_task(leaf("tg-child-1"), name="tg-child-1")
        group.create_task(leaf("tg-child-2"), name="tg-child-2")


async def timeout_owner() -> None:
    async with asyncio.timeout(3600):  # type: ignore[attr-defined]
        await spawn(leaf("timeout-child"), "timeout-child")


async def shield_owner() -> None:
    await asyncio.shield(spawn(leaf("shielded"), "shielded"))


async def waitfor_owner() -> None:
    await asyncio.wait_for(spawn(leaf("waitfor-child"), "waitfor-child"), 3600)


async def gather_owner() -> None:
    await asyncio.gather(
        spawn(leaf("gathered-1"), "gathered-1"), spawn(leaf("gathered-2"), "gathered-2")
    )


def eager_loop(ready: threading.Event) -> None:
    """A loop whose tasks start eagerly (3.12+): the first step runs inside create_task."""
    loop = asyncio.new_event_loop()
    loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]

    async def main() -> None:
        task = loop.create_task(leaf("eager-sleeper"), name="eager-sleeper")
        ready.set()
        await asyncio.sleep(3600)
        del task

    loop.run_until_complete(main())


def runner_thread(index: int, ready: threading.Event) -> None:
    async def main() -> None:
        spawn(leaf(f"runner-{index}-task"), f"runner-{index}-task")
        ready.set()
        await asyncio.sleep(3600)

    with asyncio.Runner() as runner:  # type: ignore[attr-defined]
        runner.run(main())


def start_thread(target: object, name: str, *args: object) -> threading.Event:
    ready = threading.Event()
    threading.Thread(target=target, args=(*args, ready), name=name, daemon=True).start()  # type: ignore[arg-type]
    return ready


async def main(args: argparse.Namespace) -> None:
    server = start_agent(args.keys, "modern-host")
    waits = []
    if FEATURES["eager"]:
        waits.append(start_thread(eager_loop, "eager-loop"))
    if FEATURES["runner"]:
        waits += [start_thread(runner_thread, f"runner-{i}", i) for i in (1, 2)]
    owners = [
        spawn(shield_owner(), "shield-owner"),
        spawn(waitfor_owner(), "waitfor-owner"),
        spawn(gather_owner(), "gather-owner"),
    ]
    if FEATURES["taskgroup"]:
        owners.append(spawn(taskgroup_owner(), "tg-owner"))
    if FEATURES["timeout"]:
        owners.append(spawn(timeout_owner(), "timeout-owner"))
    await asyncio.sleep(0)  # let every owner reach its await
    for ready in waits:
        await asyncio.to_thread(ready.wait)
    echo_server = await asyncio.start_server(echo, "127.0.0.1", 0)
    host, port = echo_server.sockets[0].getsockname()[:2]
    for feature, present in FEATURES.items():
        say(f"feature: {feature} {'yes' if present else 'no'}")
    say(f"python: {sys.version.split()[0]}")
    say(f"agent: {server.address}")
    say(f"echo: {host}:{port}")
    async with echo_server:
        await echo_server.serve_forever()
    del owners


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("keys")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parser.parse_args()))
