"""A host that forks while observers log in leaves its children a working OpenSSL
(agent/forksafe.py).

OpenSSL's locks are copied into a forked child as they were: one another thread held at
the fork is held in the child for ever, and the child's first TLS use (its worker agent's
handshake, the app's own HTTPS) hangs. The agent's threads do TLS (logins, relay links,
metrics scrapes) beside a pre-fork server's forks: a gunicorn worker forked during the
master's first login could never answer its agent's handshake. Real parts: an agent in a
host process (tests/hosts/forktls.py) forking children one after another, the real
client logging in over and over meanwhile, each child using TLS in a new thread; and the
guard's own rules with real forks: a fork waits until the thread inside leaves, and at
most FORK_WAIT.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable

import psutil
import pytest

from agent import forksafe
from tests.helpers import HostProcess, line_value, wait_until

FORKS = 1500  # children forked while logins go on (without the guard ~0.3% hung: 4-7 of 2000)
LOGGERS = 3  # threads logging in over and over meanwhile


def test_children_forked_during_logins_can_use_tls(keys):
    from observer.client import connect

    host = HostProcess([sys.executable, "-m", "tests.hosts.forktls", str(keys.directory)])
    try:
        address = line_value(host, "agent")
        host.send("worker")
        worker = int(host.wait_line(r"^event: worker (\d+)$").group(1))
        done = threading.Event()
        logins: list[int] = []

        def log_in_again_and_again() -> None:
            count = 0
            while not done.is_set():
                with connect(
                    address, token_file=keys.operator_token, fingerprint=keys.fingerprint
                ) as node:
                    assert node.worker(worker).process().pid == worker  # a new relay link
                    count += 1
            logins.append(count)

        loggers = [threading.Thread(target=log_in_again_and_again) for _ in range(LOGGERS)]
        for thread in loggers:
            thread.start()
        try:
            host.send(f"forks {FORKS}")
            found = host.wait_line(r"^event: forks \d+ hung (\d+)$", timeout=120)
        finally:
            done.set()
            for thread in loggers:
                thread.join(30)
        assert sum(logins) >= FORKS // 10, logins  # the forks met logins in progress
        assert int(found.group(1)) == 0, f"{found.group(1)} of {FORKS} children hung"
    finally:
        host.stop()
    wait_until(lambda: not _running(worker), message=f"the host's worker {worker} to end")


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _fork_and_report(check: Callable[[], bool]) -> tuple[bool, float]:
    """Fork; the child exits 0 when ``check()`` holds in it. (whether it held, seconds
    os.fork() took in the parent)"""
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: answer and leave at once, whatever happens
        try:
            os._exit(0 if check() else 1)
        finally:
            os._exit(2)
    took = time.monotonic() - started
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0, took


def _inside_until(release: threading.Event, left: list[bool]) -> threading.Thread:
    """A thread inside forksafe.openssl() until ``release`` is set; ``left`` gets True just
    before it leaves."""
    entered = threading.Event()

    def hold() -> None:
        with forksafe.openssl():
            with forksafe.openssl():  # sections nest: the inner one never waits for a fork
                entered.set()
                release.wait(30)
            left.append(True)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert entered.wait(10)
    return thread


def _when_a_fork_waits(then: Callable[[], None]) -> threading.Thread:
    """A thread that calls ``then()`` once a fork waits in forksafe's before-hook."""

    def watch() -> None:
        deadline = time.monotonic() + 10
        while not forksafe._forking and time.monotonic() < deadline:
            threading.Event().wait(0.001)
        then()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


# forking this threaded process is the point: 3.12+ warns of exactly what is tested here
FORKS_THREADS = pytest.mark.filterwarnings("ignore:This process .* is multi-threaded")


@FORKS_THREADS
def test_a_fork_waits_until_the_agent_thread_leaves_openssl():
    """The child is forked only after the thread inside left: the child sees it gone."""
    forksafe.install()
    release, left = threading.Event(), []
    holder = _inside_until(release, left)
    watcher = _when_a_fork_waits(release.set)
    held, _ = _fork_and_report(lambda: left == [True])
    watcher.join(10)
    holder.join(10)
    assert held, "the child was forked while the agent's thread was still inside OpenSSL"
    with forksafe.openssl():  # and the guard is open again in the parent
        pass


@FORKS_THREADS
def test_a_fork_waits_at_most_fork_wait(monkeypatch):
    """A thread stuck inside never stalls the host's fork past FORK_WAIT."""
    forksafe.install()
    monkeypatch.setattr(forksafe, "FORK_WAIT", 0.2)
    release, left = threading.Event(), []
    holder = _inside_until(release, left)
    try:
        forked, took = _fork_and_report(lambda: not left)
    finally:
        release.set()
        holder.join(10)
    assert forked and 0.2 <= took < 5, took
