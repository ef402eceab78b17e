"""The agent's listener and login under attack, from loopback: figures.

    python bench/attack_listener.py [--sockets 500] [--sources 60] [--connects 20]
                                    [--guess-seconds 60]

Each scenario starts a fresh host (tests/attack/host.py: the agent with TLS and the
keygen tokens, default limits, plus an echo service) and an attacker in a process of its
own (tests/attack/tools.py), then prints:

- a real operator's connect time (observer.client.connect: TCP, TLS, pinning, token
  challenge and rpyc set-up), median and max over ``--connects`` connects (the first,
  from an address that never logged in, also shown alone), with no attack, while
  ``--sockets`` idle sockets and while as many dripping sockets (TLS done, then a byte
  of the answer a second) are held open from ``--sources`` addresses. The holder
  reopens every socket the agent closes at once, so it is also a connection flood:
  its rate is printed;
- wrong proofs the agent evaluated per minute while one address, then ``--sources``
  addresses, guess as fast as one connection at a time allows for ``--guess-seconds``
  (counted from the agent's log: one line per evaluated wrong proof);
- the host's echo round trip (a persistent connection pinged every 10 ms) p50/p99/max
  during each scenario, and the host's threads and descriptors at their highest.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from observer.client import connect  # noqa: E402
from observer.keygen import KeyMaterial, generate  # noqa: E402
from tests.helpers import HostProcess, line_value  # noqa: E402


class EchoPinger:
    """Pings the host's echo service every 10 ms on one connection; keeps round trips."""

    def __init__(self, address: str) -> None:
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.rtts: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        buf = b""
        while not self._stop.wait(0.01):
            start = time.perf_counter()
            try:
                self.sock.sendall(b"ping\n")
                while not buf.endswith(b"\n"):
                    chunk = self.sock.recv(100)
                    if not chunk:
                        raise ConnectionError("echo closed")
                    buf += chunk
            except OSError:
                self.failures += 1
                return
            if buf != b"pong ping\n":
                self.failures += 1
            buf = b""
            self.rtts.append(time.perf_counter() - start)

    def stop(self) -> str:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()
        if not self.rtts:
            return f"echo: no answers ({self.failures} failures)"
        ms = sorted(r * 1000 for r in self.rtts)
        p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
        return (
            f"echo rtt p50 {statistics.median(ms):.2f} ms, p99 {p99:.2f} ms, max {ms[-1]:.2f} "
            f"ms over {len(ms)} pings, {self.failures} failures"
        )


class Usage:
    """The host process's threads and open descriptors, sampled every 50 ms."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.threads = 0
        self.fds = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.threads = max(self.threads, len(os.listdir(f"/proc/{self.pid}/task")))
                self.fds = max(self.fds, len(os.listdir(f"/proc/{self.pid}/fd")))
            except OSError:
                return

    def stop(self) -> str:
        self._stop.set()
        self._thread.join(5)
        return f"host at most {self.threads} threads, {self.fds} descriptors"


def start_host(km: KeyMaterial) -> tuple[HostProcess, str, str]:
    host = HostProcess([sys.executable, "-m", "tests.attack.host", str(km.directory)])
    return host, line_value(host, "agent"), line_value(host, "echo")


def operator_times(address: str, km: KeyMaterial, count: int) -> list[float | str]:
    """Seconds each connect took, or why it failed."""
    out: list[float | str] = []
    for _ in range(count):
        start = time.monotonic()
        try:
            node = connect(
                address, token_file=km.operator_token, fingerprint=km.fingerprint, timeout=10
            )
        except Exception as exc:
            out.append(f"{type(exc).__name__}: {exc}")
            continue
        out.append(time.monotonic() - start)
        node.close()
    return out


def fmt_times(results: list[float | str]) -> str:
    times = [r for r in results if isinstance(r, float)]
    failures = [r for r in results if isinstance(r, str)]
    text = f"{len(failures)} failed" + "".join(f"\n      {f}" for f in failures)
    if not times:
        return text
    return (
        f"median {statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms "
        f"over {len(times)} connects, {text}"
    )


def fmt_one(result: float | str) -> str:
    return f"{result * 1000:.0f} ms" if isinstance(result, float) else f"failed ({result})"


def attacker(*args: str) -> HostProcess:
    return HostProcess([sys.executable, "-m", "tests.attack.tools", *args])


def hold_scenario(km: KeyMaterial, label: str, args: argparse.Namespace, mode: str) -> None:
    host, address, echo = start_host(km)
    try:
        pinger, usage = EchoPinger(echo), Usage(host.proc.pid)
        hold = None
        if mode != "none":
            hold = attacker(
                "hold",
                address,
                "--count",
                str(args.sockets),
                "--mode",
                mode,
                "--sources",
                str(args.sources),
                "--interval",
                "1.0",
                "--reconnect",
                "--seconds",
                "600",
            )
            hold.wait_line(r"^ready opened=")
            hold.wait_line(r"^stats ", start=len(hold.lines))  # a second report: held
        started = time.monotonic()
        results = operator_times(address, km, args.connects)
        elapsed = time.monotonic() - started
        print(f"{label}:")
        print(f"  operator's first connect (its address never logged in): {fmt_one(results[0])}")
        print(f"  operator connects: {fmt_times(results)}")
        if hold is not None:
            stats = hold.lines[-1]
            opened = int(stats.split("opened=")[1].split()[0])
            print(f"  attacker: {stats} ({opened / max(elapsed, 1e-9):.0f} connects/s average)")
            hold.stop()
        print(f"  {pinger.stop()}")
        print(f"  {usage.stop()}")
    finally:
        host.stop()


def guess_scenario(km: KeyMaterial, label: str, sources: int, seconds: float) -> None:
    host, address, echo = start_host(km)
    try:
        pinger, usage = EchoPinger(echo), Usage(host.proc.pid)
        guesser = attacker("guess", address, "--sources", str(sources), "--seconds", str(seconds))
        made = guesser.wait_line(r"^made=.*", timeout=seconds + 60).group(0)
        evaluated = sum("authentication failed from" in line for line in host.stderr)
        refusals = [line for line in host.stderr if "too many failed logins" in line]
        print(f"{label}:")
        print(f"  guesses {made} in {seconds:g} s")
        print(f"  evaluated by the agent: {evaluated} = {evaluated * 60 / seconds:.1f} per minute")
        print(f"  refusal log lines: {len(refusals)}")
        print(f"  {pinger.stop()}")
        print(f"  {usage.stop()}")
        guesser.stop()
    finally:
        host.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sockets", type=int, default=500)
    parser.add_argument("--sources", type=int, default=60)
    parser.add_argument("--connects", type=int, default=20)
    parser.add_argument("--guess-seconds", type=float, default=60.0)
    parser.add_argument("--skip-guessing", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        km = generate(Path(tmp) / "keys")
        hold_scenario(km, "no attack", args, "none")
        hold_scenario(
            km, f"{args.sockets} idle sockets from {args.sources} addresses", args, "idle"
        )
        hold_scenario(
            km, f"{args.sockets} dripping sockets from {args.sources} addresses", args, "drip"
        )
        if not args.skip_guessing:
            guess_scenario(km, "guessing from 1 address", 1, args.guess_seconds)
            guess_scenario(
                km, f"guessing from {args.sources} addresses", args.sources, args.guess_seconds
            )


if __name__ == "__main__":
    main()
