"""Benchmark host: N sleeping tasks, 50 threads, the agent, and a loop-stall monitor.

stdin commands: ``reset`` clears the worst stall seen, ``report`` prints ``stall: SECONDS``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time

import agent

TICK = 0.001


async def monitor(state: dict[str, float]) -> None:
    """Wake every millisecond; the longest gap beyond that is the worst loop stall."""
    last = time.perf_counter()
    while True:
        await asyncio.sleep(TICK)
        now = time.perf_counter()
        state["worst"] = max(state["worst"], now - last - TICK)
        last = now


def commands(loop: asyncio.AbstractEventLoop, state: dict[str, float]) -> None:
    for line in sys.stdin:
        word = line.strip()
        if word == "reset":
            loop.call_soon_threadsafe(state.__setitem__, "worst", 0.0)
        elif word == "report":
            print(f"stall: {state['worst']:.6f}", flush=True)


async def sleeper(i: int) -> None:
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
    tasks = [asyncio.create_task(sleeper(i), name=f"sleeper-{i}") for i in range(args.tasks)]
    state = {"worst": 0.0}
    if args.monitor:
        tasks.append(asyncio.create_task(monitor(state), name="stall-monitor"))
    loop = asyncio.get_running_loop()
    threading.Thread(target=commands, args=(loop, state), daemon=True).start()
    await asyncio.sleep(0.5)
    print(f"agent: {server.address}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("keys")
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=50)
    parser.add_argument("--no-monitor", dest="monitor", action="store_false")
    asyncio.run(main(parser.parse_args()))
