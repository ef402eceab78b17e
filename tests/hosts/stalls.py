"""A host whose event loop the test blocks on command, each way a loop gets stuck.

Usage: python -m tests.hosts.stalls KEYDIR [--threshold SECONDS] [--module FILE]
Prints ``agent: HOST:PORT`` and ``ready``; then reads commands on stdin, one per line:
``sleep`` (time.sleep in a coroutine), ``callback`` (a blocking call_soon callback),
``cpu`` (a CPU-bound loop in a coroutine), ``json`` (CPU-bound C code: json.dumps),
``gil`` (another thread holds the GIL in a long ``re`` match while the loop idles),
``module`` (a coroutine calls ``block()`` of the module FILE: a test's planted source).
Each prints ``event: <command> done`` when over. The line that blocks carries a
``# STALL-<COMMAND>`` marker so the test can find its number.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import queue
import re
import sys
import threading
import time

import agent
from tests.hosts.common import echo, read_tokens

CPU_ROUNDS = 6_000_000
GIL_TEXT = "a" * 23  # (a+)+b backtracks ~2**23 times in C, never letting go of the GIL
PAYLOAD = [{"id": i, "v": i * 0.5} for i in range(1000)] * 500  # ~0.4 s of json's C encoder


def say(line: str) -> None:
    print(line, flush=True)


async def sleeper() -> None:
    """A coroutine that blocks its loop with a synchronous sleep."""
    time.sleep(0.5)  # STALL-SLEEP
    say("event: sleep done")


def blocking_callback() -> None:
    """A plain callback (call_soon) that blocks the loop."""
    time.sleep(0.5)  # STALL-CALLBACK
    say("event: callback done")


async def cruncher() -> None:
    """A coroutine that burns the CPU in Python bytecode."""
    total = sum(i * i for i in range(CPU_ROUNDS))  # STALL-CPU
    say(f"event: cpu done {total > 0}")


async def encoder() -> None:
    """A coroutine that burns the CPU in C code holding the GIL (a big json.dumps)."""
    text = json.dumps(PAYLOAD)  # STALL-JSON
    say(f"event: json done {len(text)}")


def gil_hog(jobs: queue.Queue[str]) -> None:
    """A thread that holds the GIL in long C calls (the re engine never releases it), three
    in a row on one line, as a worker crunching a batch would: between two of them the GIL
    is free for a moment, and whichever thread takes it first may not be the watchdog."""
    while True:
        jobs.get()
        found = [re.match(r"(a+)+b", GIL_TEXT) for _ in range(3)]  # STALL-GIL
        say(f"event: gil done {found}")


async def planted(path: str) -> None:
    """Run the test's module, whose ``block()`` blocks on a line it planted secrets in."""
    spec = importlib.util.spec_from_file_location("planted_stall", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.block()
    say("event: module done")


def commands(loop: asyncio.AbstractEventLoop, jobs: queue.Queue[str], module: str) -> None:
    for line in sys.stdin:
        word = line.strip()
        if word == "sleep":
            asyncio.run_coroutine_threadsafe(sleeper(), loop)
        elif word == "callback":
            loop.call_soon_threadsafe(blocking_callback)
        elif word == "cpu":
            asyncio.run_coroutine_threadsafe(cruncher(), loop)
        elif word == "json":
            asyncio.run_coroutine_threadsafe(encoder(), loop)
        elif word == "gil":
            jobs.put(word)
        elif word == "module":
            asyncio.run_coroutine_threadsafe(planted(module), loop)


async def main(args: argparse.Namespace) -> None:
    server = agent.start(
        "127.0.0.1:0",
        tls_cert=f"{args.keys}/agent.crt",
        tls_key=f"{args.keys}/agent.key",
        tokens=read_tokens(args.keys),
        name="stalls-host",
        stall_threshold=args.threshold,
    )
    jobs: queue.Queue[str] = queue.Queue()
    threading.Thread(target=gil_hog, args=(jobs,), name="gil-hog", daemon=True).start()
    loop = asyncio.get_running_loop()
    threading.Thread(
        target=commands, args=(loop, jobs, args.module), name="commands", daemon=True
    ).start()
    echo_server = await asyncio.start_server(echo, "127.0.0.1", 0)
    host, port = echo_server.sockets[0].getsockname()[:2]
    say(f"agent: {server.address}")
    if server.metrics is not None:  # OBSERVER_AGENT_METRICS set by the test
        say(f"metrics: {server.metrics.address}")
    say(f"echo: {host}:{port}")
    say("ready")
    async with echo_server:
        await echo_server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("keys")
    parser.add_argument("--threshold", type=float, default=0.1)
    parser.add_argument("--module", default="", help="a file whose block() the module command runs")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parser.parse_args()))
