"""Fleet refresh: 20 agent processes, every node's cluster row, concurrently.

    python bench/fleet.py [--nodes 20] [--repeat 20] [--delay 0.005 0.05] [--timeout 1.0]

Targets: a full refresh of all nodes' cluster rows takes <= 2x the slowest single node's
round trip; one dead (silent) node adds no more than its timeout once, not per refresh.

Measured on loopback and with every node behind its own delaying proxy process
(``--delay`` each way: a LAN, a WAN), where doing the nodes one by one would cost N
round trips. On loopback a round trip is ~0.2 ms, less than the observer's own CPU time
to decode one reply, so N replies cost N decodes however they are dispatched; the
ratio there measures our CPU, not the network, and is printed for what it is.

The silent node is a host frozen with SIGSTOP: the kernel accepts its connections,
nobody answers, which is what a hung process or a black-holed link does.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.snapshot import Host  # noqa: E402
from observer.fleet import Fleet  # noqa: E402
from observer.keygen import KeyMaterial, generate  # noqa: E402
from observer.link import Link  # noqa: E402
from observer.nodesfile import NodeSpec  # noqa: E402


def spec(address: str, km: KeyMaterial, timeout: float) -> NodeSpec:
    return NodeSpec(
        address=address,
        token_file=str(km.operator_token),
        fingerprint=km.fingerprint,
        timeout=timeout,
    )


def start_proxy(target: str, delay: float) -> tuple[subprocess.Popen, str]:
    """A delaying proxy in its own process (so its threads do not share our GIL)."""
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "delayproxy.py"), target, "--delay", str(delay)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.startswith("proxy: "):
        proc.kill()
        raise SystemExit(f"proxy failed to start: {line!r}")
    return proc, line.split()[1]


def single_rtts(specs: list[NodeSpec], repeat: int) -> list[float]:
    """Each node alone: the median of ``repeat`` overview round trips, node by node."""
    medians = []
    for s in specs:
        link = Link(s)
        link.call(lambda node: node.overview())  # connect and warm up
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            link.call(lambda node: node.overview())
            times.append(time.perf_counter() - started)
        link.close()
        medians.append(statistics.median(times))
    return medians


def fleet_refreshes(fleet: Fleet, repeat: int, pause: float = 0.0) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        rows = fleet.refresh()
        times.append(time.perf_counter() - started)
        if pause:
            time.sleep(pause)  # a refresh interval, compressed
    assert rows
    return times


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f} ms"


def measure(label: str, specs: list[NodeSpec], repeat: int) -> None:
    singles = single_rtts(specs, repeat)
    slowest = max(singles)
    with Fleet(specs) as fleet:
        first = fleet.refresh()
        assert {r.status for r in first} == {"up"}, [r.error for r in first if r.error]
        times = fleet_refreshes(fleet, repeat)
    median, worst = statistics.median(times), max(times)
    print(f"\n{label}: {len(specs)} nodes")
    print(
        f"  single node round trip (median each): fastest {ms(min(singles))}, "
        f"slowest {ms(slowest)}, sum (one by one) {ms(sum(singles))}"
    )
    print(f"  full fleet refresh: median {ms(median)}, max {ms(worst)}")
    verdict = "ok" if median <= 2 * slowest else "MISSED"
    print(
        f"  median refresh / slowest single = {median / slowest:.2f}x (target <= 2x: {verdict}); "
        f"one by one would be {sum(singles) / median:.1f}x slower"
    )


def measure_dead(
    label: str, specs: list[NodeSpec], frozen: subprocess.Popen, repeat: int, timeout: float
) -> None:
    """Refresh, freeze one node, keep refreshing every 0.5 s: which refreshes paid for it."""
    with Fleet(specs, timeout=timeout) as fleet:
        fleet.refresh()
        base = fleet_refreshes(fleet, repeat)
        normal = statistics.median(base)
        os.kill(frozen.pid, signal.SIGSTOP)
        try:
            after = fleet_refreshes(fleet, repeat * 2, pause=0.5)
            status = fleet.rows()[0].status
        finally:
            os.kill(frozen.pid, signal.SIGCONT)
    extra = [t - normal for t in after]
    paid = [i for i, e in enumerate(extra) if e > timeout / 2]
    print(
        f"\n{label}: one node frozen (SIGSTOP), call timeout {timeout:g} s, "
        f"{len(after)} refreshes 0.5 s apart ({len(after) * 0.5:.0f} s, several reconnect "
        f"attempts)"
    )
    print(f"  normal refresh {ms(normal)}; frozen node shown {status!r}")
    print(
        f"  refreshes that waited for it: {len(paid)} (#{', #'.join(map(str, paid)) or '-'}), "
        f"longest extra {ms(max(extra))}; others' extra median {ms(statistics.median(extra))}"
    )
    verdict = "ok" if len(paid) <= 1 and max(extra) <= timeout * 1.2 else "MISSED"
    print(f"  target: its timeout once, not per refresh: {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument(
        "--delay", type=float, nargs="+", default=[0.005, 0.05], help="seconds each way"
    )
    parser.add_argument("--timeout", type=float, default=1.0, help="call timeout (dead run)")
    args = parser.parse_args()
    print(
        f"bench/fleet.py: {args.nodes} agent processes, {os.cpu_count()} CPUs, "
        f"Python {sys.version.split()[0]}"
    )
    procs: list[subprocess.Popen] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            km = generate(Path(tmp) / "keys")
            addresses = []
            for _ in range(args.nodes):
                host = Host(km.directory, 100, depth=1, monitor=False)
                procs.append(host.proc)
                addresses.append(host.address)
            local = [spec(a, km, 10.0) for a in addresses]
            measure("loopback", local, args.repeat)
            for delay in args.delay:
                proxied = []
                for a in addresses:
                    proc, address = start_proxy(a, delay)
                    procs.append(proc)
                    proxied.append(spec(address, km, 10.0))
                label = f"{delay * 1000:g} ms each way (a proxy process per node)"
                measure(label, proxied, args.repeat)
            dead = [spec(a, km, args.timeout) for a in addresses]
            measure_dead("loopback", dead, procs[0], args.repeat, args.timeout)
    finally:
        for proc in procs:
            with_kill(proc)


def with_kill(proc: subprocess.Popen) -> None:
    try:
        os.kill(proc.pid, signal.SIGCONT)
    except ProcessLookupError:
        return
    proc.kill()
    proc.wait(10)


if __name__ == "__main__":
    main()
