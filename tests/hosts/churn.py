"""A host whose tasks come, move and go on command, for the incremental snapshot tests.

Prints ``agent: HOST:PORT`` and ``echo: HOST:PORT`` when ready; then reads stdin:
``spawn NAME`` starts a task parked at PARKED-LINE, ``move NAME`` wakes it to park at
MOVED-LINE, ``cancel NAME`` cancels it and drops it (the task is freed), ``burst N``
starts and cancels N tasks, ``log N`` keeps only N versions of the agent's change log.
Each command answers with an ``event: ...`` line once done.
Usage: python -m tests.hosts.churn KEYDIR [--tasks N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import threading

from tests.hosts.common import echo, start_agent


def say(line: str) -> None:
    print(line, flush=True)


async def parked(moved: asyncio.Event, settled: asyncio.Event) -> None:
    """Waits at PARKED-LINE until moved, then at MOVED-LINE for good."""
    await moved.wait()  # PARKED-LINE
    settled.set()
    await asyncio.sleep(3600)  # MOVED-LINE


async def bulk() -> None:
    await asyncio.sleep(3600)


class Churn:
    """The named tasks the test drives, on the host's loop."""

    def __init__(self) -> None:
        self.tasks: dict[str, tuple[asyncio.Task[None], asyncio.Event, asyncio.Event]] = {}

    async def spawn(self, name: str) -> None:
        moved, settled = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(parked(moved, settled), name=name)
        self.tasks[name] = (task, moved, settled)
        await asyncio.sleep(0)  # it runs to PARKED-LINE
        say(f"event: spawned {name}")

    async def move(self, name: str) -> None:
        _task, moved, settled = self.tasks[name]
        moved.set()
        await settled.wait()
        say(f"event: moved {name}")

    async def cancel(self, name: str) -> None:
        task, _moved, _settled = self.tasks.pop(name)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        del task
        say(f"event: cancelled {name}")

    async def burst(self, count: int) -> None:
        tasks = [asyncio.create_task(bulk(), name=f"burst-{i}") for i in range(count)]
        await asyncio.sleep(0)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        say(f"event: burst {count}")


def commands(loop: asyncio.AbstractEventLoop, churn: Churn, server: object) -> None:
    for line in sys.stdin:
        word, _, arg = line.strip().partition(" ")
        if word in ("spawn", "move", "cancel"):
            asyncio.run_coroutine_threadsafe(getattr(churn, word)(arg), loop).result()
        elif word == "burst":
            asyncio.run_coroutine_threadsafe(churn.burst(int(arg)), loop).result()
        elif word == "log":
            server.core.tasks.table.log_versions = int(arg)  # type: ignore[attr-defined]
            say(f"event: log {arg}")


async def main(args: argparse.Namespace) -> None:
    server = start_agent(args.keys, "churn-host")
    keep = [asyncio.create_task(bulk(), name=f"bulk-{i}") for i in range(args.tasks)]
    churn = Churn()
    echo_server = await asyncio.start_server(echo, "127.0.0.1", 0)
    host, port = echo_server.sockets[0].getsockname()[:2]
    loop = asyncio.get_running_loop()
    threading.Thread(target=commands, args=(loop, churn, server), daemon=True).start()
    say(f"agent: {server.address}")
    say(f"echo: {host}:{port}")
    async with echo_server:
        await echo_server.serve_forever()
    del keep


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("keys")
    parser.add_argument("--tasks", type=int, default=100)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parser.parse_args()))
