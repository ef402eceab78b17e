"""What the always-on stall catcher costs a real server.

    python bench/stalls.py [--runs 5] [--duration 10] [--threshold 0.1] [--tasks 100]

The aiohttp server of bench/overhead.py (bench/webhost.py, our agent embedded, pinned to
one core; the load generator on the others, wrk when installed), started afresh for each
run with the stall catcher on (``OBSERVER_AGENT_STALL_THRESHOLD=--threshold``) or off
(``=0``). Runs alternate on/off, the order swapped every run; no observer is connected.

Reported: requests/s, p50 and p99 latency (median over the runs, with their range), the
agent threads' CPU as a share of one core, and the stalls the catcher recorded under load
(a request burst can delay a heartbeat past the threshold: those are real stalls).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.overhead import Load, Runs, WebHost, pick_cpus  # noqa: E402
from bench.paired import med  # noqa: E402
from observer.client import connect  # noqa: E402
from observer.keygen import KeyMaterial, generate  # noqa: E402

VARIABLE = "OBSERVER_AGENT_STALL_THRESHOLD"


@contextlib.contextmanager
def server(
    km: KeyMaterial, threshold: float, tasks: int, cpu: int | None, log: Path
) -> Iterator[WebHost]:
    """bench/webhost.py with the stall catcher at ``threshold`` (0 = off): WebHost hands
    our environment to the server, so the variable is set around its start only."""
    before = os.environ.get(VARIABLE)
    os.environ[VARIABLE] = repr(threshold)
    try:
        host = WebHost(km.directory, tasks, cpu, log)
    finally:
        if before is None:
            os.environ.pop(VARIABLE, None)
        else:
            os.environ[VARIABLE] = before
    try:
        yield host
    finally:
        host.close()


def stalls_seen(host: WebHost, km: KeyMaterial) -> tuple[int, float]:
    """How many stalls the server's agent recorded, and the longest (seconds)."""
    with connect(
        host.info["agent"], token_file=str(km.operator_token), fingerprint=km.fingerprint
    ) as node:
        listing = node.stalls()
    return listing.total, max((e.duration for e in listing.stalls), default=0.0)


def one_run(
    km: KeyMaterial,
    threshold: float,
    load: Load,
    args: argparse.Namespace,
    cpu: int | None,
    runs: Runs,
    tmp: Path,
) -> None:
    with server(km, threshold, args.tasks, cpu, tmp / "webhost.log") as host:
        load.run(host.info["url"], min(2.0, args.duration))  # warm-up, not recorded
        before, t0 = host.cpu(), time.perf_counter()
        result = load.run(host.info["url"], args.duration)
        after, t1 = host.cpu(), time.perf_counter()
        agent = (after["process"] - after["host"]) - (before["process"] - before["host"])
        runs.rps.append(result["rps"])
        runs.p50.append(result["p50"])
        runs.p99.append(result["p99"])
        runs.agent_cpu.append(max(0.0, agent) / (t1 - t0))
        if result.get("errors"):
            runs.errors.append(f"{int(result['errors'])} failed requests")
        if threshold > 0:
            count, longest = stalls_seen(host, km)
            runs.polls.append(count)
            runs.poll_seconds.append(longest)


def report(on: Runs, off: Runs, load: Load, where: str, args: argparse.Namespace) -> None:
    print()
    print(f"stall catcher overhead: {args.runs} runs x {args.duration:.0f} s each, {load.name}")
    print(f"{where}; {args.tasks} idle tasks; threshold {args.threshold * 1000:.0f} ms")
    with contextlib.suppress(OSError):
        print(f"load average at the end: {os.getloadavg()[0]:.2f} (1 min)")
    print(f"{'':<10}{'requests/s':>24}{'p50 ms':>22}{'p99 ms':>22}{'agent CPU %':>20}")
    for name, runs in (("off", off), ("on", on)):
        print(
            f"{name:<10}{med(runs.rps, 1, 0):>24}{med(runs.p50, 1000, 2):>22}"
            f"{med(runs.p99, 1000, 2):>22}{med(runs.agent_cpu, 100, 2):>20}"
        )
    if on.rps and off.rps:
        rps = statistics.median(on.rps) / statistics.median(off.rps)
        p99 = statistics.median(on.p99) / statistics.median(off.p99)
        print(f"on/off: requests/s x{rps:.3f}, p99 x{p99:.3f}")
    if on.polls:
        print(
            f"stalls recorded under load per run: {on.polls} "
            f"(longest {max(on.poll_seconds) * 1000:.0f} ms)"
        )
    for name, runs in (("off", off), ("on", on)):
        for error in runs.errors:
            print(f"{name}: {error}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5, help="runs of each setting")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load a run")
    parser.add_argument("--threshold", type=float, default=0.1, help="seconds (on runs)")
    parser.add_argument("--tasks", type=int, default=100, help="idle tasks in the server")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--load", choices=["auto", "wrk", "python"], default="auto")
    args = parser.parse_args()
    if importlib.util.find_spec("aiohttp") is None:
        raise SystemExit("bench/stalls.py needs aiohttp: pip install -e '.[bench]'")
    server_cpu, others, where = pick_cpus()
    if server_cpu is not None:
        os.sched_setaffinity(0, others)
    load = Load(args.load, args.connections, threads=len(others))
    on, off = Runs(), Runs()
    with tempfile.TemporaryDirectory(prefix="bench-stalls-") as name:
        tmp = Path(name)
        km = generate(tmp / "keys")
        for r in range(args.runs):
            order = [(args.threshold, on), (0.0, off)]
            for threshold, runs in order if r % 2 == 0 else order[::-1]:
                label = "on" if threshold else "off"
                print(f"run {r + 1}/{args.runs}: stall catcher {label} ...", flush=True)
                try:
                    one_run(km, threshold, load, args, server_cpu, runs, tmp)
                except Exception as exc:  # one bad run must not lose the others
                    runs.errors.append(f"a run failed: {type(exc).__name__}: {exc}")
    report(on, off, load, where, args)


if __name__ == "__main__":
    main()
