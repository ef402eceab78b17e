"""A host whose task and thread objects fight generic introspection, for the listing tests.

- task ``hostile-coro`` runs a coroutine object of the host's own class (a registered
  collections.abc.Coroutine) whose ``__getattr__`` reports every lookup;
- thread ``decoy`` runs a method named ``run_forever`` on an object whose ``__class__``
  property reports every read (and claims to be an event loop).
Anything that runs that code prints ``event: hostile ...``.
Usage: python -m tests.hosts.hostile KEYDIR
"""

from __future__ import annotations

import argparse
import asyncio
import collections.abc
import contextlib
import threading
from typing import Any

from tests.hosts.common import echo, start_agent


def say(line: str) -> None:
    print(line, flush=True)


class HostileCoro(collections.abc.Coroutine):  # type: ignore[type-arg]
    """A coroutine of the host's own making that says when anything looks it up."""

    def __init__(self) -> None:
        self._inner = asyncio.sleep(3600).__await__()

    def send(self, value: Any) -> Any:
        return self._inner.send(value)

    def throw(self, *args: Any) -> Any:
        return self._inner.throw(*args)

    def close(self) -> None:
        self._inner.close()

    def __await__(self) -> Any:
        return self._inner

    def __getattr__(self, name: str) -> Any:
        say(f"event: hostile getattr {name}")
        raise AttributeError(name)


class Decoy:
    """Not a loop, but its __class__ says it is, and reports being asked."""

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        say("event: hostile __class__")
        return asyncio.AbstractEventLoop

    def run_forever(self, stop: threading.Event) -> None:
        stop.wait()


async def main(args: argparse.Namespace) -> None:
    server = start_agent(args.keys, "hostile-host")
    stop = threading.Event()
    decoy = Decoy()
    threading.Thread(target=decoy.run_forever, args=(stop,), name="decoy", daemon=True).start()
    task = asyncio.get_running_loop().create_task(HostileCoro(), name="hostile-coro")
    echo_server = await asyncio.start_server(echo, "127.0.0.1", 0)
    host, port = echo_server.sockets[0].getsockname()[:2]
    say(f"agent: {server.address}")
    say(f"echo: {host}:{port}")
    async with echo_server:
        await echo_server.serve_forever()
    del task


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("keys")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parser.parse_args()))
