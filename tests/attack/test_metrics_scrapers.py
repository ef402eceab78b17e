"""Hostile scrapers against the metrics endpoint: slowloris, a huge request, a flood of
connections. Each starts a real host with the endpoint on, attacks it from loopback with
a bounded number of sockets for a bounded time, and checks that a real scrape still gets
the whole exposition quickly, that the endpoint holds a bounded number of descriptors,
and that the host's own echo service kept answering."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time

import pytest

from agent.metrics.httpserve import DEADLINE, MAX_CONNECTIONS, MAX_REQUEST
from tests.attack.tools import tcp_from
from tests.helpers import echo_ok, line_value
from tests.metricstools import scrape, value


@pytest.fixture
def target(make_host):
    host = make_host(env={"OBSERVER_AGENT_METRICS": "127.0.0.1:0"})
    host.metrics = line_value(host.process, "metrics")
    return host


def _connect(address: str) -> socket.socket:
    hostname, port = address.rsplit(":", 1)
    return socket.create_connection((hostname, int(port)), timeout=10)


def _timed_scrape(address: str) -> tuple[float, str]:
    started = time.monotonic()
    status, _, text = scrape(address, timeout=10)
    assert status == 200 and text.rstrip().endswith(tuple("0123456789"))
    return time.monotonic() - started, text


def _closed_by_peer(sock: socket.socket) -> bool:
    try:
        sock.setblocking(False)
        return sock.recv(65536) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_slowloris_cannot_hold_the_endpoint(target):
    """The attacker opens 3x MAX_CONNECTIONS connections and drips a request a byte at a
    time. A real scrape in between is answered at once; every dripping connection is
    closed by the endpoint within its deadline; the host never stops serving."""
    attackers: list[socket.socket] = []
    try:
        for _ in range(3 * MAX_CONNECTIONS):
            sock = _connect(target.metrics)
            sock.sendall(b"GET /metr")
            attackers.append(sock)
        took, text = _timed_scrape(target.metrics)
        assert took < 2.0, f"a real scrape took {took:.2f}s behind slowloris"
        started = time.monotonic()
        open_ = list(attackers)
        while open_ and time.monotonic() - started < DEADLINE + 3:
            for sock in open_:  # keep dripping: one byte per socket per turn
                with contextlib.suppress(OSError):
                    sock.send(b"i")
            readable, _, _ = select.select(open_, [], [], 0.5)  # wait for the endpoint to close
            open_ = [s for s in open_ if not (s in readable and _closed_by_peer(s))]
        assert not open_, f"{len(open_)} dripping connections still open"
        assert time.monotonic() - started < DEADLINE + 3
        took, after = _timed_scrape(target.metrics)
        assert took < 2.0
        fds_before = value(text, "process_open_fds")
        assert value(after, "process_open_fds") <= fds_before + 2
        assert echo_ok(target.echo)
    finally:
        for sock in attackers:
            sock.close()


def test_a_huge_request_is_refused_without_reading_it_all(target):
    """The attacker sends a 4 MiB header. The endpoint answers 431 after MAX_REQUEST bytes
    and closes; the host's memory does not take the rest; a real scrape still works."""
    _, before = _timed_scrape(target.metrics)
    sock = _connect(target.metrics)
    reply = b""
    try:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nX-Junk: ")
        junk = b"a" * 65536
        with contextlib.suppress(OSError):  # the endpoint closes while we still send
            for _ in range(64):
                sock.sendall(junk)
        sock.settimeout(10)
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                reply += chunk
    finally:
        sock.close()
    assert reply.startswith(b"HTTP/1.1 431 ") or reply == b"", reply[:80]
    _, after = _timed_scrape(target.metrics)
    rss_growth = value(after, "process_resident_memory_bytes") - value(
        before, "process_resident_memory_bytes"
    )
    assert rss_growth < 4 * 1024 * 1024 - MAX_REQUEST  # the 4 MiB were never buffered
    assert echo_ok(target.echo)


def test_a_flood_of_connections_leaves_room_for_the_real_scraper(target):
    """The attacker, at 127.0.0.2, opens 300 idle connections (no request at all) and
    keeps opening more while the scraper, at 127.0.0.1, scrapes. The endpoint keeps at
    most MAX_CONNECTIONS (a newcomer pushes out one of the address holding the most), so
    every real scrape gets in, and the host's descriptors stay bounded."""
    _, before = _timed_scrape(target.metrics)
    attackers: list[socket.socket] = []
    stop = threading.Event()

    def flood() -> None:
        while not stop.is_set() and len(attackers) < 600:
            with contextlib.suppress(OSError):
                attackers.append(tcp_from(target.metrics, "127.0.0.2"))

    try:
        for _ in range(300):
            attackers.append(tcp_from(target.metrics, "127.0.0.2"))
        flooder = threading.Thread(target=flood, daemon=True)
        flooder.start()
        for _ in range(5):
            took, during = _timed_scrape(target.metrics)
            assert took < 2.0, f"a real scrape took {took:.2f}s behind the flood"
        stop.set()
        flooder.join(30)
        held = value(during, "process_open_fds") - value(before, "process_open_fds")
        assert held <= MAX_CONNECTIONS + 2, f"the endpoint holds {held} descriptors"
        assert echo_ok(target.echo)
    finally:
        stop.set()
        for sock in attackers:
            sock.close()
    took, _ = _timed_scrape(target.metrics)
    assert took < 2.0


def test_a_scraper_whose_request_is_slow_to_arrive_outlasts_a_flood(target):
    """A scraper far away: its request lands well after its connection. Meanwhile the
    attacker, at 127.0.0.2, opens 4x MAX_CONNECTIONS idle connections. The scraper's
    connection (the only one from its address) is not the one pushed out: once its
    request arrives, it gets the whole exposition."""
    hostname, port = target.metrics.rsplit(":", 1)
    scraper = socket.create_connection((hostname, int(port)), timeout=10)
    attackers: list[socket.socket] = []
    try:
        for _ in range(4 * MAX_CONNECTIONS):  # each newcomer makes the endpoint evict one
            attackers.append(tcp_from(target.metrics, "127.0.0.2"))
        # every attacker connection is accepted (the endpoint answers a request on a later
        # one), so the scraper's has been weighed against all of them
        _timed_scrape(target.metrics)
        scraper.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = b""
        while chunk := scraper.recv(65536):
            reply += chunk
        assert reply.startswith(b"HTTP/1.1 200 OK"), reply[:80]
        assert b"process_resident_memory_bytes" in reply
    finally:
        scraper.close()
        for sock in attackers:
            sock.close()
    assert echo_ok(target.echo)
