"""What an observer refreshing once a second costs a real server.

    python bench/overhead.py [--tasks 10000] [--runs 5] [--duration 10] [--modes none api cli]

An aiohttp server with our agent embedded and ``--tasks`` idle tasks
(bench/webhost.py), pinned to one core; the load generator and the observer run on
the other cores (this process pins itself there). Load: ``wrk -c32 --latency`` when
wrk is installed (Debian package ``wrk``), else bench/loadgen.py (Python, bounded,
much slower than wrk: then the client may be the limit; the report says which ran).

Modes, run interleaved (order rotated each run), ``--runs`` times each:
``none`` -- no observer; ``api`` -- ``observer.client`` ``snapshot()`` once a second on
one link; ``cli`` -- ``observer ps --json`` once a second (a new process, so it also
takes CPU from the load generator's cores).

Reported: requests/s, p50 and p99 latency (medians over the runs, with their range),
and the agent threads' CPU during each run as a share of one core. Targets: requests/s
within 3% and p99 within 1.2x of no observer; agent CPU <= 2% of a core.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import queue
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from observer.client import connect  # noqa: E402
from observer.keygen import KeyMaterial, generate  # noqa: E402

MODES = {
    "none": "no observer",
    "api": "API snapshot() 1/s",
    "cli": "CLI observer ps --json 1/s",
}
TARGET_RPS = 0.97  # of no observer
TARGET_P99 = 1.2  # times no observer's
TARGET_AGENT_CPU = 0.02  # of one core
POLL_EVERY = 1.0


# ---------------------------------------------------------------- the server


def tail(log: Path, lines: int = 5) -> str:
    """The last lines of a child's stderr, for an error message (its file is temporary)."""
    try:
        text = log.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError as exc:
        return f"its log is unreadable: {exc}"
    return "its stderr ends: " + " | ".join(text) if text else "its stderr is empty"


class WebHost:
    """bench/webhost.py on one core, and its ``cpu`` command."""

    def __init__(self, keys: Path, tasks: int, cpu: int | None, log: Path) -> None:
        argv = [sys.executable, str(ROOT / "bench" / "webhost.py"), str(keys)]
        argv += ["--tasks", str(tasks)]
        if cpu is not None:
            argv += ["--cpu", str(cpu)]
        self.log = log
        with open(log, "w") as stderr:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                bufsize=1,
                env=dict(os.environ, PYTHONPATH=str(ROOT)),
            )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, name="webhost-stdout", daemon=True).start()
        try:
            self.info = json.loads(self._line("ready:", 300.0))
        except Exception:
            self.close()
            raise

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put("")

    def _line(self, prefix: str, timeout: float) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"server did not answer in {timeout:.0f}s") from None
        if not line.startswith(prefix):
            raise RuntimeError(f"server said {line!r}, expected {prefix!r}; {tail(self.log)}")
        return line.split(":", 1)[1]

    def cpu(self) -> dict[str, float]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("cpu\n")
        self.proc.stdin.flush()
        return json.loads(self._line("cpu:", 30.0))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


# ---------------------------------------------------------------- the load


UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def wrk_seconds(text: str) -> float:
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not found:
        raise ValueError(f"cannot read wrk's latency {text!r}")
    return float(found.group(1)) * UNITS[found.group(2)]


def parse_wrk(out: str) -> dict[str, float]:
    """Requests/s, p50/p99 latency (from ``--latency``) and error counts of wrk's report."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.MULTILINE)
    if not (rps and p50 and p99):
        raise ValueError(f"cannot read wrk's report: {out[-400:]!r}")
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if non2xx:
        errors += int(non2xx.group(1))
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        errors += sum(int(g) for g in sock.groups())
    return {
        "rps": float(rps.group(1)),
        "p50": wrk_seconds(p50.group(1)),
        "p99": wrk_seconds(p99.group(1)),
        "errors": errors,
    }


class Load:
    """wrk when installed (or asked for), else bench/loadgen.py; same figures either way."""

    def __init__(self, choice: str, connections: int, threads: int) -> None:
        self.wrk = shutil.which("wrk") if choice in ("auto", "wrk") else None
        if choice == "wrk" and self.wrk is None:
            raise SystemExit("--load wrk: wrk is not installed (apt-get install wrk)")
        self.why_python = "wrk not found" if choice == "auto" else "--load python"
        self.connections = connections
        self.threads = max(1, min(threads, connections))

    @property
    def name(self) -> str:
        if self.wrk:
            return f"wrk -t{self.threads} -c{self.connections} --latency"
        return f"bench/loadgen.py (Python, {self.connections} connections; {self.why_python})"

    def run(self, url: str, duration: float) -> dict[str, float]:
        if self.wrk:
            argv = [self.wrk, f"-t{self.threads}", f"-c{self.connections}"]
            argv += [f"-d{max(1, round(duration))}s", "--latency", "--timeout", "5s", url]
            done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
            if done.returncode != 0:
                raise RuntimeError(f"wrk exited {done.returncode}: {done.stderr.strip()}")
            return parse_wrk(done.stdout)
        argv = [sys.executable, str(ROOT / "bench" / "loadgen.py"), url]
        argv += ["--connections", str(self.connections), "--duration", str(duration)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
        if done.returncode != 0:
            raise RuntimeError(f"loadgen exited {done.returncode}: {done.stderr.strip()}")
        return json.loads(done.stdout)


# ---------------------------------------------------------------- the observers


class Poller:
    """Polls the agent once a second (API or CLI) on a thread until stopped."""

    def __init__(self, mode: str, address: str, km: KeyMaterial, tasks: int) -> None:
        self.mode = mode
        self.address = address
        self.km = km
        self.limit = tasks + 1000
        self.stop_flag = threading.Event()
        self.ready = threading.Event()
        self.durations: list[float] = []
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._run, name=f"poll-{mode}", daemon=True)

    def _argv(self) -> list[str]:
        argv = [sys.executable, "-m", "observer", "ps", self.address, "--json"]
        argv += ["--token-file", str(self.km.operator_token), "--fingerprint", self.km.fingerprint]
        return [*argv, "--limit", str(self.limit)]

    def _run(self) -> None:
        node = None
        try:
            if self.mode == "api":
                node = connect(
                    self.address,
                    token_file=str(self.km.operator_token),
                    fingerprint=self.km.fingerprint,
                    timeout=30.0,
                )
                node.snapshot(limit=self.limit)  # the link is up and warm before the load
        except Exception as exc:
            self.errors.append(f"connect: {type(exc).__name__}: {exc}")
            if node is not None:
                node.close()
            self.ready.set()
            return
        self.ready.set()
        next_at = time.monotonic() + (POLL_EVERY if node is not None else 0.0)
        self.stop_flag.wait(max(0.0, next_at - time.monotonic()))
        while not self.stop_flag.is_set():
            started = time.perf_counter()
            try:
                if node is not None:
                    node.snapshot(limit=self.limit)
                elif self.mode == "cli":
                    subprocess.run(
                        self._argv(),
                        capture_output=True,
                        check=True,
                        timeout=30,
                        cwd=ROOT,
                        env=dict(os.environ, PYTHONPATH=str(ROOT)),
                    )
                self.durations.append(time.perf_counter() - started)
            except Exception as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")
            next_at += POLL_EVERY
            next_at = max(next_at, time.monotonic())  # a slow poll is not made up for
            self.stop_flag.wait(max(0.0, next_at - time.monotonic()))
        if node is not None:
            node.close()


@contextlib.contextmanager
def observing(mode: str, address: str, km: KeyMaterial, tasks: int) -> Iterator[Poller | None]:
    if mode == "none":
        yield None
        return
    poller = Poller(mode, address, km, tasks)
    poller.thread.start()
    poller.ready.wait(60.0)
    try:
        yield poller
    finally:
        poller.stop_flag.set()
        poller.thread.join(60.0)


# ---------------------------------------------------------------- measuring


@dataclass
class Runs:
    rps: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    agent_cpu: list[float] = field(default_factory=list)  # share of one core
    polls: list[int] = field(default_factory=list)
    poll_seconds: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def one_run(
    server: WebHost, load: Load, mode: str, km: KeyMaterial, args: argparse.Namespace, runs: Runs
) -> None:
    with observing(mode, server.info["agent"], km, args.tasks) as poller:
        before, t0 = server.cpu(), time.perf_counter()
        result = load.run(server.info["url"], args.duration)
        after, t1 = server.cpu(), time.perf_counter()
    agent = (after["process"] - after["host"]) - (before["process"] - before["host"])
    runs.rps.append(result["rps"])
    runs.p50.append(result["p50"])
    runs.p99.append(result["p99"])
    runs.agent_cpu.append(max(0.0, agent) / (t1 - t0))
    if result.get("errors"):
        runs.errors.append(f"{int(result['errors'])} failed requests")
    if poller is not None:
        runs.polls.append(len(poller.durations))
        runs.poll_seconds += poller.durations
        runs.errors += poller.errors


def pick_cpus() -> tuple[int | None, set[int], str]:
    """One core for the server, the rest for us (the load and the observer)."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None, set(allowed), f"only {len(allowed)} CPU allowed: nothing pinned"
    server, others = allowed[-1], set(allowed[:-1])
    return server, others, f"server on CPU {server}; load and observer on CPUs {sorted(others)}"


# ---------------------------------------------------------------- the report


def judge(ok: bool, baseline: list[float], tolerance: float) -> str:
    """ "met" / "MISSED", or "inconclusive" when the runs without an observer alone spread
    more than twice the margin being judged (a shared, busy machine): a ratio inside the
    noise says nothing either way."""
    inner = sorted(baseline)[1:-1] if len(baseline) >= 5 else baseline  # one outlier apart
    if len(inner) > 1:
        spread = (max(inner) - min(inner)) / statistics.median(inner)
        if spread > 2 * tolerance:
            return f"inconclusive (no-observer runs spread {spread:.0%})"
    return "met" if ok else "MISSED"


def med(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    if not values:
        return "-"
    m, lo, hi = (f(values) * scale for f in (statistics.median, min, max))
    return f"{m:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"


def report(results: dict[str, Runs], load: Load, where: str, args: argparse.Namespace) -> None:
    base = results.get("none")
    base_rps = statistics.median(base.rps) if base and base.rps else None
    base_p99 = statistics.median(base.p99) if base and base.p99 else None
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cpus; {where}; aiohttp server with "
        f"our agent and {args.tasks} idle tasks; load: {load.name}, {args.duration:g}s a run; "
        f"median of {args.runs} interleaved runs (range)"
    )
    header = [
        "mode",
        "req/s (range)",
        "vs none",
        "p50 ms (range)",
        "p99 ms (range)",
        "p99 x none",
        "agent CPU % core (range)",
        "polls/run",
        "poll ms",
    ]
    rows = [header]
    for mode, runs in results.items():
        rps = statistics.median(runs.rps) if runs.rps else None
        p99 = statistics.median(runs.p99) if runs.p99 else None
        rows.append(
            [
                MODES[mode],
                med(runs.rps, digits=0),
                f"{rps / base_rps * 100:.1f}%" if rps and base_rps else "-",
                med(runs.p50, 1000, 2),
                med(runs.p99, 1000, 2),
                f"{p99 / base_p99:.2f}" if p99 and base_p99 else "-",
                med(runs.agent_cpu, 100, 2),
                f"{statistics.median(runs.polls):.0f}" if runs.polls else "-",
                f"{statistics.median(runs.poll_seconds) * 1000:.0f}" if runs.poll_seconds else "-",
            ]
        )
    rows.append(
        [
            "target (with an observer)",
            "",
            f">= {TARGET_RPS * 100:.0f}%",
            "",
            "",
            f"<= {TARGET_P99:.1f}",
            f"<= {TARGET_AGENT_CPU * 100:.0f}",
            "",
            "",
        ]
    )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for k, row in enumerate(rows):
        line = "  ".join(
            [row[0].ljust(widths[0])]
            + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        )
        print(line.rstrip())
        if k == 0:
            print("-" * len(line))
    for mode, runs in results.items():
        if mode == "none":
            continue
        verdict = []
        if runs.rps and base_rps:
            ok = statistics.median(runs.rps) >= TARGET_RPS * base_rps
            verdict.append(f"req/s {judge(ok, base.rps, 1 - TARGET_RPS)}")
        if runs.p99 and base_p99:
            ok = statistics.median(runs.p99) <= TARGET_P99 * base_p99
            verdict.append(f"p99 {judge(ok, base.p99, TARGET_P99 - 1)}")
        if runs.agent_cpu:
            ok = statistics.median(runs.agent_cpu) <= TARGET_AGENT_CPU
            verdict.append(f"agent CPU {'met' if ok else 'MISSED'}")
        print(f"{MODES[mode]}: targets: {', '.join(verdict) or 'no figures'}")
    for mode, runs in results.items():
        for error in sorted(set(runs.errors)):
            print(f"{MODES[mode]}: {runs.errors.count(error)}x {error}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=10_000, help="idle tasks in the server")
    parser.add_argument("--runs", type=int, default=5, help="runs of each mode")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load a run")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--load", choices=["auto", "wrk", "python"], default="auto")
    args = parser.parse_args()
    if importlib.util.find_spec("aiohttp") is None:
        raise SystemExit("bench/overhead.py needs aiohttp: pip install -e '.[bench]'")
    server_cpu, others, where = pick_cpus()
    if server_cpu is not None:
        os.sched_setaffinity(0, others)  # we, wrk and the observer stay off the server's core
    load = Load(args.load, args.connections, threads=len(others))
    modes = ["none", *(m for m in args.modes if m != "none")]
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        km = generate(Path(tmp) / "keys")
        server = WebHost(km.directory, args.tasks, server_cpu, Path(tmp) / "webhost.log")
        try:
            load.run(server.info["url"], min(2.0, args.duration))  # warm-up, not recorded
            results = {mode: Runs() for mode in modes}
            for r in range(args.runs):
                turn = r % len(modes)
                for mode in modes[turn:] + modes[:turn]:
                    print(f"run {r + 1}/{args.runs}: {MODES[mode]} ...", flush=True)
                    try:
                        one_run(server, load, mode, km, args, results[mode])
                    except Exception as exc:  # one bad run must not lose the others
                        results[mode].errors.append(f"a run failed: {type(exc).__name__}: {exc}")
        finally:
            server.close()
        report(results, load, where, args)


if __name__ == "__main__":
    main()
