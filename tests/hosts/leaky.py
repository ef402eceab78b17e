"""A host that leaks on purpose, for the memory tests.

Every tick (20 ms) it adds LEAK_RECORDS ``LeakyRecord`` instances to a list, one entry to
a dict cache and one CHUNK-byte ``bytes`` to a buffer list: three leaks at three known
lines (the ``LEAK-*`` markers). It also holds HOSTILE objects whose ``__sizeof__`` and
``__repr__`` misbehave (and say so if they are ever called).

stdin commands: ``pause`` (stop leaking, then print the exact totals) and ``resume``.
Usage: python -m tests.hosts.leaky KEYDIR
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import threading

import agent
from tests.hosts.common import echo, start_agent

LEAK_RECORDS = 20
CHUNK = 4096
HOSTILE = 1000


def say(line: str) -> None:
    print(line, flush=True)


class LeakyRecord:
    """What the host keeps by mistake."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.label = "record"


class CacheEntry(dict):  # type: ignore[type-arg]
    """A cached value: a dict of its own type, so the census counts exactly these."""


class TagList(list):  # type: ignore[type-arg]
    """The list each cache entry holds."""


class HostileMeta(type):
    """A metaclass whose name lookup, hashing and comparison run host code that fails."""

    @property
    def __module__(cls) -> str:  # type: ignore[override]
        say("event: hostile metaclass module called")
        raise RuntimeError("no module for you")

    def __hash__(cls) -> int:
        say("event: hostile metaclass hash called")
        raise RuntimeError("no hash for you")

    def __eq__(cls, other: object) -> bool:
        say("event: hostile metaclass eq called")
        raise RuntimeError("no eq for you")


class Hostile(metaclass=HostileMeta):
    """An object that fights every generic introspection tool."""

    def __sizeof__(self) -> int:
        say("event: hostile sizeof called")
        raise RuntimeError("no size for you")

    def __repr__(self) -> str:
        say("event: hostile repr called")
        raise RuntimeError("no repr for you")

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        say("event: hostile class called")
        raise RuntimeError("no class for you")


class Leaks:
    """The three leaks and their exact totals."""

    def __init__(self) -> None:
        self.records: list[LeakyRecord] = []
        self.cache: dict[str, CacheEntry] = {}
        self.buffer: list[bytes] = []
        self.ticks = 0
        self.running = True

    def tick(self) -> None:
        self.ticks += 1
        n = len(self.records)
        self.records.extend([LeakyRecord(n + i) for i in range(LEAK_RECORDS)])  # LEAK-RECORDS
        entry = CacheEntry(tick=self.ticks, tags=TagList([n]))  # LEAK-CACHE
        self.cache[f"key-{self.ticks}"] = entry
        self.buffer.append(bytes(CHUNK))  # LEAK-BUFFER

    def totals(self) -> str:
        return (
            f"records={len(self.records)} cache={len(self.cache)} chunks={len(self.buffer)} "
            f"record_size={sys.getsizeof(self.records[0]) if self.records else 0} "
            f"chunk_size={sys.getsizeof(bytes(CHUNK))} ticks={self.ticks}"
        )


async def leak(leaks: Leaks) -> None:
    while True:
        if leaks.running:
            leaks.tick()
            if leaks.ticks % 25 == 0:
                say(f"event: leaked ticks={leaks.ticks}")
        await asyncio.sleep(0.02)


def commands(loop: asyncio.AbstractEventLoop, leaks: Leaks) -> None:
    """Run each stdin command on the loop, so pausing never races a tick."""

    def pause() -> None:
        leaks.running = False
        say(f"event: paused {leaks.totals()}")

    def resume() -> None:
        leaks.running = True
        say("event: resumed")

    for line in sys.stdin:
        word = line.strip()
        if word == "pause":
            loop.call_soon_threadsafe(pause)
        elif word == "resume":
            loop.call_soon_threadsafe(resume)


async def main(args: argparse.Namespace) -> None:
    keys = args.keys
    server = start_agent(keys, "leaky-host")
    leaks = Leaks()
    hostile = [Hostile() for _ in range(HOSTILE)]
    agent.expose("hostile", hostile)
    agent.expose("sample", [bytes(100) for _ in range(1000)])
    echo_server = await asyncio.start_server(echo, "127.0.0.1", 0)
    host, port = echo_server.sockets[0].getsockname()[:2]
    say(f"file: {__file__}")
    say(f"agent: {server.address}")
    say(f"echo: {host}:{port}")
    loop = asyncio.get_running_loop()
    threading.Thread(target=commands, args=(loop, leaks), name="commands", daemon=True).start()
    leaker = asyncio.create_task(leak(leaks), name="leaker")
    async with echo_server:
        await echo_server.serve_forever()
    leaker.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("keys")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parser.parse_args()))
