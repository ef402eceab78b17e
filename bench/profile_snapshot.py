"""Where a cold snapshot's time goes, in one process: the agent's parts (task table pass,
answer, threads, process, children, loops, encode of each chunk) and the client's decode,
each timed on its own (median of ``--runs`` fresh tables), with a cProfile of the slowest
part on request. The transport (rpyc + TLS) is what bench/snapshot.py's round trip adds.

    python bench/profile_snapshot.py [--tasks 10000 100000] [--shape chains|flat|gather]
                                     [--runs 3] [--profile PART] [--threads 50]

The host's loop runs in a thread of this process with bench/peerhost.py's task shapes;
the parts run in the main thread the way the agent's connection thread runs them.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "bench"))

from peerhost import spawn  # noqa: E402

from agent.codec import decode_envelope, encode_ok  # noqa: E402
from agent.core import AgentCore  # noqa: E402


def host_loop(
    tasks: int, shape: str, threads: int
) -> tuple[asyncio.AbstractEventLoop, Callable[[], Any]]:
    """A loop in a thread of its own running ``tasks`` tasks of ``shape``, and what ends
    them; returns once every leaf is asleep."""
    ready = threading.Event()
    holder: dict[str, Any] = {}

    async def main() -> None:
        holder["loop"] = asyncio.get_running_loop()
        holder["stop"] = asyncio.Event()
        started, census = spawn(shape, tasks, 9)
        await census.done.wait()
        ready.set()
        await holder["stop"].wait()
        for task in started:
            task.cancel()
        await asyncio.gather(*started, return_exceptions=True)

    threading.Thread(target=asyncio.run, args=(main(),), daemon=True, name="host").start()
    stop = threading.Event()
    for i in range(threads):
        threading.Thread(target=stop.wait, name=f"idle-{i}", daemon=True).start()
    ready.wait()
    loop = holder["loop"]
    return loop, lambda: loop.call_soon_threadsafe(holder["stop"].set)


def timed(parts: dict[str, list[float]], name: str, fn: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    value = fn()
    parts.setdefault(name, []).append(time.perf_counter() - started)
    return value


def one_cold(parts: dict[str, list[float]], profile: str, profiler: cProfile.Profile) -> None:
    """One cold snapshot on a fresh core, each part timed."""
    core = AgentCore("profile")
    table = core.tasks.table

    def part(name: str, fn: Callable[[], Any]) -> Any:
        if name == profile:
            profiler.enable()
        try:
            return timed(parts, name, fn)
        finally:
            if name == profile:
                profiler.disable()

    started = time.perf_counter()
    part("table pass", table.refresh)
    answer = part("answer", lambda: table.answer(limit=10**9))
    loops = part("loops", lambda: core.tasks.loops(serials=answer.loop_counts))
    by_thread = {i: core.tasks.loop_id(lp) for lp, i in loops if i is not None}
    part("threads", lambda: core.threads())
    part("process", lambda: core.process_info("viewer", loops))
    part("children", core.children.collect)
    part("loop infos", lambda: core.loop_infos(loops, answer.loop_counts))
    del by_thread
    # the whole agent side as the service runs it (a second pass is shared: age 0.25 s)
    wire, listing = part("snapshot()", lambda: core.snapshot("viewer", 10**9, "", 0, 0))
    first = part("encode first", lambda: encode_ok(wire))
    payloads = [first]
    offset = len(listing.chunk(0))
    while offset < len(listing.rows):
        chunk, offset = part("chunk wire", lambda o=offset: core.task_chunk(listing, o))
        payloads.append(part("encode chunks", lambda c=chunk: encode_ok(c)))
    agent_s = time.perf_counter() - started
    parts.setdefault("agent total", []).append(agent_s)
    size = sum(map(len, payloads))
    parts.setdefault("payload KiB", []).append(size / 1024)
    part("client envelope", lambda: [decode_envelope(p) for p in payloads])
    return core


def steady(core: AgentCore, parts: dict[str, list[float]], profile: str, runs: int) -> None:
    """Refreshes of a warm table with nothing changing, as a 1 Hz observer makes them."""
    table = core.tasks.table
    profiler = cProfile.Profile() if profile else None
    for _ in range(runs):
        table._done_at = -1e9  # past the sharing window: a pass of its own
        if profiler:
            profiler.enable()
        started = time.perf_counter()
        since = (table.version, table.epoch)
        wire, _listing = timed(
            parts, "steady snapshot()", lambda s=since: core.snapshot("viewer", 10**9, "", *s)
        )
        encode_ok(wire)
        parts.setdefault("steady total", []).append(time.perf_counter() - started)
        if profiler:
            profiler.disable()
        table._done_at = -1e9
        timed(parts, "steady pass", table.refresh)
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--shape", choices=["chains", "flat", "gather"], default="chains")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=50)
    parser.add_argument("--profile", default="", help="cProfile this part (e.g. 'table pass')")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, load {os.getloadavg()[0]:.1f}, shape {args.shape}")
    for n in args.tasks:
        loop, stop = host_loop(n, args.shape, args.threads)
        parts: dict[str, list[float]] = {}
        profiler = cProfile.Profile()
        for _ in range(args.runs):
            core = one_cold(parts, args.profile, profiler)
        steady(core, parts, args.profile == "steady", args.runs * 3)
        print(f"--- {n} tasks ({len(asyncio.all_tasks(loop))} listed by asyncio)")
        for name, values in parts.items():
            scale = 1 if name.endswith("KiB") else 1000
            unit = "" if name.endswith("KiB") else " ms"
            med = statistics.median(values) * scale
            lo, hi = min(values) * scale, max(values) * scale
            print(f"  {name:<16} {med:>9.1f}{unit}  ({lo:.1f}-{hi:.1f}, n={len(values)})")
        if args.profile and args.profile != "steady":
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        stop()


if __name__ == "__main__":
    main()
