"""Pre-fork hosts: children forked from a process with the agent, in every way Python
makes them (os.fork, multiprocessing fork / forkserver / spawn), that exit normally, stop
the agent, die by SIGTERM or SIGKILL, or start an agent of their own.

Each test runs tests/hosts/forker.py (a master with the agent and an echo server) in a
real subprocess, keeps a real operator session open on the master across everything,
and checks what each child held of the master's agent and that the session, new logins
and the echo server all kept answering.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import urllib.request
from collections.abc import Callable, Iterator

import psutil
import pytest

from observer.client import connect
from tests.helpers import HostProcess, echo_ok, line_value, wait_until

METHODS = ["os", "fork", "forkserver", "spawn"]
# what the child does -> the signal the test sends it (None: it ends by itself), exit code
ENDINGS = {"exit": (None, 0), "stop": (None, 0), "term": (signal.SIGTERM, -15)}
ENDINGS["kill"] = (signal.SIGKILL, -9)


class Forker:
    """The running master: its process, agent address and echo address."""

    def __init__(self, keys, *args: str) -> None:
        self.process = HostProcess(
            [sys.executable, "-m", "tests.hosts.forker", str(keys.directory), *args]
        )
        self.agent = line_value(self.process, "agent")
        self.echo = line_value(self.process, "echo")
        self.keys = keys
        self.children: list[int] = []

    def connect(self, address: str | None = None, role: str = "operator"):
        token = self.keys.operator_token if role == "operator" else self.keys.viewer_token
        return connect(address or self.agent, token_file=token, fingerprint=self.keys.fingerprint)

    def fork(self, method: str, how: str, port: str = "") -> tuple[int, dict[str, str]]:
        """Fork a child; its pid and what it said about the agent it inherited
        (``port="metrics"``: its sockets counted on the metrics endpoint's port)."""
        mark = self.process.mark()
        self.process.send(f"fork {method} {how} {port}".strip())
        pid = int(self.process.wait_line(r"^event: forked (\d+)", start=mark).group(1))
        self.children.append(pid)
        said = self.process.wait_line(rf"^event: child {pid} (.*)", start=mark).group(1)
        return pid, dict(word.split("=", 1) for word in said.split())

    def reap(self, pid: int) -> int:
        mark = self.process.mark()
        self.process.send(f"reap {pid}")
        return int(self.process.wait_line(rf"^event: reaped {pid} (-?\d+)", start=mark).group(1))


@pytest.fixture
def forker(keys) -> Iterator[Callable[..., Forker]]:
    started: list[Forker] = []

    def start(*args: str) -> Forker:
        started.append(Forker(keys, *args))
        return started[-1]

    yield start
    for f in started:
        f.process.stop()
        for pid in f.children:  # none is left running, even when a test failed halfway
            with contextlib.suppress(psutil.Error):
                child = psutil.Process(pid)
                if "forker" in " ".join(child.cmdline()) or "multiprocessing" in " ".join(
                    child.cmdline()
                ):
                    child.kill()


@pytest.mark.parametrize("method", METHODS)
def test_children_that_exit_stop_or_die_leave_the_masters_observers_connected(forker, method):
    """A child holds none of the master agent's sockets (a forked one used to keep the
    listener and every session open for its whole life), remembers no agent, and however
    it ends (sys.exit with atexit, agent.stop(), SIGTERM, SIGKILL) the operator session
    opened on the master before the first fork keeps answering, as do new logins and the
    master's echo server."""
    master = forker()
    with master.connect() as session:
        master_pid = session.process().pid
        for how, (sig, code) in ENDINGS.items():
            pid, said = master.fork(method, how)
            assert said["agent-sockets"] == "0", (how, said)
            assert said["running"] == "False" and said["remembers"] == "False", (how, said)
            assert session.process().pid == master_pid
            if sig is not None:
                os.kill(pid, sig)
            assert master.reap(pid) == code, how
            assert session.process().pid == master_pid, how
            with master.connect() as fresh:
                assert fresh.process().pid == master_pid
            assert echo_ok(master.echo)
        assert [c.pid for c in session.children() if c.pid == pid] == []


@pytest.mark.parametrize("method", [*METHODS, "os-locked"])
def test_a_child_that_starts_an_agent_gets_its_own_and_the_master_keeps_its(forker, method):
    """agent.start() in a child (gunicorn's post_fork) starts a real agent of the child's,
    even when the fork happened while a thread of the master held the agent's lock (the
    child used to wait for it forever); stopping the child leaves the master's observers
    connected."""
    master = forker()
    with master.connect() as session:
        master_pid = session.process().pid
        pid, said = master.fork(method, "start")
        assert said["agent-sockets"] == "0" and said["remembers"] == "False", said
        address = master.process.wait_line(rf"^event: child {pid} agent (\S+)").group(1)
        assert address != master.agent
        with master.connect(address) as child:
            assert child.process().pid == pid
            assert session.process().pid == master_pid
        os.kill(pid, signal.SIGTERM)
        assert master.reap(pid) == -15
        assert session.process().pid == master_pid
        assert echo_ok(master.echo)


@pytest.mark.parametrize("method", ["os", "fork"])
def test_a_forked_child_holds_none_of_the_metrics_endpoint_and_scrapes_go_on(forker, method):
    """The master serves Prometheus metrics: a forked child closes its copies of the
    endpoint's listener and wake pair at once (it used to hold the listening socket for its
    whole life), and however it ends the master's endpoint keeps answering scrapes."""
    master = forker("--metrics", "127.0.0.1:0")
    url = line_value(master.process, "metrics")
    port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
    assert b"process_resident_memory_bytes" in scrape(url)
    for how, (sig, code) in ENDINGS.items():
        # a scrape's connection the endpoint is closing at the very moment of a fork may
        # stay open in the child (it was answered already): fork once it is closed
        wait_until(
            lambda: not scrape_connections(master.process.proc.pid, port),
            message="the last scrape's connection closed by the master",
        )
        pid, said = master.fork(method, how, "metrics")
        assert said["agent-sockets"] == "0", (how, said)
        if sig is not None:
            os.kill(pid, sig)
        assert master.reap(pid) == code, how
        assert b"process_resident_memory_bytes" in scrape(url), how


def scrape_connections(pid: int, port: int) -> list[object]:
    """The master's TCP connections accepted on the metrics port (not its listener)."""
    return [
        c
        for c in psutil.Process(pid).net_connections(kind="tcp")
        if c.laddr and c.laddr.port == port and c.status != psutil.CONN_LISTEN
    ]


def scrape(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return reply.read()
