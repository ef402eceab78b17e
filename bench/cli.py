"""Client and CLI figures: client CPU per task, `ps --json` end to end, fixed cost of a call.

    python bench/cli.py [--tasks 10000 100000] [--runs 5] [--calls 7] [--compare DIR]

Prints, against real hosts (bench/host.py, this checkout's agent) with real TLS and tokens:
  - client CPU per task of a complete listing (``Node.snapshot`` on a node holding no
    tasks yet), split into the envelope's decode (decompress + JSON, ``decode_envelope``)
    and the rest (rows -> TaskInfo records, rpyc, TLS), at each --tasks count;
  - `observer ps --json` of the largest count, end to end (wall and the CLI's CPU), with
    the agent's round trip for the same snapshot beside it;
  - the fixed cost of a CLI call: `observer ps` against a host with 10 tasks, its CPU,
    and `python -c pass` for the interpreter's own start (site included);
  - import time of that call (`-X importtime`, top-level modules summed), largest first,
    and whether it imported cryptography or PyQt6.

``--compare DIR`` runs the client and CLI of another checkout (say a ``git worktree`` of
main) too, each measurement alternating between the two, so both see the same load. The
CLI runs with bytecode caching on (a private PYTHONPYCACHEPREFIX, a warm-up call first),
as an installed observer would. The machine this was written on is shared and loaded:
every figure is a median with its spread (min-max), and the load average is printed.
"""

from __future__ import annotations

import argparse
import json
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

# The client-side child: `bench/cli.py --client-child ROOT ADDRESS KEYS FINGERPRINT RUNS`
# measures ROOT's observer.client (imported from ROOT) and prints one JSON line.
CHILD = "--client-child"


def client_child(root: str, address: str, keys: str, fingerprint: str, runs: int) -> None:
    """Complete listings through ``root``'s client: CPU per call, and the part of it spent
    in ``decode_envelope`` (wrapped where observer.client looks it up)."""
    sys.path.insert(0, root)
    import gc

    import observer.client as client
    from observer.client import connect

    spent = [0.0]
    decode = client.decode_envelope

    def timed_decode(payload: Any, *args: Any) -> Any:
        started = time.process_time()
        try:
            return decode(payload, *args)
        finally:
            spent[0] += time.process_time() - started

    client.decode_envelope = timed_decode
    token = f"{keys}/operator.token"
    out: dict[str, Any] = {"cpu": [], "decode": [], "rtt": [], "collect": [], "tasks": 0}
    with connect(address, token_file=token, fingerprint=fingerprint, timeout=300) as node:
        node.snapshot(limit=10_000_000)  # warm-up: decoders built, the agent's table made
        for _ in range(runs):
            node._tasks = type(node._tasks)()  # hold nothing: the agent sends every task
            gc.collect()
            spent[0] = 0.0
            started = time.process_time()
            snap = node.snapshot(limit=10_000_000)
            out["cpu"].append(time.process_time() - started)
            out["decode"].append(spent[0])
            out["rtt"].append(node.last_rtt or 0.0)
            out["collect"].append(snap.collect_seconds)
            out["tasks"] = len(snap.tasks)
            del snap
    print(json.dumps(out))


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


def cli_env(cache: str) -> dict[str, str]:
    """The environment of an installed CLI: bytecode cached (here in a private dir)."""
    env = dict(os.environ, PYTHONPYCACHEPREFIX=cache)
    for name in ("PYTHONDONTWRITEBYTECODE", "OBSERVER_TOKEN", "PYTHONPATH"):
        env.pop(name, None)
    return env


def run_cli(argv: list[str], env: dict[str, str], out: Any, root: Path) -> tuple[float, float]:
    """(wall, CPU of the child) seconds of one CLI process run in ``root`` (whose packages
    then come first on sys.path)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        argv, stdout=out, stderr=subprocess.PIPE, text=True, env=env, cwd=root, timeout=300
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed in {root}: {done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def interleaved(
    roots: list[Path], runs: int, measure: Callable[[Path], Any]
) -> dict[Path, list[Any]]:
    """``runs`` rounds, each measuring every root in turn."""
    results: dict[Path, list[Any]] = {root: [] for root in roots}
    for _ in range(runs):
        for root in roots:
            results[root].append(measure(root))
    return results


def label(root: Path) -> str:
    return "this checkout" if root == ROOT else str(root)


def client_figures(roots: list[Path], keys: Path, fp: str, tasks: int, runs: int) -> None:
    proc, address = start_host(keys, tasks)
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    try:

        def measure(root: Path) -> dict[str, Any]:
            argv = [sys.executable, str(Path(__file__).resolve()), CHILD, str(root), address]
            argv += [str(keys), fp, "1"]
            done = subprocess.run(
                argv, capture_output=True, text=True, env=env, cwd="/", timeout=600
            )
            if done.returncode != 0:
                raise SystemExit(f"client child failed in {root}: {done.stderr}")
            return json.loads(done.stdout)

        results = interleaved(roots, runs, measure)
        for root, rows in results.items():
            count = rows[0]["tasks"]
            us = 1e6 / count
            cpu = [r["cpu"][0] for r in rows]
            dec = [r["decode"][0] for r in rows]
            rest = [c - d for c, d in zip(cpu, dec, strict=True)]
            print(
                f"client, complete listing of {count:>7} tasks ({label(root)}): CPU"
                f" {spread(cpu, us)} us/task = envelope decode {spread(dec, us)}"
                f" + rows to records, rpyc, TLS {spread(rest, us)}"
            )
    finally:
        stop(proc)


def ps_json_figures(
    roots: list[Path], keys: Path, fp: str, tasks: int, runs: int, env: dict[str, str]
) -> None:
    proc, address = start_host(keys, tasks)
    creds = ["--token-file", str(keys / "operator.token"), "--fingerprint", fp]
    argv = [sys.executable, "-m", "observer", "ps", address, *creds, "--json", "--timeout", "300"]
    try:
        with tempfile.TemporaryFile("w") as out:
            for root in roots:
                run_cli(argv, env, out, root)  # warm-up: bytecode cached, the agent's table
            results = interleaved(roots, runs, lambda root: run_cli(argv, env, out, root))
        for root, rows in results.items():
            print(
                f"`observer ps --json`, {tasks} tasks, end to end ({label(root)}):"
                f" {spread([w for w, _ in rows])} s wall,"
                f" CLI process CPU {spread([c for _, c in rows])} s"
            )
        sys.path.insert(0, str(ROOT))
        from observer.client import connect

        with connect(address, token_file=creds[1], fingerprint=fp, timeout=300) as node:
            walls, collects = [], []
            for _ in range(runs):
                node._tasks = type(node._tasks)()  # hold nothing: a complete listing
                started = time.perf_counter()
                snap = node.snapshot(limit=tasks + 100)
                walls.append(time.perf_counter() - started)
                collects.append(snap.collect_seconds)
        print(
            f"  the same listing through the API (this checkout, connected): {spread(walls)} s"
            f" wall, of which the agent collected {spread(collects)} s"
        )
    finally:
        stop(proc)


def import_figures(root: Path, argv: list[str], env: dict[str, str], calls: int) -> None:
    totals: list[float] = []
    per_module: dict[str, list[float]] = {}
    for _ in range(calls):
        done = subprocess.run(
            [sys.executable, "-X", "importtime", *argv[1:]],
            capture_output=True,
            text=True,
            env=env,
            cwd=root,
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
    largest = sorted(per_module.items(), key=lambda kv: -statistics.median(kv[1]))[:8]
    print(
        f"  import time ({label(root)}; -X importtime, top level summed, inflated by the"
        f" tracing): {spread(totals, 1000, 0)} ms; largest: "
        + ", ".join(f"{n} {statistics.median(v) * 1000:.0f}" for n, v in largest)
    )
    cryptography = any(name.startswith("cryptography") for name in per_module)
    print(f"    imports cryptography: {cryptography}; imports PyQt6: {'PyQt6' in per_module}")


def fixed_cost_figures(
    roots: list[Path], keys: Path, fp: str, calls: int, env: dict[str, str]
) -> None:
    proc, address = start_host(keys, 10)
    creds = ["--token-file", str(keys / "operator.token"), "--fingerprint", fp]
    argv = [sys.executable, "-m", "observer", "ps", address, *creds]
    bare = [sys.executable, "-c", "pass"]
    try:
        for root in roots:
            run_cli(argv, env, subprocess.DEVNULL, root)  # warm-up: bytecode cached

        def call(root: Path) -> tuple[float, float]:
            return run_cli(argv if root != Path("/") else bare, env, subprocess.DEVNULL, root)

        results = interleaved([*roots, Path("/")], calls, call)
        for root, rows in results.items():
            what = "`python -c pass`" if root == Path("/") else f"`observer ps` ({label(root)})"
            print(
                f"fixed cost, {what} of a 10-task host: "
                f"{spread([w for w, _ in rows], 1000, 0)} ms wall,"
                f" CPU {spread([c for _, c in rows], 1000, 0)} ms"
            )
        for root in roots:
            import_figures(root, argv, env, calls)
    finally:
        stop(proc)


def main() -> None:
    if sys.argv[1:2] == [CHILD]:
        root, address, keys, fingerprint, runs = sys.argv[2:7]
        client_child(root, address, keys, fingerprint, int(runs))
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--runs", type=int, default=5, help="client and ps --json runs")
    parser.add_argument("--calls", type=int, default=7, help="fixed-cost calls")
    parser.add_argument("--compare", type=Path, help="another checkout, measured alternately")
    parser.add_argument(
        "--only", choices=["client", "ps", "fixed"], action="append", help="some figures"
    )
    args = parser.parse_args()
    roots = [ROOT] + ([args.compare.resolve()] if args.compare else [])
    only = set(args.only or ["client", "ps", "fixed"])
    load = os.getloadavg()
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, load average "
        f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f}: a shared machine, figures are "
        "median (min-max)"
    )
    sys.path.insert(0, str(ROOT))
    from observer.keygen import generate

    with tempfile.TemporaryDirectory() as tmp:
        km = generate(Path(tmp) / "keys")
        keys, fp = km.directory, km.fingerprint
        env = cli_env(str(Path(tmp) / "pycache"))
        if "client" in only:
            for n in args.tasks:
                client_figures(roots, keys, fp, n, args.runs)
        if "ps" in only:
            ps_json_figures(roots, keys, fp, max(args.tasks), args.runs, env)
        if "fixed" in only:
            fixed_cost_figures(roots, keys, fp, args.calls, env)
    load = os.getloadavg()
    print(f"load average at the end {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")


if __name__ == "__main__":
    main()
