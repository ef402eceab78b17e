"""The rpyc channel after login: inbound frame caps, bounded inflate, a send deadline.

Each attack logs in for real (viewer token, TLS), then writes rpyc frames of its own
making. What is checked: the agent hangs up on the attacker, the host's peak RSS grows
by less than 10 MB, the drop is in the audit log under the attacker's peer and role, and
the host and a real operator carry on (echo server answers, calls succeed).
"""

from __future__ import annotations

import gc
import os
import socket
import threading
import time
import weakref
import zlib
from collections.abc import Callable

import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rpyc.core.channel import Channel
from rpyc.core.stream import SocketStream

from agent.channel import (
    MAX_REPLY_FRAME,
    MAX_REQUEST_FRAME,
    BoundedChannel,
    DeadlineStream,
    FrameTimeout,
    ProtocolViolation,
)
from agent.config import DEFAULT_SEND_TIMEOUT, resolve
from agent.security import ConfigError
from agent.wire import MAX_HANDSHAKE_FRAME
from observer.client import connect
from observer.errors import NodeDown, ObserverError
from tests.attack.raw import MIB, Attacker, PeakRss, RogueAgent, frame, zlib_bomb
from tests.helpers import echo_ok, wait_until

RSS_BUDGET = 10 * MIB
CONN_THREAD = "observer-agent-conn"


def _drop_records(node, peer):
    """The drop's audit records, once there are any: the session thread audits right
    after it closed the socket, so the attacker can see the drop first (a 3.10 run with
    two suites on the box asked before the record was written)."""
    return wait_until(
        lambda: [r for r in node.audit() if r.peer == peer and r.result == "dropped"],
        10,
        "the drop is audited",
    )


def _host_still_serves(host, node):
    assert echo_ok(host.echo)
    assert node.hello().node == "test-host"


# ---------------------------------------------------------------------- frames after login


def test_a_zlib_bomb_under_the_frame_cap_is_refused_while_inflating(make_host, keys):
    host = make_host()
    operator = host.connect("operator")
    attacker = Attacker.login(host.address, keys, "viewer")
    bomb = zlib_bomb(48 * MIB)  # ~48 KB on the wire: the header check alone lets it in
    assert len(bomb) < MAX_REQUEST_FRAME
    with PeakRss(host.process.proc.pid) as rss:
        attacker.send(frame(bomb, compressed=True))
        assert attacker.dropped_within(10), "the agent kept the bomb's connection open"
    attacker.close()
    assert rss.growth < RSS_BUDGET, f"host peak RSS grew {rss.growth / MIB:.1f} MB"
    (record,) = _drop_records(operator, attacker.peer)
    assert (record.role, record.action) == ("viewer", "protocol violation")
    assert record.target == "connection"
    assert "inflates beyond" in record.detail
    _host_still_serves(host, operator)
    operator.close()


def test_a_huge_declared_length_is_refused_from_the_header(make_host, keys):
    """A 4 GiB header, then 32 MiB streamed: cut off at once, none of it kept."""
    host = make_host()
    operator = host.connect("operator")
    attacker = Attacker.login(host.address, keys, "viewer")
    with PeakRss(host.process.proc.pid) as rss:
        attacker.send(frame(b"", length=0xFFFF_FFFF)[:5])
        started = time.monotonic()
        sent = attacker.stream(32 * MIB)
        assert attacker.dropped_within(10)
        took = time.monotonic() - started
    attacker.close()
    assert sent < 32 * MIB, "the agent read the whole body of an oversize frame"
    assert rss.growth < RSS_BUDGET, f"host peak RSS grew {rss.growth / MIB:.1f} MB"
    assert took < 5
    (record,) = _drop_records(operator, attacker.peer)
    assert record.action == "protocol violation" and str(0xFFFF_FFFF) in record.detail
    _host_still_serves(host, operator)
    operator.close()


def test_the_handshake_frame_is_capped_before_login(make_host, keys):
    """Before login: a handshake frame declaring 1 GiB is refused from its header too.

    (Verification of wire.recv_frame's 4 KiB cap; it held before this change.)"""
    host = make_host()
    with PeakRss(host.process.proc.pid) as rss:
        attacker = Attacker.before_login(host.address)
        attacker.send((1 << 30).to_bytes(4, "big"))
        sent = attacker.stream(16 * MIB)
        assert attacker.dropped_within(10)
        attacker.close()
    assert MAX_HANDSHAKE_FRAME < (1 << 30)
    assert sent < 16 * MIB and rss.growth < RSS_BUDGET
    operator = host.connect("operator")
    _host_still_serves(host, operator)
    operator.close()


def test_the_largest_legitimate_requests_still_pass(host):
    """The cap leaves room for what the observer really sends: a string at the service's
    10,000-character limit (4-byte UTF-8: 40 KB) and a 16-label locals path."""
    node = host.connect("operator")
    result = node.chaos_mark("cap-check", "start", "\U0001f600" * 10_000)
    assert result.ok
    sleeper = next(t for t in node.tasks(match="sleeper-1") if t.name == "sleeper-1")
    with pytest.raises(ObserverError, match="no local named"):
        node.locals(sleeper.id, 0, tuple("\U0001f600" * 100 for _ in range(16)))
    node.chaos_mark("cap-check", "end", "done")
    assert node.hello().node == "test-host"
    node.close()


def test_the_observer_hangs_up_on_a_reply_frame_over_its_cap(keys):
    """A compromised host's agent answers the first call with a header declaring 4 GiB and
    streams 64 MiB: the observer stops after the header and says the node is down."""
    rogue = RogueAgent(keys, frame(b"", length=0xFFFF_FFFF)[:5], stream=64 * MIB)
    try:
        with PeakRss(os.getpid()) as rss:
            node = connect(
                rogue.address, token_file=keys.operator_token, fingerprint=keys.fingerprint
            )
            with pytest.raises(NodeDown):
                node.hello()
            node.close()
            rogue.close()
    finally:
        rogue.listener.close()
    assert MAX_REPLY_FRAME < 0xFFFF_FFFF
    assert rogue.sent < 64 * MIB, "the observer read the whole oversize reply"
    assert rss.growth < RSS_BUDGET, f"observer peak RSS grew {rss.growth / MIB:.1f} MB"


# ---------------------------------------------------------------------- the channel itself


def _pair(timeout: float | None = 2.0) -> tuple[Channel, BoundedChannel, socket.socket]:
    a, b = socket.socketpair()
    stock = Channel(SocketStream(a))  # what a peer running plain rpyc sends
    bounded = BoundedChannel(DeadlineStream(b), max_frame=MAX_REQUEST_FRAME, timeout=timeout)
    return stock, bounded, a


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(0, MAX_REQUEST_FRAME),
    compressible=st.booleans(),
)
def test_every_frame_within_the_cap_arrives_as_rpyc_sent_it(size, compressible):
    data = bytes(size) if compressible else bytes(i * 7 % 251 for i in range(size))
    stock, bounded, _ = _pair()
    try:
        stock.send(data)  # rpyc compresses anything over 3000 bytes
        assert bounded.recv() == data
        assert bounded.dropped is None
    finally:
        stock.close()
        bounded.close()


@settings(max_examples=40, deadline=None)
@given(excess=st.integers(1, 2**32 - 1 - MAX_REQUEST_FRAME), compressed=st.booleans())
def test_an_oversize_header_is_refused_without_reading_a_body(excess, compressed):
    """Only the header is sent: reading any body would hit the deadline instead."""
    _, bounded, a = _pair(timeout=5.0)
    try:
        a.sendall(frame(b"", length=MAX_REQUEST_FRAME + excess, compressed=compressed)[:5])
        started = time.monotonic()
        with pytest.raises(ProtocolViolation, match="declared"):
            bounded.recv()
        assert time.monotonic() - started < 1
        assert bounded.dropped is not None and bounded.closed
    finally:
        a.close()
        bounded.close()


@settings(max_examples=20, deadline=None)
@given(inflated=st.integers(MAX_REQUEST_FRAME + 1, 8 * MIB))
def test_a_frame_inflating_past_the_cap_is_refused(inflated):
    _, bounded, a = _pair()
    try:
        a.sendall(frame(zlib_bomb(inflated), compressed=True))
        with pytest.raises(ProtocolViolation, match="inflates beyond"):
            bounded.recv()
    finally:
        a.close()
        bounded.close()


def test_broken_or_padded_compression_is_refused():
    cases = {
        b"not zlib at all": "not valid zlib",
        zlib.compress(b"x" * 100)[:-3]: "truncated",
        zlib.compress(b"x" * 100) + b"tail": "trailing",
    }
    for body, message in cases.items():
        _, bounded, a = _pair()
        a.sendall(frame(body, compressed=True))
        with pytest.raises(ProtocolViolation, match=message):
            bounded.recv()
        a.close()
        bounded.close()


def test_a_frame_begun_and_never_finished_times_out():
    _, bounded, a = _pair(timeout=0.3)
    a.sendall(frame(b"x" * 1000)[:500])
    with pytest.raises(FrameTimeout):
        bounded.recv()
    assert bounded.dropped is not None and bounded.dropped.kind == "receive timeout"
    a.close()


def test_a_reply_the_peer_does_not_take_times_out_and_frees_the_socket():
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sender = BoundedChannel(DeadlineStream(b), max_frame=MAX_REQUEST_FRAME, timeout=0.3)
    started = time.monotonic()
    with pytest.raises(FrameTimeout):
        sender.send(bytes(range(256)) * 40_000)  # 10 MB nobody reads
    assert 0.3 <= time.monotonic() - started < 3
    assert sender.dropped is not None and sender.dropped.kind == "send timeout"
    assert sender.closed
    a.close()


# ---------------------------------------------------------------------- slow readers


def _conn_threads(node) -> int:
    return sum(t.name == CONN_THREAD for t in node.threads())


def _concurrently(*calls: Callable[[], object], timeout: float = 60) -> list[object]:
    """Run each call in a thread of its own; their results, or the first error raised."""
    results: list[object] = [None] * len(calls)

    def run(index: int) -> None:
        try:
            results[index] = calls[index]()
        except BaseException as exc:
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
        assert not thread.is_alive(), "a call did not finish"
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


def test_viewers_that_stop_reading_are_dropped_after_the_send_timeout(make_host, keys):
    """Four viewers with a 4 KiB receive window fill their socket buffers with ping
    echoes, ask for two 30k-task snapshots each and never read a byte. Four viewers that
    read, asking the same while the operator does what it does during the attack, set the
    RSS baseline: the slow ones must leave no more behind."""
    host = make_host("--tasks", "30000", env={"OBSERVER_AGENT_SEND_TIMEOUT": "1.5"})
    process = psutil.Process(host.process.proc.pid)
    operator = host.connect("operator", timeout=30)
    good = [host.connect("viewer", timeout=30) for _ in range(4)]
    _concurrently(
        lambda: [operator.snapshot() for _ in range(3)],
        *(lambda n=n: [n.snapshot() for _ in range(2)] for n in good),
    )
    for node in good:
        node.close()
    wait_until(lambda: _conn_threads(operator) == 1, 10, "good viewers' threads gone")
    before = process.memory_info().rss

    attackers = [Attacker.login(host.address, keys, "viewer", rcvbuf=4096) for _ in range(4)]
    started = time.monotonic()
    stall = {"requests": 2, "fill": 3 * MIB + MIB // 2}
    answers = _concurrently(
        lambda: [len(operator.snapshot().tasks) for _ in range(3)],  # well-behaved, meanwhile
        *(lambda a=a: a.stall("snapshot", 100_000, "", **stall) for a in attackers),
    )[0]
    assert len(answers) == 3 and min(answers) >= 30_000
    wait_until(lambda: _conn_threads(operator) == 1, 30, "slow readers' threads released")
    released = time.monotonic() - started
    assert echo_ok(host.echo)
    drops = {r.peer: r for r in operator.audit() if r.result == "dropped"}
    for attacker in attackers:
        record = drops.get(attacker.peer)
        assert record is not None, f"{attacker.peer} was not audited: {drops}"
        assert (record.role, record.action) == ("viewer", "send timeout"), record
        assert "not completed within 1.5s" in record.detail, record
        attacker.close()
    complete = wait_until(  # a census the time budget cut short could miss them
        lambda: (taken := operator.census(top=1000)).complete and taken, 30, "a full census"
    )
    census = {row.type: row.count for row in complete.types}
    alive = census.get("rpyc.core.protocol.Connection")
    assert alive == 1, f"{alive} rpyc connections alive: only the operator's should be"
    after = process.memory_info().rss
    assert after - before < 2 * RSS_BUDGET, f"RSS {before / MIB:.0f} -> {after / MIB:.0f} MB"
    assert released < 30
    operator.close()


def test_listing_threads_keeps_no_thread_stack_alive():
    """collect_threads kept sys._current_frames() in a local: the dict held the very frame
    that held it, so every stack it saw (a stalled reply among the locals) outlived its
    thread until a full gc. A local of a thread that has ended must die with the thread."""
    from agent.collect.threads import collect_threads

    class Payload:
        pass

    refs: list[weakref.ref] = []
    ready, go = threading.Event(), threading.Event()

    def worker() -> None:
        payload = Payload()
        refs.append(weakref.ref(payload))
        ready.set()
        go.wait(10)

    thread = threading.Thread(target=worker)
    thread.start()
    assert ready.wait(10)
    gc.disable()  # a cycle would be broken by gc: only refcounting may free the payload
    try:
        collect_threads(psutil.Process(), (), {})
        go.set()
        thread.join(10)
        assert refs[0]() is None, "a thread's stack outlived it"
    finally:
        gc.enable()


# ---------------------------------------------------------------------- configuration


def test_send_timeout_comes_from_the_environment_or_the_call():
    base = {"tls_cert": None, "tls_key": None, "tokens": None, "name": "n"}
    assert resolve(None, env={}, **base).send_timeout == DEFAULT_SEND_TIMEOUT
    env = {"OBSERVER_AGENT_SEND_TIMEOUT": "2.5"}
    assert resolve(None, env=env, **base).send_timeout == 2.5
    assert resolve(None, env=env, send_timeout=7, **base).send_timeout == 7
    for bad in ("0", "-1", "nan", "inf", "soon"):
        with pytest.raises(ConfigError, match="OBSERVER_AGENT_SEND_TIMEOUT"):
            resolve(None, env={"OBSERVER_AGENT_SEND_TIMEOUT": bad}, **base)
