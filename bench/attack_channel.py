"""Attacks on the rpyc channel after login: what the host's memory and echo service see.

    python bench/attack_channel.py [--tasks 100000] [--send-timeout 10] [--skip-slow]

Starts tests/hosts/app.py (the agent with TLS and tokens, an asyncio echo server, and
``--tasks`` sleeping tasks) and a thread that times an echo round trip every 10 ms. Every
attacker logs in for real as a viewer (tests/attack/raw.py), then:

1. frame attacks, one fresh login each: a 2 MB zlib bomb (2 GiB inflated); a 60 KB bomb
   (60 MiB inflated, under the frame cap); a header declaring 4 GiB, then 256 MiB
   streamed; 256 medium frames (1 MiB pings), then 200 pings of 60 KB (legitimate size,
   replies read). For each: host RSS before, its peak (VmHWM, reset before the attack,
   read once the host is idle again), after; whether and when the agent hung up; echo
   p99 from the attack's start until the host is idle again.
2. slow readers: 4 viewers with a 4 KiB receive window send 3.5 MiB of pings and two
   100k-task snapshot requests and never read. Every 0.5 s: the agent's connection threads
   (named observer-agent-conn, counted by a well-behaved operator, whose own is one of
   them) and the host's RSS, until only the operator's is left (at most 90 s); then the
   time to release, the operator's snapshot round trips and echo p99 meanwhile.

Run it on the code before a change (git stash) to see what the change bought.
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
from collections.abc import Callable
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from observer.client import connect  # noqa: E402
from observer.keygen import KeyMaterial, generate  # noqa: E402
from tests.attack.raw import MIB, Attacker, PeakRss, frame, zlib_bomb  # noqa: E402
from tests.helpers import HostProcess, line_value, start_test_host  # noqa: E402

CONN_THREAD = "observer-agent-conn"


class EchoProbe:
    """Times one echo round trip every 10 ms on one connection to the host's echo server."""

    def __init__(self, address: str) -> None:
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        self.samples: list[tuple[float, float]] = []  # (when, seconds)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        reader = self.sock.makefile("rb")
        while not self._stop.wait(0.01):
            started = time.monotonic()
            self.sock.sendall(b"ping\n")
            reader.readline()
            self.samples.append((started, time.monotonic() - started))

    def p99(self, since: float, until: float) -> str:
        window = sorted(s for t, s in self.samples if since <= t <= until)
        if len(window) < 2:
            return "n/a"
        return f"{statistics.quantiles(window, n=100)[98] * 1000:.1f} ms (n={len(window)})"

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def frame_attack(
    name: str, host: HostProcess, address: str, keys: KeyMaterial, echo: EchoProbe, run: Callable
) -> None:
    """Log in, run ``run(attacker) -> detail``, and print memory, drop time and echo p99."""
    attacker = Attacker.login(address, keys, "viewer")
    rss = PeakRss(host.proc.pid)
    with rss:
        started = time.monotonic()
        detail = run(attacker)
        dropped = attacker.dropped_within(10)
        took = time.monotonic() - started
        attacker.close()
        settle(rss.process)  # the host may still be digesting what it was sent
        ended = time.monotonic()
    after = rss.process.memory_info().rss
    verdict = f"dropped after {took:.2f}s" if dropped else "connection kept"
    print(
        f"  {name:<34} RSS {mb(rss.start)} -> peak {mb(rss.peak)} (+{mb(rss.growth)}) "
        f"-> after {mb(after)}; {verdict}; {detail}; "
        f"echo p99 {echo.p99(started, ended)}",
        flush=True,
    )


def settle(process: psutil.Process, limit: float = 60.0) -> None:
    """Wait (up to ``limit`` s) until the host is idle again: under 20% CPU over 0.5 s."""
    deadline = time.monotonic() + limit
    process.cpu_percent()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        if process.cpu_percent() < 20:
            return


def send_bomb(inflated: int) -> Callable[[Attacker], str]:
    body = zlib_bomb(inflated)

    def run(attacker: Attacker) -> str:
        try:
            attacker.send(frame(body, compressed=True))
            return f"{len(body) / 1e6:.2f} MB sent"
        except OSError as exc:
            return f"cut off while sending ({type(exc).__name__})"

    return run


def huge_length(attacker: Attacker) -> str:
    attacker.send(frame(b"", length=0xFFFF_FFFF)[:5])
    sent = attacker.stream(256 * MIB)
    return f"{sent / MIB:.0f} of 256 MiB streamed"


def pings(count: int, size: int) -> Callable[[Attacker], str]:
    def run(attacker: Attacker) -> str:
        conn = attacker.rpyc()
        done = 0
        try:
            for _ in range(count):
                conn.ping(os.urandom(size), timeout=30)
                done += 1
        except (EOFError, OSError):
            pass
        return f"{done} of {count} pings of {size // 1000} KB answered"

    return run


def slow_readers(host: HostProcess, address: str, keys: KeyMaterial, echo: EchoProbe) -> None:
    operator = connect(
        address, token_file=keys.operator_token, fingerprint=keys.fingerprint, timeout=60
    )
    operator.snapshot()
    process = PeakRss(host.proc.pid).process
    print(f"  baseline: RSS {mb(process.memory_info().rss)} after one operator snapshot")
    attackers = [Attacker.login(address, keys, "viewer", rcvbuf=4096) for _ in range(4)]
    started = time.monotonic()
    stall = {"requests": 2, "fill": 3 * MIB + MIB // 2}
    stalls = [
        threading.Thread(target=a.stall, args=("snapshot", 100_000, ""), kwargs=stall)
        for a in attackers
    ]
    for t in stalls:
        t.start()
    rtts: list[float] = []
    released = None
    timeline = []
    while time.monotonic() - started < 90:
        t0 = time.monotonic()
        threads = sum(t.name == CONN_THREAD for t in operator.threads())
        timeline.append((t0 - started, threads, process.memory_info().rss))
        if threads == 1 and all(not t.is_alive() for t in stalls):
            released = t0 - started
            break
        t1 = time.monotonic()
        operator.snapshot()
        rtts.append(time.monotonic() - t1)
        time.sleep(max(0.0, 0.5 - (time.monotonic() - t0)))
    end = time.monotonic()
    for t in stalls:
        t.join(10)
    for when, threads, rss in timeline:
        print(f"  t={when:5.1f}s  conn threads {threads}  host RSS {mb(rss)}")
    drops = [r for r in operator.audit() if r.result == "dropped"]
    when = "NOT within 90s" if released is None else f"after {released:.1f}s"
    print(
        f"  released: {when}; "
        f"{len(drops)} drops audited ({', '.join(sorted({r.action for r in drops}))}); "
        f"operator snapshot rtt median {statistics.median(rtts):.2f}s max {max(rtts):.2f}s "
        f"(n={len(rtts)}); echo p99 {echo.p99(started, end)}"
    )
    time.sleep(2)
    print(f"  2 s after: host RSS {mb(process.memory_info().rss)}")
    for a in attackers:
        a.close()
    operator.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--send-timeout", type=float, default=10.0)
    parser.add_argument("--skip-slow", action="store_true", help="frame attacks only")
    args = parser.parse_args()
    keys = generate(Path(tempfile.mkdtemp(prefix="attack-channel-")))
    env = {"OBSERVER_AGENT_SEND_TIMEOUT": str(args.send_timeout)}
    host = start_test_host(keys.directory, "--tasks", str(args.tasks), env=env)
    try:
        address, echo_address = line_value(host, "agent"), line_value(host, "echo")
        echo = EchoProbe(echo_address)
        started = time.monotonic()
        time.sleep(2)
        print(f"idle echo p99 {echo.p99(started, time.monotonic())}; tasks {args.tasks}")
        print("frame attacks (one viewer login each):")
        attacks = [
            ("zlib bomb 2 MB -> 2 GiB", send_bomb(2 * 1024 * MIB)),
            ("zlib bomb 60 KB -> 60 MiB", send_bomb(60 * MIB)),
            ("4 GiB declared, 256 MiB streamed", huge_length),
            ("256 medium frames (1 MiB pings)", pings(256, MIB)),
            ("200 pings of 60 KB (legit size)", pings(200, 60_000)),
        ]
        for name, run in attacks:
            frame_attack(name, host, address, keys, echo, run)
        if not args.skip_slow:
            print(f"slow readers (send timeout {args.send_timeout:g}s):")
            slow_readers(host, address, keys, echo)
        echo.close()
    finally:
        host.stop()


if __name__ == "__main__":
    main()
