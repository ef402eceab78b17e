"""What a running sampling profile costs a real server, at several rates.

    python bench/profiler.py [--runs 3] [--duration 5] [--rates 100,250,1000] [--tasks 1000]

The aiohttp server of bench/overhead.py (bench/webhost.py, our agent embedded, pinned to
one core; the load generator on the others, wrk when installed), started afresh for each
run. In a run at rate R an observer starts a profile at R Hz just before the load and reads
it after; "off" runs start none. The settings take turns within each round, the order
rotated every round.

``--threads N`` adds N idle threads 20 calls deep to the server (what the sampler reads
besides the loop). ``--py-spy PATH`` also runs, for each rate, ``py-spy record`` at that
rate on the same server (its default, blocking mode: it stops the process to read each
sample; needs ptrace permission), interleaved with the others.

``--tick`` measures instead how long one sampling round holds the GIL in this process,
with 50 threads standing 30 calls deep (median and max over 300 rounds).

Reported: requests/s, p50 and p99 (median over the runs, with their range), the agent
threads' CPU as a share of one core, and the sampling rounds the profiler achieved a
second (it skips rounds it cannot keep up with rather than bursting).
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.overhead import Load, Runs, WebHost, med, pick_cpus  # noqa: E402
from observer.client import connect  # noqa: E402
from observer.keygen import KeyMaterial, generate  # noqa: E402


def py_spy(path: str, pid: int, rate: float, seconds: float, out: Path) -> subprocess.Popen:
    """``py-spy record`` on ``pid`` at ``rate`` Hz for ``seconds`` (its default blocking
    mode), writing collapsed stacks to ``out``."""
    argv = [path, "record", "--pid", str(pid), "--rate", str(int(rate))]
    argv += ["--duration", str(int(seconds + 0.999)), "--format", "raw", "--output", str(out)]
    argv += ["--idle"]  # every sample kept, as the agent's profiler keeps them
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def one_run(
    km: KeyMaterial,
    setting: tuple[str, float],
    load: Load,
    args: argparse.Namespace,
    cpu: int | None,
    runs: Runs,
    tmp: Path,
) -> None:
    tool, rate = setting
    host = WebHost(km.directory, args.tasks, cpu, tmp / "webhost.log")
    spy = None
    try:
        load.run(host.info["url"], min(2.0, args.duration))  # warm-up, not recorded
        node = connect(
            host.info["agent"], token_file=str(km.operator_token), fingerprint=km.fingerprint
        )
        with node:
            if tool == "agent":
                node.profile_start(args.duration + 2.0, rate)
            elif tool == "py-spy":
                spy = py_spy(args.py_spy, host.info["pid"], rate, args.duration + 1.0, tmp / "s")
                time.sleep(0.5)  # py-spy attaches before the load starts
            before, t0 = host.cpu(), time.perf_counter()
            result = load.run(host.info["url"], args.duration)
            after, t1 = host.cpu(), time.perf_counter()
            if tool == "agent":
                profile = node.profile_stop()
                runs.polls.append(profile.ticks / max(profile.elapsed, 1e-9))
            if spy is not None:
                err, _none = spy.communicate(timeout=60)
                samples = re.search(r"Samples: (\d+)", err or "")
                if samples:
                    runs.polls.append(int(samples.group(1)) / (args.duration + 1.0))
                elif spy.returncode:
                    runs.errors.append(f"py-spy failed: {(err or '').strip()[-200:]}")
        agent = (after["process"] - after["host"]) - (before["process"] - before["host"])
        runs.rps.append(result["rps"])
        runs.p50.append(result["p50"])
        runs.p99.append(result["p99"])
        runs.agent_cpu.append(max(0.0, agent) / (t1 - t0))
        if result.get("errors"):
            runs.errors.append(f"{int(result['errors'])} failed requests")
    finally:
        if spy is not None and spy.poll() is None:
            spy.kill()
            spy.wait()
        host.close()


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


def label(setting: tuple[str, float]) -> str:
    tool, rate = setting
    return "off" if tool == "off" else f"{tool} {rate:g} Hz"


def report(
    results: dict[tuple[str, float], Runs], load: Load, where: str, args: argparse.Namespace
) -> None:
    print()
    print(f"profiler overhead: {args.runs} runs x {args.duration:.0f} s each, {load.name}")
    print(f"{where}; {args.tasks} idle tasks, {args.threads} idle threads")
    with contextlib.suppress(OSError):
        print(f"load average at the end: {os.getloadavg()[0]:.2f} (1 min)")
    print(
        f"{'setting':<18}{'requests/s':>24}{'p50 ms':>22}{'p99 ms':>22}{'agent CPU %':>20}"
        f"{'samples/s':>12}"
    )
    off = results[("off", 0.0)]
    for setting, runs in results.items():
        rounds = f"{statistics.median(runs.polls):.0f}" if runs.polls else "-"
        print(
            f"{label(setting):<18}{med(runs.rps, 1, 0):>24}{med(runs.p50, 1000, 2):>22}"
            f"{med(runs.p99, 1000, 2):>22}{med(runs.agent_cpu, 100, 2):>20}{rounds:>12}"
        )
    print(
        "samples/s: the agent's sampling rounds a second (each reads every thread); py-spy's "
        "stack samples a second over all threads (its own Samples: count)"
    )
    for setting, runs in results.items():
        if setting[0] != "off" and runs.rps and off.rps:
            rps = statistics.median(runs.rps) / statistics.median(off.rps)
            p99 = statistics.median(runs.p99) / statistics.median(off.p99)
            print(f"{label(setting)} / off: requests/s x{rps:.3f}, p99 x{p99:.3f}")
        for error in runs.errors:
            print(f"{label(setting)}: {error}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3, help="runs of each setting")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of load a run")
    parser.add_argument("--rates", default="100,250,1000", help="sampling rates, Hz")
    parser.add_argument("--tasks", type=int, default=1000, help="idle tasks in the server")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--load", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--threads", type=int, default=0, help="idle threads in the server")
    parser.add_argument("--py-spy", metavar="PATH", help="also run py-spy record at each rate")
    parser.add_argument("--tick", action="store_true", help="time one sampling round only")
    args = parser.parse_args()
    if args.tick:
        tick_cost()
        return
    if importlib.util.find_spec("aiohttp") is None:
        raise SystemExit("bench/profiler.py needs aiohttp: pip install -e '.[bench]'")
    rates = [float(r) for r in args.rates.split(",") if r]
    settings = [("off", 0.0)] + [("agent", r) for r in rates]
    if args.py_spy:
        settings += [("py-spy", r) for r in rates]
    os.environ["BENCH_WEBHOST_THREADS"] = str(args.threads)  # bench/webhost.py reads it
    server_cpu, others, where = pick_cpus()
    if server_cpu is not None:
        os.sched_setaffinity(0, others)
    load = Load(args.load, args.connections, threads=len(others))
    results = {setting: Runs() for setting in settings}
    with tempfile.TemporaryDirectory(prefix="bench-profiler-") as name:
        tmp = Path(name)
        km = generate(tmp / "keys")
        for r in range(args.runs):
            order = settings[r % len(settings) :] + settings[: r % len(settings)]
            for setting in order:
                print(f"run {r + 1}/{args.runs}: {label(setting)} ...", flush=True)
                try:
                    one_run(km, setting, load, args, server_cpu, results[setting], tmp)
                except Exception as exc:  # one bad run must not lose the others
                    results[setting].errors.append(f"a run failed: {type(exc).__name__}: {exc}")
    report(results, load, where, args)


if __name__ == "__main__":
    main()
