"""Client and CLI figures: decode cost per task, `ps --json` end to end, fixed cost of a call.

    python bench/cli.py [--tasks 10000 100000] [--json-runs 3] [--calls 5]

Prints, against real hosts (bench/host.py) with real TLS and tokens:
  - decode: schema.from_wire of a whole snapshot, per task (wall and CPU, GC paused as the
    client does), next to the row-by-row decoder it replaced, at each --tasks count;
  - `observer ps --json` of the largest count, end to end (median of --json-runs), with
    the agent's own round trip for the same snapshot beside it;
  - the fixed cost of a CLI call: `observer ps` against a host with 10 tasks (median of
    --calls), its CPU, and `python -c pass` for the interpreter's own start;
  - import time of that call (`-X importtime`, top-level modules summed), largest first.

The CLI runs with bytecode caching on (a private PYTHONPYCACHEPREFIX, one warm-up call),
as an installed observer would. The machine this was written on is shared and loaded:
every figure is a median with its spread (min-max), and the load average is printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent import schema  # noqa: E402
from observer.client import connect  # noqa: E402
from observer.gcpause import gc_paused  # noqa: E402
from observer.keygen import KeyMaterial, generate  # noqa: E402


def start_host(keys: Path, tasks: int) -> tuple[subprocess.Popen[str], str]:
    """bench/host.py with ``tasks`` sleeping tasks and 5 idle threads; (process, address)."""
    argv = [sys.executable, str(ROOT / "bench" / "host.py"), str(keys), "--tasks", str(tasks)]
    argv += ["--threads", "5", "--no-monitor"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, bufsize=1
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("agent: "):
        proc.kill()
        raise SystemExit(f"host failed to start: {line!r}")
    return proc, line.split()[1]


def stop(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait()


def spread(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    """'median (min-max)' of ``values`` times ``scale``."""
    v = sorted(x * scale for x in values)
    return f"{statistics.median(v):.{digits}f} ({v[0]:.{digits}f}-{v[-1]:.{digits}f})"


def timed(fn: Callable[[], Any]) -> tuple[float, float]:
    """(wall, CPU) seconds of one call of ``fn`` with the GC paused."""
    with gc_paused():
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    del result
    gc.collect()
    return wall, cpu


def decode_figures(km: KeyMaterial, tasks: int, repeat: int) -> None:
    proc, address = start_host(km.directory, tasks)
    try:
        with connect(
            address, token_file=km.operator_token, fingerprint=km.fingerprint, timeout=120
        ) as node:
            data = node._raw("snapshot", tasks + 100, "")  # the envelope's data: JSON lists
        rows = data[[f.name for f in dataclasses.fields(schema.Snapshot)].index("tasks")]
        count = len(rows)
        assert count >= tasks, (count, tasks)
        row = schema._decoder(schema.TaskInfo)  # the generic per-row decoder
        fast = [timed(lambda: schema.from_wire(schema.Snapshot, data)) for _ in range(repeat)]
        slow = [timed(lambda: tuple([row(r) for r in rows])) for _ in range(repeat)]
        us = 1e6 / count
        print(
            f"decode {count:>7} tasks: from_wire(Snapshot) wall {spread([w for w, _ in fast], us)}"
            f" us/task, CPU {spread([c for _, c in fast], us)};"
            f" the row-by-row decoder it replaced: wall {spread([w for w, _ in slow], us)},"
            f" CPU {spread([c for _, c in slow], us)}"
        )
    finally:
        stop(proc)


def cli_env(cache: str) -> dict[str, str]:
    """The environment of an installed CLI: bytecode cached (here in a private dir)."""
    env = dict(os.environ, PYTHONPYCACHEPREFIX=cache)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("OBSERVER_TOKEN", None)
    return env


def run_cli(argv: list[str], env: dict[str, str], out: Any) -> tuple[float, float]:
    """(wall, CPU of the child) seconds of one CLI process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        argv, stdout=out, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT, timeout=300
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def ps_json_figures(km: KeyMaterial, tasks: int, runs: int, env: dict[str, str]) -> None:
    proc, address = start_host(km.directory, tasks)
    creds = ["--token-file", str(km.operator_token), "--fingerprint", km.fingerprint]
    argv = [sys.executable, "-m", "observer", "ps", address, *creds, "--json"]
    try:
        with tempfile.TemporaryFile("w") as out:
            run_cli(argv, env, out)  # warm-up: bytecode cached, the agent's ids registered
            results = [run_cli([*argv, "--timeout", "120"], env, out) for _ in range(runs)]
        with connect(
            address, token_file=km.operator_token, fingerprint=km.fingerprint, timeout=120
        ) as node:
            rtts, collects = [], []
            for _ in range(runs):
                snap = node.snapshot(limit=tasks + 100)
                rtts.append(node.last_rtt or 0.0)
                collects.append(snap.collect_seconds)
        print(
            f"`observer ps --json`, {tasks} tasks, end to end: {spread([w for w, _ in results])} s"
            f" wall, CLI process CPU {spread([c for _, c in results])} s;"
            f" of the wall, the agent's snapshot round trip {spread(rtts)} s"
            f" (collecting {spread(collects)} s)"
        )
    finally:
        stop(proc)


def fixed_cost_figures(km: KeyMaterial, calls: int, env: dict[str, str]) -> None:
    proc, address = start_host(km.directory, 10)
    creds = ["--token-file", str(km.operator_token), "--fingerprint", km.fingerprint]
    argv = [sys.executable, "-m", "observer", "ps", address, *creds]
    try:
        run_cli(argv, env, subprocess.DEVNULL)  # warm-up: bytecode cached
        results = [run_cli(argv, env, subprocess.DEVNULL) for _ in range(calls)]
        bare = [run_cli([sys.executable, "-c", "pass"], env, subprocess.DEVNULL) for _ in results]
        print(
            "fixed cost, `observer ps` of a 10-task host: "
            f"{spread([w for w, _ in results], 1000, 0)} ms wall,"
            f" CPU {spread([c for _, c in results], 1000, 0)} ms;"
            f" `python -c pass` {spread([w for w, _ in bare], 1000, 0)} ms wall,"
            f" CPU {spread([c for _, c in bare], 1000, 0)} ms"
        )
        totals, per_module = [], {}
        for _ in range(calls):
            done = subprocess.run(
                [sys.executable, "-X", "importtime", "-m", "observer", "ps", address, *creds],
                capture_output=True,
                text=True,
                env=env,
                cwd=ROOT,
                timeout=120,
            )
            top = {}
            for line in done.stderr.splitlines():
                m = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\S.*)$", line)
                if m:  # no indent after "| ": imported by the program itself
                    top[m.group(2)] = int(m.group(1)) / 1e6
            totals.append(sum(top.values()))
            for name, seconds in top.items():
                per_module.setdefault(name, []).append(seconds)
        largest = sorted(per_module.items(), key=lambda kv: -statistics.median(kv[1]))[:6]
        print(
            f"import time of that call (-X importtime, top level summed): "
            f"{spread(totals, 1000, 0)} ms; largest: "
            + ", ".join(f"{n} {statistics.median(v) * 1000:.0f}" for n, v in largest)
        )
        cryptography = any(name.startswith("cryptography") for name in per_module)
        print(f"  imports cryptography: {cryptography}; imports PyQt6: {'PyQt6' in per_module}")
    finally:
        stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=5, help="decode timings per count")
    parser.add_argument("--json-runs", type=int, default=3)
    parser.add_argument("--calls", type=int, default=5)
    args = parser.parse_args()
    load = os.getloadavg()
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, load average "
        f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f}: a shared machine, figures are "
        "median (min-max)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        km = generate(Path(tmp) / "keys")
        env = cli_env(str(Path(tmp) / "pycache"))
        for n in args.tasks:
            decode_figures(km, n, args.repeat)
        ps_json_figures(km, max(args.tasks), args.json_runs, env)
        fixed_cost_figures(km, args.calls, env)
    load = os.getloadavg()
    print(f"load average at the end {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")


if __name__ == "__main__":
    main()
