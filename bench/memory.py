"""Memory introspection cost: object census and tracemalloc on hosts with many live objects.

    python bench/memory.py [--objects 100000 1000000] [--repeat 3] [--grow N]

For each size, starts bench/memhost.py (that many live ``Payload`` instances, the agent,
a 1 ms loop-stall monitor) and connects as operator. Host-loop stalls are the worst gap
the monitor saw between a ``reset`` sent just before a call and a ``report`` just after.

1. Census: ``node.census(50)`` ``--repeat`` times: agent time (``Census.seconds``, median
   and max), the longest single GIL hold (``hold_seconds``: the gc.get_objects call), the
   round trip the client sees, whether it sampled, and the worst host-loop stall. Then a
   baseline census and ``--repeat`` growth censuses against it.
2. tracemalloc: the host allocates ``--grow`` Payloads untraced (for reference; default a
   tenth of its live objects, each ~3 traced allocations on CPython 3.11), then
   ``node.tracemalloc_start(10)`` (it measures the allocation slowdown) and the host
   allocates ``--grow`` more, traced. Then ``--repeat`` times each ``tracemalloc_top(20)``
   and ``tracemalloc_diff(20)``: agent time (``TraceStats.seconds``), round trip, traces
   in the snapshot, worst host-loop stall; then ``node.memory().tracemalloc``: traced
   bytes, tracemalloc's own overhead, the measured slowdown; then ``tracemalloc_stop()``.

Targets (2-core machine): census of 1M objects <= 1 s of agent time (every repeat); no
host-loop stall > 20 ms during any census (plain, baseline or growth). tracemalloc has no
target: its figures are reported only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from observer.client import Node, connect  # noqa: E402
from observer.keygen import KeyMaterial, generate  # noqa: E402

T = TypeVar("T")
CENSUS_TARGET_OBJECTS = 1_000_000
CENSUS_TARGET_SECONDS = 1.0
STALL_TARGET_SECONDS = 0.020
MB = 1e6
NO_RATIO = ("stall", "slowdown")  # rows where last/first says nothing


class Host:
    """bench/memhost.py in a subprocess; every stdin command answers one stdout line."""

    def __init__(self, keys: Path, objects: int) -> None:
        argv = [sys.executable, str(ROOT / "bench" / "memhost.py"), str(keys)]
        argv += ["--objects", str(objects)]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, bufsize=1
        )
        line = self.proc.stdout.readline()
        if not line.startswith("agent: "):
            self.close()
            raise SystemExit(f"host failed to start: {line!r}")
        self.address = line.split()[1]

    def command(self, line: str) -> str:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        if not answer or answer.startswith("unknown"):
            raise RuntimeError(f"host answered {answer!r} to {line!r}")
        return answer

    def stall(self) -> float:
        return float(self.command("report").split()[1])

    def grow(self, n: int) -> float:
        """Seconds for the host to allocate ``n`` more live objects."""
        started = time.perf_counter()
        self.command(f"grow {n}")
        return time.perf_counter() - started

    def timed(self, call: Callable[[], T]) -> tuple[T, float, float]:
        """(result, round trip seconds, worst host-loop stall seconds) of one call."""
        self.command("reset")
        started = time.perf_counter()
        result = call()
        rtt = time.perf_counter() - started
        return result, rtt, self.stall()

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass
class Result:
    """Figures for one host size; ``census`` and ``trace`` map row label -> value."""

    objects: int
    census: dict[str, Any]
    trace: dict[str, Any]
    census_agent_max: float  # seconds, worst plain census
    census_stall_max: float  # seconds, worst stall during any census
    start_message: str


def census_figures(host: Host, node: Node, repeat: int) -> tuple[dict[str, Any], float, float]:
    """Rows for the census table, the worst plain-census agent time, the worst stall."""
    node.census(1)  # warm up: first call through every code path
    agent, holds, rtts, stalls, sampled, objects = [], [], [], [], False, 0
    for _ in range(repeat):
        census, rtt, stall = host.timed(lambda: node.census(50))
        agent.append(census.seconds)
        holds.append(census.hold_seconds)
        rtts.append(rtt)
        stalls.append(stall)
        sampled = sampled or census.sampled
        objects = census.objects
    base, base_rtt, base_stall = host.timed(lambda: node.census(50, baseline=True))
    grow_agent, grow_rtts, grow_stalls = [], [], []
    for _ in range(repeat):
        census, rtt, stall = host.timed(lambda: node.census(50, growth=True))
        grow_agent.append(census.seconds)
        grow_rtts.append(rtt)
        grow_stalls.append(stall)
    rows = {
        "gc objects": objects,
        "agent ms (median)": statistics.median(agent) * 1000,
        "agent ms (max)": max(agent) * 1000,
        "hold ms (max)": max(holds) * 1000,
        "round trip ms (median)": statistics.median(rtts) * 1000,
        "round trip ms (max)": max(rtts) * 1000,
        "sampled": "yes" if sampled else "no",
        "stall ms (worst)": max(stalls) * 1000,
        "stall ms (median)": statistics.median(stalls) * 1000,
        "baseline agent ms": base.seconds * 1000,
        "baseline round trip ms": base_rtt * 1000,
        "baseline stall ms": base_stall * 1000,
        "growth agent ms (median)": statistics.median(grow_agent) * 1000,
        "growth agent ms (max)": max(grow_agent) * 1000,
        "growth round trip ms (median)": statistics.median(grow_rtts) * 1000,
        "growth stall ms (worst)": max(grow_stalls) * 1000,
    }
    return rows, max(agent), max([*stalls, base_stall, *grow_stalls])


def trace_figures(host: Host, node: Node, repeat: int, grow: int) -> tuple[dict[str, Any], str]:
    """Rows for the tracemalloc table and the message tracemalloc_start answered."""
    untraced = host.grow(grow)
    started, start_rtt, start_stall = host.timed(lambda: node.tracemalloc_start(10))
    if not started.ok:
        raise RuntimeError(f"tracemalloc_start failed: {started.message}")
    traced = host.grow(grow)
    out: dict[str, Any] = {
        "grow": grow,
        "host grow ms (untraced)": untraced * 1000,
        "host grow ms (traced)": traced * 1000,
        "host grow slowdown": traced / untraced,
        "start round trip ms": start_rtt * 1000,
        "start stall ms": start_stall * 1000,
    }
    for name, call in (("top", node.tracemalloc_top), ("diff", node.tracemalloc_diff)):
        agent, holds, rtts, stalls, traces = [], [], [], [], 0
        for _ in range(repeat):
            stats, rtt, stall = host.timed(lambda call=call: call(20))
            agent.append(stats.seconds)
            holds.append(stats.hold_seconds)
            rtts.append(rtt)
            stalls.append(stall)
            traces = stats.traces
        out[f"{name} traces"] = traces
        out[f"{name} agent ms (median)"] = statistics.median(agent) * 1000
        out[f"{name} agent ms (max)"] = max(agent) * 1000
        out[f"{name} hold ms (max)"] = max(holds) * 1000
        out[f"{name} round trip ms (median)"] = statistics.median(rtts) * 1000
        out[f"{name} stall ms (worst)"] = max(stalls) * 1000
        out[f"{name} stall ms (median)"] = statistics.median(stalls) * 1000
    status = node.memory().tracemalloc
    out["traced MB"] = status.current / MB
    out["overhead MB"] = status.overhead / MB
    out["slowdown (agent)"] = status.slowdown if status.slowdown is not None else float("nan")
    stopped, stop_rtt, stop_stall = host.timed(node.tracemalloc_stop)
    if not stopped.ok:
        raise RuntimeError(f"tracemalloc_stop failed: {stopped.message}")
    out["stop round trip ms"] = stop_rtt * 1000
    out["stop stall ms"] = stop_stall * 1000
    return out, started.message


def measure(km: KeyMaterial, objects: int, repeat: int, grow: int) -> Result:
    host = Host(km.directory, objects)
    try:
        node = connect(
            host.address, token_file=km.operator_token, fingerprint=km.fingerprint, timeout=120
        )
        with node:
            census, agent_max, stall_max = census_figures(host, node, repeat)
            trace, message = trace_figures(host, node, repeat, grow)
        return Result(objects, census, trace, agent_max, stall_max, message)
    finally:
        host.close()


def cell(value: Any) -> str:
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def table(title: str, objects: list[int], rows: list[dict[str, Any]]) -> None:
    """One row per figure, one column per host size, then last/first (not for stalls)."""
    ratio = len(rows) > 1
    head = f"{title:<32}" + "".join(f"{cell(n):>14}" for n in objects)
    print(head + (f"{'ratio':>9}" if ratio else ""))
    for key in rows[0]:
        values = [r[key] for r in rows]
        line = f"  {key:<30}" + "".join(f"{cell(v):>14}" for v in values)
        numeric = all(isinstance(v, int | float) for v in values)
        if ratio and numeric and values[0] and not any(w in key for w in NO_RATIO):
            line += f"{values[-1] / values[0]:>8.1f}x"
        print(line)


def verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("met" if ok else "NOT MET")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--objects", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--grow",
        type=int,
        default=None,
        help="objects the host allocates before and after tracemalloc starts "
        "(default: a tenth of the host's objects)",
    )
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        km = generate(Path(tmp) / "keys", hosts=("127.0.0.1", "localhost"))
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus; repeat {args.repeat}")
        for n in args.objects:
            grow = args.grow if args.grow is not None else max(1, n // 10)
            results.append(measure(km, n, args.repeat, grow))
    objects = [r.objects for r in results]
    print()
    table("census (live host objects)", objects, [r.census for r in results])
    print()
    table("tracemalloc, 10 frames", objects, [r.trace for r in results])
    for r in results:
        print(f"  start at {r.objects:,}: {r.start_message}")
    print()
    big = [r for r in results if r.objects >= CENSUS_TARGET_OBJECTS]
    agent_ok = all(r.census_agent_max <= CENSUS_TARGET_SECONDS for r in big) if big else None
    worst_agent = max((r.census_agent_max for r in big), default=0.0)
    worst_stall = max(r.census_stall_max for r in results)
    print("targets")
    print(
        f"  census of {CENSUS_TARGET_OBJECTS:,} objects <= {CENSUS_TARGET_SECONDS:g} s agent "
        f"time: worst {worst_agent * 1000:.0f} ms -> {verdict(agent_ok)}"
    )
    print(
        f"  host-loop stall during any census <= {STALL_TARGET_SECONDS * 1000:.0f} ms: "
        f"worst {worst_stall * 1000:.2f} ms -> "
        f"{verdict(worst_stall <= STALL_TARGET_SECONDS)}"
    )
    print("  tracemalloc: no target (figures above)")


if __name__ == "__main__":
    main()
