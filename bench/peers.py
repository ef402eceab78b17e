"""Task listing side by side: CPython's floor, our API and CLI, aiomonitor, py-spy.

    python bench/peers.py [--tasks 10000 100000] [--rounds 3] [--shape chains|flat|gather]

One host process per task count (bench/peerhost.py: the tasks, 50 idle threads, our
agent and aiomonitor in the same process, a 1 ms loop-stall monitor). Every round runs
every tool once, in an order rotated from round to round, and records its wall time and
the host's worst loop stall during it. The table shows medians over the rounds with
their range (min-max), and each tool's time as a multiple of the floor's and the API's.

Tools:
- floor: ``asyncio.all_tasks()`` + ``task.get_stack(limit=1)`` each, run on the host's
  loop (the time is the host's own measurement);
- floor, await chains: every task's whole ``cr_await`` chain, on the host's loop;
- API: ``observer.client.connect(...).snapshot()`` on one persistent link;
- CLI: ``observer ps --json`` as a subprocess, end to end (Python start-up included);
- aiomonitor web: POST ``/api/live-tasks`` (what its web UI asks) on a kept-alive
  HTTP connection; aiomonitor telnet: ``ps`` on one telnet session, until the next
  prompt (both only when aiomonitor is importable in the host);
- py-spy: ``py-spy dump --pid`` (threads only, no tasks; pauses the process; needs
  ptrace permission).
A tool that cannot run says why under the table.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import queue
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from observer.client import Node, connect  # noqa: E402
from observer.keygen import KeyMaterial, generate  # noqa: E402

EXTRA_TASKS = 1000  # tasks beyond --tasks a listing may include (monitor, main, ...)


class ToolUnavailable(Exception):
    """This tool cannot run here; the message says why."""


# ---------------------------------------------------------------- the host


def tail(log: Path, lines: int = 5) -> str:
    """The last lines of a child's stderr, for an error message (its file is temporary)."""
    try:
        text = log.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError as exc:
        return f"its log is unreadable: {exc}"
    return "its stderr ends: " + " | ".join(text) if text else "its stderr is empty"


class Host:
    """A bench/peerhost.py process and its line-per-answer stdin/stdout protocol."""

    def __init__(self, keys: Path, tasks: int, shape: str, log: Path, timeout: float) -> None:
        argv = [sys.executable, str(ROOT / "bench" / "peerhost.py"), str(keys)]
        argv += ["--tasks", str(tasks), "--shape", shape]
        self.log = log
        self.timeout = timeout
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
        threading.Thread(target=self._read, name="host-stdout", daemon=True).start()
        try:
            ready = self._line("ready:", timeout)
        except Exception:
            self.close()
            raise
        self.info = json.loads(ready.split(":", 1)[1])
        self.pid = int(self.info["pid"])

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put("")  # end of output

    def _line(self, prefix: str, timeout: float) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"host did not answer {prefix!r} in {timeout:.0f}s") from None
        if not line.startswith(prefix):
            raise RuntimeError(f"host said {line!r}, expected {prefix!r}; {tail(self.log)}")
        return line

    def send(self, word: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(word + "\n")
        self.proc.stdin.flush()

    def ask(self, word: str, answer: str = "") -> list[str]:
        """Send a command that answers one line ``answer: ...`` (default ``word``); its fields."""
        self.send(word)
        return self._line(f"{answer or word}:", self.timeout).split()[1:]

    def reset_stall(self) -> None:
        self.send("reset")
        self.ask("report", "stall")  # answered after the reset was applied on the loop

    def stall(self) -> float:
        return float(self.ask("report", "stall")[0])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


# ---------------------------------------------------------------- the tools


class Tool:
    """One way of listing the host's tasks. ``run`` returns its wall time in seconds."""

    label = ""
    in_host = False  # the host measures the time itself

    def start(self, host: Host, tasks: int) -> None:
        """Set up (connect, check availability) and warm up once; check the answer."""

    def run(self, host: Host) -> float:
        raise NotImplementedError

    def stop(self) -> None:
        """Release connections."""


class Floor(Tool):
    label = "floor: all_tasks + get_stack(limit=1)"
    in_host = True
    command = "floor"

    def start(self, host: Host, tasks: int) -> None:
        count = int(host.ask(self.command)[1])
        if count < tasks:
            raise RuntimeError(f"{self.command} saw {count} tasks of {tasks}")

    def run(self, host: Host) -> float:
        return float(host.ask(self.command)[0])


class FloorChain(Floor):
    label = "floor: whole cr_await chains"
    command = "chain"


class Api(Tool):
    label = "our API: snapshot(), persistent link"

    def __init__(self, km: KeyMaterial) -> None:
        self.km = km
        self.node: Node | None = None

    def start(self, host: Host, tasks: int) -> None:
        self.limit = tasks + EXTRA_TASKS
        self.node = connect(
            host.info["agent"],
            token_file=str(self.km.operator_token),
            fingerprint=self.km.fingerprint,
            timeout=host.timeout,
        )
        snap = self.node.snapshot(limit=self.limit)  # warm-up: registers ids, loads code
        if len(snap.tasks) < tasks:
            raise RuntimeError(f"snapshot listed {len(snap.tasks)} tasks of {tasks}")

    def run(self, host: Host) -> float:
        assert self.node is not None
        started = time.perf_counter()
        self.node.snapshot(limit=self.limit)
        return time.perf_counter() - started

    def stop(self) -> None:
        if self.node is not None:
            self.node.close()


class Cli(Tool):
    label = "our CLI: observer ps --json"

    def __init__(self, km: KeyMaterial) -> None:
        self.km = km

    def start(self, host: Host, tasks: int) -> None:
        self.argv = [sys.executable, "-m", "observer", "ps", host.info["agent"]]
        self.argv += ["--token-file", str(self.km.operator_token)]
        self.argv += ["--fingerprint", self.km.fingerprint, "--json"]
        self.argv += ["--limit", str(tasks + EXTRA_TASKS), "--timeout", str(host.timeout)]
        self.timeout = host.timeout
        out = self._call()
        count = len(json.loads(out)["tasks"])
        if count < tasks:
            raise RuntimeError(f"observer ps listed {count} tasks of {tasks}")

    def _call(self) -> str:
        done = subprocess.run(
            self.argv,
            capture_output=True,
            text=True,
            timeout=self.timeout,
            cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
        )
        if done.returncode != 0:
            raise RuntimeError(f"observer ps exited {done.returncode}: {done.stderr.strip()}")
        return done.stdout

    def run(self, host: Host) -> float:
        started = time.perf_counter()
        self._call()
        return time.perf_counter() - started


def aiomonitor_port(host: Host, key: str) -> int:
    if key not in host.info:
        raise ToolUnavailable(f"aiomonitor in the host: {host.info.get('aiomonitor')}")
    return int(host.info[key])


class AiomonitorWeb(Tool):
    label = "aiomonitor web: POST /api/live-tasks"

    def start(self, host: Host, tasks: int) -> None:
        port = aiomonitor_port(host, "aiomonitor_web")
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=host.timeout)
        count = len(json.loads(self._call())["tasks"])
        if count < tasks:
            raise RuntimeError(f"/api/live-tasks listed {count} tasks of {tasks}")

    def _call(self) -> bytes:
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        self.conn.request("POST", "/api/live-tasks", body=b"", headers=headers)
        reply = self.conn.getresponse()
        body = reply.read()
        if reply.status != 200:
            raise RuntimeError(f"/api/live-tasks answered {reply.status}: {body[:200]!r}")
        return body

    def run(self, host: Host) -> float:
        started = time.perf_counter()
        self._call()
        return time.perf_counter() - started

    def stop(self) -> None:
        if hasattr(self, "conn"):
            self.conn.close()


IAC, SB, SE = b"\xff", b"\xfa", b"\xf0"
TTYPE, NAWS = b"\x18", b"\x1f"
PROMPT = b"monitor >>> "
CPR_ASK, CPR_ANSWER = b"\x1b[6n", b"\x1b[1;1R"


class AiomonitorTelnet(Tool):
    """One telnet session, as a person at a terminal would have: ``ps`` until the prompt."""

    label = "aiomonitor telnet: ps"

    def start(self, host: Host, tasks: int) -> None:
        port = aiomonitor_port(host, "aiomonitor_telnet")
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=host.timeout)
        # prompt_toolkit waits for the terminal type; a 200x50 window; an xterm.
        self.sock.sendall(IAC + SB + TTYPE + b"\x00xterm-256color" + IAC + SE)
        self.sock.sendall(IAC + SB + NAWS + b"\x00\xc8\x00\x32" + IAC + SE)
        self._until(PROMPT)
        reply = self._ps()
        found = re.search(rb"(\d+) tasks running", reply)
        count = int(found.group(1)) if found else 0
        if count < tasks:
            raise RuntimeError(f"telnet ps listed {count} tasks of {tasks}")

    def _until(self, marker: bytes, after: bytes = b"") -> bytes:
        """Read until ``marker`` appears (after ``after``, when given); scan new bytes only."""
        buf = bytearray()
        start = -1 if after else 0
        while True:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise RuntimeError("aiomonitor closed the telnet session")
            if CPR_ASK in chunk:  # prompt_toolkit asks where the cursor is
                self.sock.sendall(CPR_ANSWER)
            old = len(buf)
            buf += chunk
            if start < 0:
                found = buf.find(after, max(0, old - len(after)))
                if found < 0:
                    continue
                start = found + len(after)
                old = start
            if buf.find(marker, max(start, old - len(marker))) >= 0:
                return bytes(buf)

    def _ps(self) -> bytes:
        self.sock.sendall(b"ps\r")
        return self._until(PROMPT, after=b" tasks running")

    def run(self, host: Host) -> float:
        started = time.perf_counter()
        self._ps()
        return time.perf_counter() - started

    def stop(self) -> None:
        if hasattr(self, "sock"):
            with contextlib.suppress(OSError):
                self.sock.sendall(b"exit\r")
            self.sock.close()


def py_spy_path() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


class PySpy(Tool):
    label = "py-spy dump (threads only; pauses)"

    def start(self, host: Host, tasks: int) -> None:
        binary = py_spy_path()
        if binary is None:
            raise ToolUnavailable("py-spy is not installed (pip install py-spy)")
        self.argv = [binary, "dump", "--pid", str(host.pid)]
        self.timeout = host.timeout
        done = self._call()
        if done.returncode != 0:
            why = (done.stderr.strip().splitlines() or ["no message"])[0]
            raise ToolUnavailable(f"py-spy dump failed here: {why}")

    def _call(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv, capture_output=True, text=True, timeout=self.timeout)

    def run(self, host: Host) -> float:
        started = time.perf_counter()
        done = self._call()
        elapsed = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"py-spy dump exited {done.returncode}: {done.stderr.strip()}")
        return elapsed


# ---------------------------------------------------------------- measuring


@dataclass
class Result:
    times: list[float] = field(default_factory=list)
    stalls: list[float] = field(default_factory=list)
    missing: str = ""  # why this tool has no figures
    errors: list[str] = field(default_factory=list)


def measure_once(host: Host, tool: Tool, result: Result) -> bool:
    """One timed call with the host's worst stall during it; False if the call failed."""
    host.reset_stall()
    try:
        elapsed = tool.run(host)
    except Exception as exc:
        result.errors.append(f"{type(exc).__name__}: {exc}")
        return False
    result.stalls.append(host.stall())
    result.times.append(elapsed)
    return True


def measure(
    keys: KeyMaterial, tasks: int, shape: str, rounds: int, timeout: float, logdir: Path
) -> tuple[dict[str, Result], dict]:
    tools: list[Tool] = [
        Floor(),
        FloorChain(),
        Api(keys),
        Cli(keys),
        AiomonitorWeb(),
        AiomonitorTelnet(),
        PySpy(),
    ]
    results = {tool.label: Result() for tool in tools}
    host = Host(keys.directory, tasks, shape, logdir / f"host-{tasks}.log", timeout)
    try:
        ready: list[Tool] = []
        for tool in tools:
            try:
                tool.start(host, tasks)
                ready.append(tool)
            except ToolUnavailable as exc:
                results[tool.label].missing = str(exc)
            except Exception as exc:
                results[tool.label].missing = f"failed to start: {type(exc).__name__}: {exc}"
        for r in range(rounds):
            turn = r % len(ready) if ready else 0
            for tool in ready[turn:] + ready[:turn]:
                if not measure_once(host, tool, results[tool.label]):
                    ready.remove(tool)  # its session may be out of step: no more rounds
        return results, host.info
    finally:
        for tool in tools:
            try:
                tool.stop()
            except Exception as exc:  # a tool that will not close must not hide the figures
                print(f"note: closing {tool.label}: {exc}", file=sys.stderr)
        host.close()


# ---------------------------------------------------------------- the table


def spread(values: list[float], scale: float = 1000.0) -> str:
    if not values:
        return "-"
    med = statistics.median(values) * scale
    lo, hi = min(values) * scale, max(values) * scale
    return f"{med:.1f} ({lo:.1f}-{hi:.1f})"


def ratio(values: list[float], base: list[float]) -> str:
    if not values or not base or statistics.median(base) <= 0:
        return "-"
    return f"{statistics.median(values) / statistics.median(base):.2f}"


def any_reason(by_n: dict[int, dict[str, Result]]) -> bool:
    return any(r.missing or r.errors for results in by_n.values() for r in results.values())


def table(by_n: dict[int, dict[str, Result]]) -> list[str]:
    labels = list(next(iter(by_n.values())).keys())
    floor, api = Floor.label, Api.label
    header1 = ["tool"]
    header2 = [""]
    rows = [[label] for label in labels]
    for n, results in by_n.items():
        header1 += [f"{n} tasks", "", "", ""]
        header2 += ["time ms (range)", "worst stall ms (range)", "x floor", "x API"]
        for row, label in zip(rows, labels, strict=True):
            res = results[label]
            row += [
                spread(res.times) if res.times else ("not measured" if res.missing else "failed"),
                spread(res.stalls),
                ratio(res.times, results[floor].times),
                ratio(res.times, results[api].times),
            ]
    grid = [header1, header2, *rows]
    widths = [max(len(line[i]) for line in grid) for i in range(len(header1))]
    out = []
    for k, line in enumerate(grid):
        cells = [line[0].ljust(widths[0])]
        cells += [cell.rjust(w) for cell, w in zip(line[1:], widths[1:], strict=True)]
        out.append("  ".join(cells).rstrip())
        if k == 1:
            out.append("-" * len(out[-1]))
    if any_reason(by_n):
        out.append("why a tool was not measured or stopped:")
    for n, results in by_n.items():
        for label, res in results.items():
            if res.missing:
                out.append(f"{n} tasks, {label}: not measured: {res.missing}")
            for error in sorted(set(res.errors)):
                out.append(f"{n} tasks, {label}: failed, no further rounds: {error}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shape", choices=["chains", "flat", "gather"], default="chains")
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds any one call may take"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        km = generate(Path(tmp) / "keys")
        by_n: dict[int, dict[str, Result]] = {}
        info: dict = {}
        for n in args.tasks:
            print(f"measuring {n} tasks ...", flush=True)
            try:
                by_n[n], info = measure(km, n, args.shape, args.rounds, args.timeout, Path(tmp))
            except Exception as exc:  # the other task counts still get their figures
                print(f"{n} tasks: not measured: the host failed: {type(exc).__name__}: {exc}")
        if not by_n:
            raise SystemExit("no figures: every host failed")
        shapes = {
            "chains": "chains of 3 tasks awaiting each other",
            "flat": "independent tasks",
            "gather": "parents gathering 9 children each",
        }
        print(
            f"python {sys.version.split()[0]}, {os.cpu_count()} cpus; host: "
            f"{shapes[args.shape]}, leaves 3 coroutines deep, 50 idle threads, 1 ms stall "
            f"monitor, our agent and aiomonitor ({info.get('aiomonitor')}) in the same "
            f"process; median of {args.rounds} interleaved rounds (range)"
        )
        for line in table(by_n):
            print(line)


if __name__ == "__main__":
    main()
