"""Attacks on the agent's listener: running out of descriptors, a listener closed behind
the agent's back, idle and dripping sockets from many addresses, every session taken.

Each test starts a real host with the agent in a subprocess, attacks it from loopback
(the attacker in a process of its own where it holds sockets), and checks what a real
operator saw and that the host's own echo service kept answering.
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator

import pytest

import agent
from observer.client import connect
from observer.errors import ConnectError
from tests.attack.tools import tcp_from
from tests.helpers import HostProcess, echo_ok, line_value, wait_until


@pytest.fixture
def attack_host(keys) -> Iterator[object]:
    """Start tests/attack/host.py (the agent, an echo service, commands) with options."""
    started: list[HostProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> HostProcess:
        proc = HostProcess(
            [sys.executable, "-m", "tests.attack.host", str(keys.directory), *args], env=env
        )
        started.append(proc)
        proc.agent = line_value(proc, "agent")  # type: ignore[attr-defined]
        proc.echo = line_value(proc, "echo")  # type: ignore[attr-defined]
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def attacker() -> Iterator[object]:
    """Run tests.attack.tools' socket holder in a process of its own."""
    started: list[HostProcess] = []

    def hold(address: str, *args: str) -> HostProcess:
        proc = HostProcess([sys.executable, "-m", "tests.attack.tools", "hold", address, *args])
        started.append(proc)
        proc.wait_line(r"^ready opened=")
        return proc

    yield hold
    for proc in started:
        proc.stop()


def operator_connect(address: str, keys, limit: float = 5.0) -> float:
    """Connect as the operator, make one call; seconds the connect took."""
    start = time.monotonic()
    node = connect(
        address, token_file=keys.operator_token, fingerprint=keys.fingerprint, timeout=limit
    )
    took = time.monotonic() - start
    try:
        assert node.role == "operator" and node.process().pid
    finally:
        node.close()
    return took


def status(host: HostProcess) -> bool:
    """What agent.running() says in the host right now."""
    mark = host.mark()
    host.send("status")
    return host.wait_line(r"^event: status running=(\w+)", start=mark).group(1) == "True"


def stat(line: str, key: str) -> float:
    return float(line.split(f"{key}=")[1].split()[0])


def test_accept_errors_back_off_and_the_agent_keeps_accepting(attack_host, keys):
    """The host runs with 64 descriptors and its own echo service takes nearly all of
    them; one observer connects meanwhile. rpyc turned that EMFILE into the end of the
    listener, silently. Now the agent logs once, backs off and accepts again as soon as
    descriptors are back."""
    host = attack_host("--nofile", "64")
    assert operator_connect(host.agent, keys) < 5
    held: list[socket.socket] = []
    try:
        while True:  # take the host's descriptors with echo connections until it cannot
            conn = tcp_from(host.echo, timeout=10)
            held.append(conn)
            conn.sendall(b"ping\n")
            conn.settimeout(1.0)
            try:
                assert conn.recv(100) == b"pong ping\n"
            except TimeoutError:
                break  # accepted by the kernel, not by the host: it is out of descriptors
            assert len(held) < 64, "the host never ran out of descriptors"
        early = tcp_from(host.agent)  # the kernel queues it; the agent's accept() fails
        held.append(early)
        wait_until(
            lambda: any("cannot accept connections" in line for line in host.stderr),
            timeout=10,
            message="the agent logs that it cannot accept",
        )
        assert status(host), "still serving: out of descriptors is not dead"
    finally:
        for conn in held:
            conn.close()
    assert wait_until(lambda: echo_ok(host.echo), message="the host's echo answers again")
    took = wait_until(lambda: operator_connect(host.agent, keys), timeout=10)
    assert took < 5

    def episodes() -> tuple[int, int]:
        """(shortages logged, recoveries logged)."""
        lines = list(host.stderr)
        return (
            sum("cannot accept connections" in line for line in lines),
            sum("accepting connections again" in line for line in lines),
        )

    # once per shortage, not per failed accept (it retried every 50 ms to 1 s meanwhile),
    # and each shortage's end once. A full CI run on 3.14 once logged two shortages: an
    # accept can succeed in between when a thread of the host frees a descriptor for a
    # moment while the attacker holds the rest (the likely cause; 5 of 5 runs alone
    # logged one), and the next failed accept starts another
    wait_until(
        lambda: episodes()[0] == episodes()[1] >= 1,
        message="each shortage and each recovery logged once",
    )
    shortages, _ = episodes()
    assert shortages <= 3, [line for line in host.stderr if "accept" in line]
    assert status(host)


def test_a_dead_listener_is_reported_and_replaced(attack_host, keys):
    """A host bug closes the agent's listening descriptor. agent.running() used to keep
    returning the dead server and agent.start() returned it again; now running() says
    None and start() opens a new listener."""
    host = attack_host()
    assert status(host)
    mark = host.mark()
    host.send("break-listener")
    host.wait_line(r"^event: listener closed", start=mark)
    wait_until(lambda: not status(host), timeout=10, message="running() reports the dead agent")
    assert any("no longer accepts connections" in line for line in host.stderr)
    mark = host.mark()
    host.send("agent-start")
    started = host.wait_line(r"^event: agent started (\S+) running=(\w+)", start=mark)
    assert started.group(1) != host.agent and started.group(2) == "True"
    assert operator_connect(started.group(1), keys) < 5
    assert echo_ok(host.echo)


def test_a_forked_child_starts_its_own_agent_and_leaves_the_parents_alone(attack_host, keys):
    """A worker forked from a host with the agent calls agent.start(): the inherited agent
    serves nothing there, so running() says None and start() opens the child's own,
    without shutting down the descriptors it shares with the parent's agent."""
    host = attack_host()
    with connect(
        host.agent, token_file=keys.operator_token, fingerprint=keys.fingerprint
    ) as parent_session:
        mark = host.mark()
        host.send("fork-start")
        child = host.wait_line(r"^event: child (\d+) inherited=(\S+) agent (\S+)", start=mark)
        try:
            assert child.group(2) == "False" and child.group(3) != host.agent
            with connect(
                child.group(3), token_file=keys.operator_token, fingerprint=keys.fingerprint
            ) as node:
                assert node.process().pid == int(child.group(1))
            assert parent_session.process().pid == host.proc.pid  # its session lives on
            assert operator_connect(host.agent, keys) < 5  # and its listener too
        finally:
            mark = host.mark()
            host.send("fork-end")
            host.wait_line(r"^event: child ended", start=mark)
    assert operator_connect(host.agent, keys) < 5
    assert echo_ok(host.echo)


def test_idle_sockets_from_many_addresses_never_keep_the_operator_out(attack_host, attacker, keys):
    """100 idle connections from 10 addresses: more than the handshake pool and than the
    session slots. They used to take every slot for 10 s; now the operator gets in
    within a second, every time, and the host keeps answering."""
    host = attack_host()
    hold = attacker(host.agent, "--count", "100", "--mode", "idle", "--sources", "10")
    times = [operator_connect(host.agent, keys) for _ in range(5)]
    assert max(times) < 1.0, times
    assert echo_ok(host.echo)
    assert hold.proc.poll() is None  # the attacker was still at it


def test_dripping_sockets_are_cut_at_the_deadline_and_the_operator_gets_in(
    attack_host, attacker, keys
):
    """100 connections that finish TLS and then answer the challenge one byte every
    0.5 s. The handshake timeout used to apply to each recv(), so they held their slots
    forever; now TLS and the challenge together get 5 s, and the operator gets in
    meanwhile."""
    host = attack_host()
    hold = attacker(
        host.agent, "--count", "100", "--mode", "drip", "--interval", "0.5", "--sources", "10"
    )
    times = [operator_connect(host.agent, keys) for _ in range(5)]
    assert max(times) < 1.0, times
    assert echo_ok(host.echo)
    last = wait_until(
        lambda: hold.lines[-1] if stat(hold.lines[-1], "closed") == 100 else None,
        timeout=12,
        message=f"the agent closes every dripping socket: {hold.lines[-1:]}",
    )
    assert stat(last, "max_closed_age") < 6.5, last  # 5 s deadline + scheduling slack


def test_a_refused_observer_is_told_the_agent_is_busy(attack_host, keys):
    """OBSERVER_AGENT_MAX_SESSIONS=2: a third operator is told 'agent busy (2 sessions)',
    not a TLS error, and gets in once one leaves."""
    host = attack_host(env={"OBSERVER_AGENT_MAX_SESSIONS": "2"})
    creds = {"token_file": keys.operator_token, "fingerprint": keys.fingerprint}
    first, second = connect(host.agent, **creds), connect(host.agent, **creds)
    try:
        with pytest.raises(ConnectError, match=r"agent busy \(2 sessions\)"):
            connect(host.agent, **creds)
        first.close()
        third = wait_until(lambda: connect(host.agent, **creds), message="a slot frees")
        assert third.process().pid
        third.close()
    finally:
        first.close()
        second.close()
    assert echo_ok(host.echo)


def test_max_sessions_from_the_command_line(tmp_path, keys):
    script = tmp_path / "idle.py"
    script.write_text("import threading\nthreading.Event().wait()\n")
    proc = HostProcess(
        [
            sys.executable,
            "-m",
            "agent",
            "run",
            "--bind",
            "127.0.0.1:0",
            "--keys",
            str(keys.directory),
            "--max-sessions",
            "1",
            "--print-address",
            "--",
            str(script),
        ]
    )
    try:
        address = proc.wait_line(r"^agent: (\S+)").group(1)
        creds = {"token_file": keys.operator_token, "fingerprint": keys.fingerprint}
        with connect(address, **creds):
            with pytest.raises(ConnectError, match=r"agent busy \(1 sessions\)"):
                connect(address, **creds)
    finally:
        proc.stop()


def test_max_sessions_from_agent_start(keys):
    tokens = {"operator": keys.operator_token.read_text().strip()}
    server = agent.start(
        "127.0.0.1:0",
        tls_cert=str(keys.cert),
        tls_key=str(keys.key),
        tokens=tokens,
        name="capped",
        max_sessions=1,
    )
    try:
        creds = {"token": tokens["operator"], "fingerprint": keys.fingerprint}
        with connect(server.address, **creds):
            with pytest.raises(ConnectError, match=r"agent busy \(1 sessions\)"):
                connect(server.address, **creds)
    finally:
        agent.stop()
