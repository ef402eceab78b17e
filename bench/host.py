"""Benchmark host: N sleeping tasks, 50 threads, the agent, a loop-stall monitor and a GC
counter.

    python bench/host.py KEYS [--tasks 1000] [--depth 1] [--waits 1] [--threads 50]
                             [--no-monitor]

Each task's coroutine is ``--depth`` coroutines deep, sleeping in the innermost, which has
``--waits`` places to wait (1: its line is known from its code; 2: from its frame).
stdin commands: ``reset`` clears the worst stall seen and the GC counts; ``report``
prints ``stall: SECONDS gc: GEN0 GEN1 GEN2`` (the worst loop stall and the collections of
each generation since the reset, whichever thread ran them: gc.callbacks); ``chain``
times, on the loop, a plain walk of every task's await chain (function and line of each
coroutine) and prints ``chain: SECONDS TASKS``: the floor a task listing is held against.
Both answers come from the monitor task right after a tick, so a report includes a stall
still going on when it was asked for. ``churn N`` cancels the N oldest sleepers and starts
N new ones (answers ``churned: N``): a refresh then has 2N rows to carry.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import sys
import threading
import time
from typing import Any

import agent

TICK = 0.001


class Monitor:
    """Worst loop stall (a task waking every millisecond) and GC collections per
    generation, both since the last reset."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.collections = [0, 0, 0]
        self.requests: collections.deque[str] = collections.deque()
        gc.callbacks.append(self.on_gc)

    def on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.collections[min(info.get("generation", 0), 2)] += 1

    async def run(self, loop: asyncio.AbstractEventLoop) -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(TICK)
            now = time.perf_counter()
            self.worst = max(self.worst, now - last - TICK)
            last = now
            while self.requests:
                request = self.requests.popleft()
                if request == "reset":
                    self.worst = 0.0
                    self.collections = [0, 0, 0]
                elif request == "report":
                    counts = " ".join(map(str, self.collections))
                    print(f"stall: {self.worst:.6f} gc: {counts}", flush=True)
                elif request == "chain":
                    plain_chain_walk(loop)
                    last = time.perf_counter()  # the walk is not a stall of ours


def plain_chain_walk(loop: asyncio.AbstractEventLoop) -> None:
    """Every task's whole await chain (function and line of each coroutine), in-loop."""
    started = time.perf_counter()
    tasks = asyncio.all_tasks(loop)
    rows: list[tuple[str, int]] = []
    for task in tasks:
        coro: Any = task.get_coro()
        for _ in range(1000):
            if coro is None:
                break
            frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
            if frame is not None:
                rows.append((frame.f_code.co_name, frame.f_lineno))
            coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    elapsed = time.perf_counter() - started
    print(f"chain: {elapsed:.6f} {len(tasks)}", flush=True)


def commands(monitor: Monitor, churn: Any) -> None:
    for line in sys.stdin:
        word = line.strip()
        if word in ("reset", "report", "chain"):
            monitor.requests.append(word)
        elif word.startswith("churn "):
            churn(int(word.split()[1]))


async def sleeper(depth: int, waits: int) -> None:
    """``depth`` coroutines deep; each awaits in one place, except the innermost when
    ``waits`` > 1 (a code with several places to wait: its line needs the frame)."""
    inner = sleeper(depth - 1, waits) if depth > 1 else two_waits() if waits > 1 else one_wait()
    await inner


async def one_wait() -> None:
    await asyncio.sleep(3600)


async def two_waits() -> None:
    await asyncio.sleep(0)
    await asyncio.sleep(3600)


async def main(args: argparse.Namespace) -> None:
    keys = args.keys
    server = agent.start(
        "127.0.0.1:0",
        tls_cert=f"{keys}/agent.crt",
        tls_key=f"{keys}/agent.key",
        tokens={"operator": open(f"{keys}/operator.token").read().strip()},
        name="bench-host",
    )
    stop = threading.Event()
    for i in range(args.threads):
        threading.Thread(target=stop.wait, name=f"idle-{i}", daemon=True).start()
    tasks = [
        asyncio.create_task(sleeper(args.depth, args.waits), name=f"sleeper-{i}")
        for i in range(args.tasks)
    ]
    monitor = Monitor()
    if args.monitor:
        tasks.append(asyncio.create_task(monitor.run(asyncio.get_running_loop()), name="monitor"))
    loop = asyncio.get_running_loop()
    sleepers = collections.deque(tasks[: args.tasks])  # the only references: churned ones go
    del tasks[: args.tasks]
    made = [args.tasks]

    def churn(count: int) -> None:
        for _ in range(min(count, len(sleepers))):
            sleepers.popleft().cancel()
        for _ in range(count):
            made[0] += 1
            sleepers.append(
                loop.create_task(sleeper(args.depth, args.waits), name=f"sleeper-{made[0]}")
            )
        print(f"churned: {count}", flush=True)

    def churn_soon(count: int) -> None:
        loop.call_soon_threadsafe(churn, count)

    threading.Thread(target=commands, args=(monitor, churn_soon), daemon=True).start()
    await asyncio.sleep(0.5 + args.tasks / 200_000)  # every task reaches its sleep
    print(f"agent: {server.address}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("keys")
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--depth", type=int, default=1)
    parser.add_argument("--waits", type=int, default=1)
    parser.add_argument("--threads", type=int, default=50)
    parser.add_argument("--no-monitor", dest="monitor", action="store_false")
    asyncio.run(main(parser.parse_args()))
