"""Memory benchmark host: N live objects, the agent, and bench/host.py's loop-stall monitor.

    python bench/memhost.py KEYS [--objects 100000]

Keeps ``--objects`` small plain instances (``Payload``, no ``__slots__``) alive, then prints
``agent: ADDRESS``. Every stdin command answers with one line:

* ``reset`` clears the worst stall seen, on the loop, and answers ``reset``;
* ``report`` answers ``stall: SECONDS`` once the monitor has ticked after anything that
  held the loop up to the moment the command arrived (so a stall that just ended counts);
* ``grow N`` allocates N more Payloads on the command thread and answers
  ``grown: N TOTAL`` when they are all alive.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import threading

from host import TICK, Monitor  # bench/host.py: the same 1 ms stall meter as the other benches

import agent


class Payload:
    """A small plain instance, the kind of object a host keeps a lot of."""

    def __init__(self, i: int) -> None:
        self.i = i


async def reset(state: Monitor) -> str:
    state.worst = 0.0
    return "reset"


async def report(state: Monitor) -> str:
    await asyncio.sleep(3 * TICK)  # the monitor's own 1 ms timer fires before this one
    return f"stall: {state.worst:.6f}"


def commands(loop: asyncio.AbstractEventLoop, state: Monitor, kept: list[Payload]) -> None:
    for line in sys.stdin:
        word, _, arg = line.strip().partition(" ")
        if word in ("reset", "report"):
            job = reset(state) if word == "reset" else report(state)
            answer = asyncio.run_coroutine_threadsafe(job, loop).result()
        elif word == "grow":
            kept.extend([Payload(i) for i in range(int(arg))])
            answer = f"grown: {arg} {len(kept)}"
        else:
            answer = f"unknown: {word}"
        print(answer, flush=True)


async def main(args: argparse.Namespace) -> None:
    keys = args.keys
    kept = [Payload(i) for i in range(args.objects)]
    gc.collect()  # settle them into the oldest generation before anything is measured
    server = agent.start(
        "127.0.0.1:0",
        tls_cert=f"{keys}/agent.crt",
        tls_key=f"{keys}/agent.key",
        tokens={"operator": open(f"{keys}/operator.token").read().strip()},
        name="bench-memhost",
    )
    state = Monitor()
    loop = asyncio.get_running_loop()
    watcher = asyncio.create_task(state.run(loop), name="stall-monitor")
    threading.Thread(target=commands, args=(loop, state, kept), daemon=True).start()
    print(f"agent: {server.address}", flush=True)
    await watcher


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("keys")
    parser.add_argument("--objects", type=int, default=100_000)
    asyncio.run(main(parser.parse_args()))
