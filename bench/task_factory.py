"""What the agent's task factory (agent/collect/births.py) costs the host.

    python bench/task_factory.py [--tasks 20000] [--repeat 9]

- create_task: ns per ``loop.create_task`` with no factory and with the agent's factory
  chained in front (the loop's own path), runs interleaved, GC paused while timing;
  median and spread of ``--repeat`` runs each;
- memory: bytes per task the creation-time stamp adds (tracemalloc, the stamp set on
  ``--tasks`` suspended tasks).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.collect.births import STAMP, Births


async def quick() -> int:
    return 1


async def parked() -> None:
    await asyncio.sleep(3600)


def create_ns(loop: asyncio.AbstractEventLoop, count: int) -> float:
    coros = [quick() for _ in range(count)]
    gc.disable()
    try:
        start = time.perf_counter()
        tasks = [loop.create_task(c) for c in coros]
        elapsed = time.perf_counter() - start
    finally:
        gc.enable()
    loop.run_until_complete(asyncio.gather(*tasks))
    return elapsed / count * 1e9


def stamp_bytes(loop: asyncio.AbstractEventLoop, count: int) -> float:
    tasks = [loop.create_task(parked()) for _ in range(count)]
    loop.run_until_complete(asyncio.sleep(0))
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for task in tasks:
        object.__setattr__(task, STAMP, time.time())
    added = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    for task in tasks:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    return added / count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    loop = asyncio.new_event_loop()
    plain: list[float] = []
    hooked: list[float] = []
    for _ in range(args.repeat):
        plain.append(create_ns(loop, args.tasks))
        births = Births()
        births.hook(loop)
        hooked.append(create_ns(loop, args.tasks))
        births.close()
    print(f"Python {sys.version.split()[0]}, {args.tasks} tasks x {args.repeat}")
    for label, runs in (("no factory", plain), ("agent's factory", hooked)):
        print(
            f"create_task {label:>15}: median {statistics.median(runs):6.0f} ns "
            f"(min {min(runs):.0f}, max {max(runs):.0f})"
        )
    print(f"stamp memory: {stamp_bytes(loop, args.tasks):.0f} bytes per task")
    loop.close()


if __name__ == "__main__":
    main()
