"""What an observer refreshing once a second costs a real server.

    python bench/overhead.py [--tasks 10000] [--blocks 4] [--rounds 6] [--segment 1]
                             [--modes none api cli ping] [--aa]

An aiohttp server with our agent embedded and ``--tasks`` idle tasks
(bench/webhost.py), pinned to one core; the load generator and the observer run on
the other cores (this process pins itself there). Load: ``wrk -c32 --latency`` when
wrk is installed (Debian package ``wrk``), else bench/loadgen.py (Python, bounded,
much slower than wrk: then the client may be the limit; the report says which ran).

Modes: ``none`` -- no observer (the baseline); ``api`` -- ``observer.client``
``snapshot()`` once a second on one link; ``cli`` -- ``observer ps --json`` once a
second (a new process, so it also takes CPU from the load generator's cores);
``ping`` -- ``hello()`` once a second on one link: what the link and a poll cost with
nothing collected, the floor ``api`` is held against (not in the default modes);
``--aa`` (or ``--modes none none``) adds no observer judged against itself, to see the
method's own noise.

Method (bench/paired.py): ``--blocks`` fresh servers; on each, segments of
``--segment`` seconds alternate no observer and each mode in ABBA order, ``--rounds``
quads a mode, after a discarded warm-up segment of every mode (the link's first, cold
listing is taken before it). The pollers stay connected for the block and poll only
during their mode's segments. Reported: requests/s, p50, p99 and the agent threads'
CPU per segment (medians, range), and per mode the median ratio to the adjacent
no-observer segment with a bootstrap 90% interval. Targets: requests/s >= 97% and p99
<= 1.2x of no observer, agent CPU <= 2% of a core; "met" only when the whole interval
is inside. ``--runs`` and ``--duration`` are the old names of ``--blocks``/``--segment``.
Last, per setting, the agent's CPU runs between hand-overs read in the server
(agent/collect/pacing.py's run_lengths): how long a host thread waiting for the GIL
waited at most, the figure p99 rises by; their mean, longest and share over 0.5-5 ms.
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.paired import Segment, Target, load_average, report, run_blocks  # noqa: E402
from observer.client import connect  # noqa: E402
from observer.keygen import KeyMaterial, generate  # noqa: E402

MODES = {
    "none": "no observer",
    "api": "API snapshot() 1/s",
    "cli": "CLI observer ps --json 1/s",
    "ping": "API hello() 1/s (the link alone)",
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

    def floor(self, rate: float, nice: int = 0) -> None:
        """Start (or, at 0, stop) the server's floor sampler (bench/webhost.py), its
        thread ``nice`` steps nicer."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"floor {rate:g} {nice}\n")
        self.proc.stdin.flush()
        self._line("floor:", 30.0)

    def cpu(self) -> dict[str, float]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("cpu\n")
        self.proc.stdin.flush()
        return json.loads(self._line("cpu:", 30.0))

    def runs(self) -> dict[str, Any]:
        """The agent's runs between hand-overs since the last call (bench/webhost.py)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("runs\n")
        self.proc.stdin.flush()
        return json.loads(self._line("runs:", 30.0))

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
    """Polls the agent once a second (API or CLI) on a thread while resumed: one link for
    a whole block (its first, cold listing is taken at the start, before any segment),
    paused between this setting's segments. pause() returns once no poll is running, so
    none spills into the next segment."""

    def __init__(self, mode: str, address: str, km: KeyMaterial, tasks: int) -> None:
        self.mode = mode
        self.address = address
        self.km = km
        self.limit = tasks + 1000
        self.stop_flag = threading.Event()
        self.ready = threading.Event()
        self.active = threading.Event()
        self.busy = threading.Lock()
        self.durations: list[float] = []
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._run, name=f"poll-{mode}", daemon=True)

    def _argv(self) -> list[str]:
        argv = [sys.executable, "-m", "observer", "ps", self.address, "--json"]
        argv += ["--token-file", str(self.km.operator_token), "--fingerprint", self.km.fingerprint]
        return [*argv, "--limit", str(self.limit)]

    def start(self) -> None:
        self.thread.start()
        self.ready.wait(60.0)

    def resume(self) -> None:
        self.active.set()

    def pause(self) -> None:
        self.active.clear()
        with self.busy:  # a poll under way ends first
            pass

    def stop(self) -> None:
        self.active.clear()
        self.stop_flag.set()
        self.thread.join(60.0)

    def _poll(self, node: object | None) -> None:
        started = time.perf_counter()
        try:
            if node is not None and self.mode == "ping":
                node.hello()  # type: ignore[attr-defined]
            elif node is not None:
                node.snapshot(limit=self.limit)  # type: ignore[attr-defined]
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

    def _run(self) -> None:
        node = None
        try:
            if self.mode in ("api", "ping"):
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
        while not self.stop_flag.is_set():
            if not self.active.wait(0.1):
                continue
            # polls at 0.5, 1.5, 2.5 ... s of a segment: one per second of it, whatever
            # its length (a poll at each resume would poll twice in a 1.1 s segment)
            next_at = time.monotonic() + POLL_EVERY / 2
            while self.active.is_set() and not self.stop_flag.is_set():
                now = time.monotonic()
                if now < next_at:
                    self.stop_flag.wait(min(0.02, next_at - now))
                    continue
                with self.busy:
                    if not self.active.is_set():
                        break
                    self._poll(node)
                next_at = max(next_at + POLL_EVERY, time.monotonic())  # none made up for
        if node is not None:
            node.close()


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


def pick_cpus() -> tuple[int | None, set[int], str]:
    """One core for the server, the rest for us (the load and the observer)."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None, set(allowed), f"only {len(allowed)} CPU allowed: nothing pinned"
    server, others = allowed[-1], set(allowed[:-1])
    return server, others, f"server on CPU {server}; load and observer on CPUs {sorted(others)}"


# ---------------------------------------------------------------- a block


def measure_segment(
    server: WebHost,
    load: Load,
    seconds: float,
    poller: Poller | None,
    runs: list[dict[str, Any]] | None = None,
) -> Segment:
    """One segment of load on ``server``, with ``poller`` polling during it (if any);
    the agent's runs between hand-overs during it appended to ``runs``."""
    polls = len(poller.durations) if poller is not None else 0
    server.runs()  # counted afresh from here
    before, t0 = server.cpu(), time.perf_counter()
    if poller is not None:
        poller.resume()
    try:
        result = load.run(server.info["url"], seconds)
    finally:
        if poller is not None:
            poller.pause()
    after, t1 = server.cpu(), time.perf_counter()
    if runs is not None:
        runs.append(server.runs())
    agent = (after["process"] - after["host"]) - (before["process"] - before["host"])
    errors = [f"{int(result['errors'])} failed requests"] if result.get("errors") else []
    return Segment(
        rps=result["rps"],
        p50=result["p50"],
        p99=result["p99"],
        agent_cpu=max(0.0, agent) / (t1 - t0),
        rounds=float(len(poller.durations) - polls) if poller is not None else None,
        errors=errors,
        server_cpu=(after["process"] - before["process"]) / (t1 - t0),
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=10_000, help="idle tasks in the server")
    parser.add_argument("--blocks", "--runs", type=int, default=4, help="fresh servers")
    parser.add_argument("--rounds", type=int, default=6, help="ABBA quads a setting a block")
    parser.add_argument(
        "--segment", "--duration", type=float, default=1.0, help="seconds of load a segment"
    )
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=["none", "api", "cli"])
    parser.add_argument("--aa", action="store_true", help="also no observer against itself")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--load", choices=["auto", "wrk", "python"], default="auto")
    args = parser.parse_args()
    if importlib.util.find_spec("aiohttp") is None:
        raise SystemExit("bench/overhead.py needs aiohttp: pip install -e '.[bench]'")
    server_cpu, others, where = pick_cpus()
    if server_cpu is not None:
        os.sched_setaffinity(0, others)  # we, wrk and the observer stay off the server's core
    load = Load(args.load, args.connections, threads=len(others))
    tested = list(dict.fromkeys(m for m in args.modes if m != "none"))
    if args.aa or args.modes.count("none") > 1:
        tested.insert(0, "aa")
    if not tested:
        raise SystemExit("nothing to compare with no observer: add --modes api/cli or --aa")
    print(f"load average (1 min) at the start: {load_average():.2f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        km = generate(Path(tmp) / "keys")
        results_errors: dict[str, list[str]] = {}
        poll_seconds: dict[str, list[float]] = {}
        run_log: dict[str, list[dict[str, Any]]] = {}

        @contextlib.contextmanager
        def block(_b: int) -> Iterator[Callable[[str], Segment]]:
            server = WebHost(km.directory, args.tasks, server_cpu, Path(tmp) / "webhost.log")
            pollers: dict[str, Poller] = {}
            try:
                for mode in tested:
                    if mode in ("api", "cli", "ping"):
                        pollers[mode] = Poller(mode, server.info["agent"], km, args.tasks)
                        pollers[mode].start()
                load.run(server.info["url"], 2.0)  # warm-up, not recorded
                yield lambda mode: measure_segment(
                    server, load, args.segment, pollers.get(mode), run_log.setdefault(mode, [])
                )
            finally:
                for poller in pollers.values():
                    poller.stop()
                server.close()
            for mode, poller in pollers.items():
                results_errors.setdefault(mode, []).extend(poller.errors)
                poll_seconds.setdefault(mode, []).extend(poller.durations)

        results, loads = run_blocks(
            block,
            "none",
            tested,
            args.blocks,
            args.rounds,
            log=lambda line: print(line, flush=True),
        )
    for mode, errors in results_errors.items():
        results[mode].errors += errors
    labels = dict(MODES, aa="no observer (A/A)")
    targets = [
        Target("rps", TARGET_RPS, True),
        Target("p99", TARGET_P99, False),
        Target("agent_cpu", TARGET_AGENT_CPU, False),
        Target("per_cpu", TARGET_RPS, True),  # capacity; see bench/paired.py
    ]
    header = (
        f"python {sys.version.split()[0]}, {os.cpu_count()} cpus; {where}; aiohttp server with "
        f"our agent and {args.tasks} idle tasks; load: {load.name}; {args.blocks} blocks "
        f"(fresh servers) x {args.rounds} ABBA rounds of {args.segment:g} s segments, a "
        f"warm-up segment of each setting discarded per block"
    )
    report(results, labels, targets, loads, header, control="aa" if "aa" in tested else None)
    for mode, seconds in poll_seconds.items():
        if seconds:
            print(f"{MODES[mode]}: median poll {statistics.median(seconds) * 1000:.0f} ms")
    print_runs(run_log, labels)


def print_runs(run_log: dict[str, list[dict[str, Any]]], labels: dict[str, str]) -> None:
    """The agent's CPU runs between hand-overs per setting (agent/collect/pacing.py): a
    host request waits out at most one such run for the GIL, so their lengths are what
    p99 rises by, read in the host rather than guessed from p99's noise."""
    print("agent runs between hand-overs (CPU between two; a run ends at a hand-over):")
    for mode, segments in run_log.items():
        count = sum(int(seg["runs"]) for seg in segments)
        if not count:
            print(f"  {labels.get(mode, mode)}: none")
            continue
        longest = [float(seg["longest_ms"]) for seg in segments if seg["runs"]]
        edges = list(segments[0]["over_ms"])
        over = ", ".join(
            f"{100.0 * sum(int(seg['over_ms'][edge]) for seg in segments) / count:.1f}% > {edge}"
            for edge in edges
        )
        cpu = sum(float(seg["cpu_ms"]) for seg in segments) / count
        worst = max(segments, key=lambda seg: float(seg["longest_ms"]))
        print(
            f"  {labels.get(mode, mode)}: {count} runs, mean {cpu:.3f} ms, longest per "
            f"segment median {statistics.median(longest):.2f} ms (max {max(longest):.2f}); "
            f"{over} ms; the longest began at {worst['longest_between'][0] or '?'}, ended at "
            f"{worst['longest_between'][1] or '?'}"
        )


if __name__ == "__main__":
    main()
