"""What CPU per task costs a task switch, and a switch-heavy host's throughput, on vs off.

    python bench/taskcpu.py [--rounds 7] [--tasks 100] [--steps 2000]

In this process (Python 3.12+): an event loop runs ``--tasks`` tasks that each do
``await asyncio.sleep(0)`` ``--steps`` times (every step is a task switch and does
nothing else), timed with CPU per task off, on (the agent's TaskCpuMeter with the
agent's task factory on the loop, as in a host) and off again, in turns, the order
rotated every round. Reported: ns per task step (median of the rounds, with their
range), the difference on - off (the cost of one step's accounting), and steps a
second (the host's throughput). The machine's load average is printed: figures on a
shared box vary, so only the interleaved medians mean something.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.collect.taskcpu import TaskCpuMeter, unsupported  # noqa: E402
from agent.collect.tasks import TaskRegistry  # noqa: E402


async def switcher(steps: int) -> None:
    for _ in range(steps):
        await asyncio.sleep(0)


async def one_round(tasks: int, steps: int) -> float:
    """Seconds for ``tasks`` tasks of ``steps`` steps each (all steps of all tasks)."""
    started = time.perf_counter()
    await asyncio.gather(*(asyncio.create_task(switcher(steps)) for _ in range(tasks)))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args()
    if unsupported():
        raise SystemExit(unsupported())
    registry = TaskRegistry()
    meter = TaskCpuMeter(
        lambda task: registry.task_id(task)[0],
        registry.find_task,
        registry.all_tasks,
        lambda: False,
    )
    steps = args.tasks * (args.steps + 1)  # each task's first step too
    times: dict[str, list[float]] = {"off": [], "on": [], "off again": []}

    async def run() -> None:
        registry.births.hook(asyncio.get_running_loop())  # the agent's factory, as in a host
        await one_round(args.tasks, 50)  # warm-up
        order = list(times)
        for r in range(args.rounds):
            for name in order[r % 3 :] + order[: r % 3]:
                if name == "on":
                    meter.start("bench")
                seconds = await one_round(args.tasks, args.steps)
                if name == "on":
                    report = meter.window(60.0, 1)
                    meter.stop()
                    assert report.steps > 0
                times[name].append(seconds / steps * 1e9)

    asyncio.run(run())
    print(
        f"CPU per task, Python {sys.version.split()[0]}: {args.tasks} tasks x {args.steps} "
        f"steps of `await asyncio.sleep(0)`, {args.rounds} rounds interleaved"
    )
    for name, values in times.items():
        med = statistics.median(values)
        print(
            f"  {name:<10} {med:8.0f} ns per step ({min(values):.0f}-{max(values):.0f})"
            f"  {1e9 / med / 1000:8.1f}k steps/s"
        )
    cost = statistics.median(times["on"]) - statistics.median(times["off"])
    ratio = statistics.median(times["on"]) / statistics.median(times["off"])
    print(f"  cost of one step's accounting: {cost:.0f} ns (on/off x{ratio:.2f})")
    clock = min(timeit.repeat(time.thread_time, number=20_000, repeat=5)) / 20_000 * 1e9
    print(f"  of which two reads of the thread CPU clock (a system call): 2 x {clock:.0f} ns")
    print(f"  load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
