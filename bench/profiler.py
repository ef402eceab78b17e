"""What a running sampling profile costs a real server, at several rates.

    python bench/profiler.py [--blocks 4] [--rounds 6] [--segment 1] [--rates 100,250,1000]
                             [--tasks 1000] [--threads 50] [--aa]

The aiohttp server of bench/overhead.py (bench/webhost.py, our agent embedded, pinned to
one core; the load generator on the others, wrk when installed). Method
(bench/paired.py): ``--blocks`` fresh servers; on each, segments of ``--segment``
seconds alternate "off" (no profile) and each rate in ABBA order, ``--rounds`` quads a
rate, after a discarded warm-up segment of every setting; a profile at R Hz is started
0.3 s before its segment's load (its first, cold rounds walk every thread in full) and
stopped (and read) after it. ``--aa`` adds "off"
judged against itself, to see the method's own noise. ``--runs``/``--duration`` are the
old names of ``--blocks``/``--segment``.

``--threads N`` adds N idle threads 20 calls deep to the server (what the sampler reads
besides the loop). ``--py-spy PATH`` also runs, for each rate, ``py-spy record`` at that
rate on the same server (its default, blocking mode: it stops the process to read each
sample; needs ptrace permission), as one more tested setting.

``--floor`` also runs, for each rate, the floor of any in-process sampler (a thread in the
server waking at that rate to read ``sys._current_frames()`` and nothing more, see
bench/webhost.py): what is left above it is the profiler's own doing.

``--tick`` measures instead how long one sampling round holds the GIL in this process,
with 50 threads standing 30 calls deep (median and max over 300 rounds).

Reported: requests/s, p50 and p99 per segment (median, range), the agent threads' CPU as
a share of one core, the sampling rounds the profiler achieved a second (it skips rounds
it cannot keep up with rather than bursting), and per setting the median ratio to the
adjacent "off" segment with a bootstrap 90% interval, judged against the targets:
requests/s drop <= 3%, p99 rise <= 5%.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.overhead import Load, WebHost, pick_cpus  # noqa: E402
from bench.paired import Segment, Target, load_average, report, run_blocks  # noqa: E402
from observer.client import Node, connect  # noqa: E402
from observer.keygen import generate  # noqa: E402

TARGET_RPS = 0.97  # requests/s with a profile running, of none
TARGET_P99 = 1.05  # p99 with a profile running, times none's
PROFILE_LEAD = 0.3  # seconds a profile runs before its segment: what a long profile costs


def py_spy(path: str, pid: int, rate: float, seconds: float, out: Path) -> subprocess.Popen:
    """``py-spy record`` on ``pid`` at ``rate`` Hz for ``seconds`` (its default blocking
    mode), writing collapsed stacks to ``out``."""
    argv = [path, "record", "--pid", str(pid), "--rate", str(int(rate))]
    argv += ["--duration", str(int(seconds + 0.999)), "--format", "raw", "--output", str(out)]
    argv += ["--idle"]  # every sample kept, as the agent's profiler keeps them
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def measure_segment(
    host: WebHost,
    node: Node,
    setting: tuple[str, float],
    load: Load,
    args: argparse.Namespace,
    tmp: Path,
) -> Segment:
    """One segment of load on ``host`` with ``setting``'s profile (or py-spy) running."""
    tool, rate = setting
    spy = None
    rounds = None
    errors: list[str] = []
    try:
        if tool == "agent":
            node.profile_start(args.segment + 5.0, rate)
            time.sleep(PROFILE_LEAD)  # its first, cold rounds fall before the segment
        elif tool.startswith("floor"):
            host.floor(rate, floor_nice(tool))
        elif tool == "py-spy":
            spy = py_spy(args.py_spy, host.info["pid"], rate, args.segment + 1.0, tmp / "s")
            time.sleep(0.5)  # py-spy attaches before the load starts
        before, t0 = host.cpu(), time.perf_counter()
        result = load.run(host.info["url"], args.segment)
        after, t1 = host.cpu(), time.perf_counter()
        if tool.startswith("floor"):
            host.floor(0)
        if tool == "agent":
            profile = node.profile_stop()
            rounds = profile.ticks / max(profile.elapsed, 1e-9)
        if spy is not None:
            err, _none = spy.communicate(timeout=60)
            samples = re.search(r"Samples: (\d+)", err or "")
            if samples:
                rounds = int(samples.group(1)) / (args.segment + 1.0)
            elif spy.returncode:
                errors.append(f"py-spy failed: {(err or '').strip()[-200:]}")
    finally:
        if spy is not None and spy.poll() is None:
            spy.kill()
            spy.wait()
    agent = (after["process"] - after["host"]) - (before["process"] - before["host"])
    if result.get("errors"):
        errors.append(f"{int(result['errors'])} failed requests")
    return Segment(
        rps=result["rps"],
        p50=result["p50"],
        p99=result["p99"],
        agent_cpu=max(0.0, agent) / (t1 - t0),
        rounds=rounds,
        errors=errors,
        server_cpu=(after["process"] - before["process"]) / (t1 - t0),
    )


def tick_cost(threads: int = 50, depth: int = 30, rounds: int = 300) -> None:
    """Time one sampling round (the profiler's thread holds the GIL for it) over
    ``threads`` threads ``depth`` calls deep."""
    import threading

    from agent.collect.profiler import Profiler, _Run

    stop = threading.Event()
    parked = threading.Barrier(threads + 1)

    def deep(n: int) -> None:
        if n:
            deep(n - 1)
            return
        parked.wait()
        stop.wait()

    workers = [threading.Thread(target=deep, args=(depth,), daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    parked.wait()
    run = _Run(1, 10.0, 100.0, "", 0)
    names = {t.ident: (t.name, t.native_id) for t in threading.enumerate() if t.ident}
    cpu: dict[int, float] = {}
    times = []
    seen: dict | None = None  # what a round remembers for the next, as the sampler passes it
    for _ in range(rounds):
        t0 = time.perf_counter()
        seen = Profiler._tick(run, names, set(), {}, cpu, 0.01, seen)
        times.append(time.perf_counter() - t0)
    stop.set()
    print(
        f"one sampling round, {threads} threads ~{depth} frames deep: median "
        f"{statistics.median(times) * 1000:.3f} ms, max {max(times) * 1000:.3f} ms "
        f"({rounds} rounds)"
    )


def floor_nice(tool: str) -> int:
    """The nice value of a floor setting's tool name ("floor" is 0, "floor19" is 19)."""
    return int(tool[len("floor") :] or 0)


def label(setting: tuple[str, float]) -> str:
    tool, rate = setting
    if tool in ("off", "aa"):
        return "off" if tool == "off" else "off (A/A)"
    if tool.startswith("floor") and floor_nice(tool):
        return f"floor nice {floor_nice(tool)} {rate:g} Hz"
    return f"{tool} {rate:g} Hz"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--blocks", "--runs", type=int, default=4, help="fresh servers")
    parser.add_argument("--rounds", type=int, default=6, help="ABBA quads a setting a block")
    parser.add_argument(
        "--segment", "--duration", type=float, default=1.0, help="seconds of load a segment"
    )
    parser.add_argument("--rates", default="100,250,1000", help="sampling rates, Hz")
    parser.add_argument("--tasks", type=int, default=1000, help="idle tasks in the server")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--load", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--threads", type=int, default=0, help="idle threads in the server")
    parser.add_argument("--py-spy", metavar="PATH", help="also run py-spy record at each rate")
    parser.add_argument("--aa", action="store_true", help="also no profile against itself")
    parser.add_argument(
        "--floor",
        metavar="NICE,...",
        nargs="?",
        const="0",
        help="also the floor sampler at each rate (bench/webhost.py), at these nice values",
    )
    parser.add_argument("--tick", action="store_true", help="time one sampling round only")
    args = parser.parse_args()
    if args.tick:
        tick_cost()
        return
    if importlib.util.find_spec("aiohttp") is None:
        raise SystemExit("bench/profiler.py needs aiohttp: pip install -e '.[bench]'")
    rates = [float(r) for r in args.rates.split(",") if r]
    tested = [("aa", 0.0)] if args.aa else []
    tested += [("agent", r) for r in rates]
    if args.floor:
        nices = [int(n) for n in args.floor.split(",") if n]
        tested += [(f"floor{n}" if n else "floor", r) for n in nices for r in rates]
    if args.py_spy:
        tested += [("py-spy", r) for r in rates]
    names = {label(t): t for t in [("off", 0.0), *tested]}
    os.environ["BENCH_WEBHOST_THREADS"] = str(args.threads)  # bench/webhost.py reads it
    server_cpu, others, where = pick_cpus()
    if server_cpu is not None:
        os.sched_setaffinity(0, others)
    load = Load(args.load, args.connections, threads=len(others))
    print(f"load average (1 min) at the start: {load_average():.2f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-profiler-") as name:
        tmp = Path(name)
        km = generate(tmp / "keys")

        @contextlib.contextmanager
        def block(_b: int) -> Iterator[Callable[[str], Segment]]:
            host = WebHost(km.directory, args.tasks, server_cpu, tmp / "webhost.log")
            try:
                load.run(host.info["url"], 2.0)  # warm-up, not recorded
                node = connect(
                    host.info["agent"],
                    token_file=str(km.operator_token),
                    fingerprint=km.fingerprint,
                )
                with node:
                    yield lambda n: measure_segment(host, node, names[n], load, args, tmp)
            finally:
                host.close()

        results, loads = run_blocks(
            block, "off", [label(t) for t in tested], args.blocks, args.rounds
        )
    header = (
        f"profiler overhead: {args.blocks} blocks (fresh servers) x {args.rounds} ABBA rounds "
        f"of {args.segment:g} s segments, a warm-up segment of each setting discarded per "
        f"block; {load.name}\n{where}; {args.tasks} idle tasks, {args.threads} idle threads"
    )
    targets = [Target("rps", TARGET_RPS, True), Target("p99", TARGET_P99, False)]
    targets.append(Target("per_cpu", TARGET_RPS, True))  # capacity; see bench/paired.py
    report(
        results,
        {n: n for n in results},
        targets,
        loads,
        header,
        "samples/s",
        "off (A/A)" if args.aa else None,
    )
    print(
        "samples/s: the agent's sampling rounds a second (each reads every thread); py-spy's "
        "stack samples a second over all threads (its own Samples: count)"
    )


if __name__ == "__main__":
    main()
