"""Far-away nodes: a link with 200 ms each way that drops connections, and an agent in
another network namespace reached over a veth pair, as through a WireGuard tunnel.

The namespace tests need root and ``ip netns``; where that is not permitted they skip and
say why. Link latency comes from ``bench/delayproxy.py`` (this kernel has no netem).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from bench.delayproxy import DelayProxy
from observer.errors import ObserverError
from observer.fleet import Fleet
from observer.link import Link, Status
from tests.helpers import HostProcess, line_value, wait_until
from tests.helpers import node_spec as spec

DELAY = 0.2  # seconds each way
ROUND_TRIP = 2 * DELAY


def refresh_until(fleet: Fleet, status: str, index: int = 0) -> list:
    """Refresh until row ``index`` has ``status`` (reconnecting at once, no backoff wait)."""

    def check() -> bool:
        link = list(fleet.links.values())[index]
        link.reconnect_now()
        fleet.refresh()
        return fleet.settle()[index].status == status  # retries of a down node run behind

    wait_until(check, timeout=30, message=f"node {index} {status}")
    return fleet.rows()


def timed_refresh(fleet: Fleet) -> float:
    started = time.monotonic()
    fleet.refresh()
    return time.monotonic() - started


# ---------------------------------------------------------------- slow, dropping link


def test_slow_link_refreshes_in_one_round_trip_and_survives_drops(fresh_host, keys):
    """With 200 ms each way, a cluster refresh takes one round trip (not two: at least
    400 ms, less than 800 ms); a dropped connection shows down, then up again, same pid."""
    host, port = fresh_host.address.rsplit(":", 1)
    with DelayProxy(host, int(port), delay=DELAY) as proxy:
        with Fleet([spec(proxy.address, keys)], timeout=5.0) as fleet:
            assert fleet.refresh()[0].status == "up"  # connecting costs several round trips
            for _ in range(3):
                seconds = timed_refresh(fleet)
                assert ROUND_TRIP <= seconds < 2 * ROUND_TRIP, seconds
            row = fleet.rows()[0]
            assert row.rtt is not None and row.rtt >= ROUND_TRIP
            pid = row.pid
            proxy.cut()
            row = fleet.refresh()[0]
            assert row.status == "down" and "lost" in row.error
            assert row.stale is not None and row.rss, "the last data stays, marked stale"
            row = refresh_until(fleet, "up")[0]
            assert row.pid == pid and not row.restarted
            assert ROUND_TRIP <= timed_refresh(fleet) < 2 * ROUND_TRIP


def test_a_method_called_for_the_first_time_takes_one_round_trip(fresh_host, keys):
    """Every call is one round trip, a node's first call of a method too: it used to fetch
    the method (rpyc getattr) and then call it, two round trips (800 ms here) that every
    CLI call paid."""
    from observer.client import connect

    host, port = fresh_host.address.rsplit(":", 1)
    with DelayProxy(host, int(port), delay=DELAY) as proxy:
        token, pin = keys.viewer_token, keys.fingerprint
        with connect(proxy.address, token_file=token, fingerprint=pin, timeout=10) as node:
            node.hello()  # the connection's root object is fetched once, here
            for call in (node.process, node.threads, node.memory, node.process):
                started = time.monotonic()
                call()
                assert ROUND_TRIP <= time.monotonic() - started < 2 * ROUND_TRIP, call


# ---------------------------------------------------------------- another network namespace


@dataclass
class Namespace:
    name: str
    veth: str  # our end
    ours: str  # our address on the veth pair
    theirs: str  # the namespace's address

    def run(self, *argv: str) -> list[str]:
        """A command line that runs inside the namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def link(self, up: bool) -> None:
        _ip("link", "set", self.veth, "up" if up else "down")


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if result.returncode != 0:
        raise OSError(f"ip {' '.join(args)}: {result.stderr.strip()}")


@pytest.fixture
def netns() -> Iterator[Namespace]:
    if sys.platform != "linux" or os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("network namespaces need Linux, root and iproute2's ip")
    tag = f"ro{os.getpid() % 100000}"
    octet = 20 + os.getpid() % 200
    ns = Namespace(tag, f"{tag}a", f"10.213.{octet}.1", f"10.213.{octet}.2")
    created: list[tuple[str, ...]] = []
    try:
        for args, undo in (
            (("netns", "add", ns.name), ("netns", "del", ns.name)),
            (
                ("link", "add", ns.veth, "type", "veth", "peer", "name", f"{tag}b"),
                ("link", "del", ns.veth),
            ),
        ):
            _ip(*args)
            created.append(undo)
        _ip("link", "set", f"{tag}b", "netns", ns.name)
        _ip("addr", "add", f"{ns.ours}/24", "dev", ns.veth)
        _ip("link", "set", ns.veth, "up")
        _ip("netns", "exec", ns.name, "ip", "addr", "add", f"{ns.theirs}/24", "dev", f"{tag}b")
        _ip("netns", "exec", ns.name, "ip", "link", "set", f"{tag}b", "up")
        _ip("netns", "exec", ns.name, "ip", "link", "set", "lo", "up")
    except OSError as exc:
        for undo in reversed(created):
            with contextlib.suppress(OSError):
                _ip(*undo)
        pytest.skip(f"cannot make a network namespace here: {exc}")
    yield ns
    for undo in reversed(created):
        with contextlib.suppress(OSError):
            _ip(*undo)


def start_remote(ns: Namespace, keys, bind: str = "") -> tuple[HostProcess, str]:
    host = HostProcess(
        ns.run(
            sys.executable,
            "-m",
            "tests.hosts.app",
            str(keys.directory),
            "--bind",
            bind or f"{ns.theirs}:0",
            "--name",
            "remote",
        )
    )
    return host, line_value(host, "agent")


@pytest.fixture
def remote(netns, keys) -> Iterator[tuple[Namespace, HostProcess, str]]:
    host, address = start_remote(netns, keys)
    yield netns, host, address
    host.stop()


def test_remote_node_is_up_over_the_veth_and_down_while_the_link_is_cut(remote, keys):
    ns, host, address = remote
    assert address.startswith(ns.theirs + ":"), "the agent listens inside the namespace"
    with Fleet([spec(address, keys)], timeout=1.0) as fleet:
        row = fleet.refresh()[0]
        assert row.status == "up" and row.pid == host.proc.pid and row.name == "remote"
        ns.link(up=False)  # packets now go nowhere: no refusal, no reset, only silence
        try:
            row = fleet.refresh()[0]
            assert row.status == "down" and "did not answer" in row.error
        finally:
            ns.link(up=True)
        row = refresh_until(fleet, "up")[0]
        assert row.pid == host.proc.pid and not row.restarted


def test_remote_node_through_a_slow_dropping_link(remote, keys):
    _ns, host, address = remote
    ip, port = address.rsplit(":", 1)
    with DelayProxy(ip, int(port), delay=DELAY) as proxy:
        with Fleet([spec(proxy.address, keys)], timeout=5.0) as fleet:
            assert fleet.refresh()[0].status == "up"
            assert ROUND_TRIP <= timed_refresh(fleet) < 2 * ROUND_TRIP
            proxy.cut()
            assert fleet.refresh()[0].status == "down"
            assert refresh_until(fleet, "up")[0].pid == host.proc.pid


def test_remote_process_that_exits_is_dead_and_its_successor_a_restart(remote, keys):
    ns, host, address = remote
    link = Link(spec(address, keys))
    assert link.call(lambda node: node.hello(), timeout=5).pid == host.proc.pid
    host.proc.kill()
    host.proc.wait(10)
    with pytest.raises(ObserverError):
        link.call(lambda node: node.hello(), timeout=5)
    link.reconnect_now()
    with pytest.raises(ObserverError, match="refused"):
        link.call(lambda node: node.hello(), timeout=5)
    assert link.status is Status.DEAD, "seen before, now nothing listens: its process is gone"
    successor, again = start_remote(ns, keys, bind=address)
    try:
        assert again == address
        link.reconnect_now()
        assert link.call(lambda node: node.hello(), timeout=5).pid == successor.proc.pid
        assert link.status is Status.UP
        assert f"pid {host.proc.pid} -> {successor.proc.pid}" in link.restarted
    finally:
        link.close()
        successor.stop()
