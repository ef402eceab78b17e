"""A host for the host-event attack tests: reports what really happened inside it.

Prints ``agent: HOST:PORT`` and ``echo: HOST:PORT`` when ready; stdin commands:

- ``agent-stop`` / ``agent-start``: stop the agent, start it again on the same address;
- ``tracemalloc?``: ``event: tracemalloc tracing=BOOL``;
- ``alloc``: ``event: alloc seconds=S`` (CPU seconds of an allocation loop, best of 3);
- ``victim``: start thread 'victim' (``event: victim ident=N``);
- ``victim-exit``: end it, then start thread 'bystander' until it has the victim's ident
  (``event: bystander ident=N same=BOOL tries=K``);
- ``bystander?``: ``event: bystander alive=BOOL``; a bystander hit by an exception says
  ``event: bystander ended by NAME``.

Usage: python -m tests.hosts.events KEYDIR [--log] [--name NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import threading
import time
import tracemalloc

import agent
from tests.hosts.common import echo, start_agent


def say(line: str) -> None:
    print(line, flush=True)


def alloc_seconds(n: int = 20_000) -> float:
    """CPU seconds of an allocation-only loop (min of three): what tracemalloc slows."""
    best = float("inf")
    for _ in range(3):
        started = time.thread_time()
        out = []
        for i in range(n):
            out.append((i, str(i) * 3, [i]))
        del out
        best = min(best, time.thread_time() - started)
    return best


class Threads:
    """The victim and the bystander that inherits its ident."""

    def __init__(self) -> None:
        self.victim: threading.Thread | None = None
        self.victim_stop = threading.Event()
        self.bystander: threading.Thread | None = None

    def start_victim(self) -> None:
        self.victim_stop.clear()
        self.victim = threading.Thread(target=self.victim_stop.wait, name="victim", daemon=True)
        self.victim.start()
        say(f"event: victim ident={self.victim.ident}")

    def replace_victim(self) -> None:
        assert self.victim is not None
        self.victim_stop.set()
        self.victim.join()
        ident = self.victim.ident
        tried: list[tuple[threading.Thread, threading.Event]] = []
        for _ in range(50):
            stop = threading.Event()
            thread = threading.Thread(target=bystander, args=(stop,), name="bystander", daemon=True)
            thread.start()
            if thread.ident == ident:
                break
            # a different ident: keep it running (an ended thread's stack would be reused
            # next, not the victim's) and try again
            thread.name = "bystander-miss"
            tried.append((thread, stop))
        for other, other_stop in tried:
            other_stop.set()
            other.join()
        self.bystander = thread
        say(
            f"event: bystander ident={thread.ident} same={thread.ident == ident} "
            f"tries={len(tried) + 1}"
        )


def bystander(stop: threading.Event) -> None:
    """Runs Python bytecode in short steps, so an exception aimed at it would land."""
    try:
        while not stop.is_set():
            time.sleep(0.01)
    except BaseException as exc:
        say(f"event: bystander ended by {type(exc).__name__}")
        raise


def commands(address: str, keys: str, name: str) -> None:
    threads = Threads()
    for line in sys.stdin:
        word = line.strip()
        if word == "agent-stop":
            agent.stop()
            say("event: agent stopped")
        elif word == "agent-start":
            try:
                server = start_agent(keys, name, address)
                say(f"event: agent started {server.address}")
            except Exception as exc:
                say(f"event: agent failed {type(exc).__name__}")
        elif word == "tracemalloc?":
            say(f"event: tracemalloc tracing={tracemalloc.is_tracing()}")
        elif word == "alloc":
            say(f"event: alloc seconds={alloc_seconds():.6f}")
        elif word == "victim":
            threads.start_victim()
        elif word == "victim-exit":
            threads.replace_victim()
        elif word == "bystander?":
            alive = threads.bystander is not None and threads.bystander.is_alive()
            say(f"event: bystander alive={alive}")


async def main(args: argparse.Namespace) -> None:
    if args.log:
        logging.basicConfig(
            level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
        )
    server = start_agent(args.keys, args.name)
    echo_server = await asyncio.start_server(echo, "127.0.0.1", 0)
    host, port = echo_server.sockets[0].getsockname()[:2]
    say(f"agent: {server.address}")
    say(f"echo: {host}:{port}")
    threading.Thread(
        target=commands, args=(server.address, args.keys, args.name), name="commands", daemon=True
    ).start()
    async with echo_server:
        await echo_server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("keys")
    parser.add_argument("--log", action="store_true", help="log INFO and up to stderr")
    parser.add_argument("--name", default="events-host")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parser.parse_args()))
