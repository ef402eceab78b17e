"""A host that forks while observers log in leaves its children a working OpenSSL
(agent/forksafe.py).

OpenSSL's locks are copied into a forked child as they were: one another thread held at
the fork is held in the child for ever, and the child's first TLS use (its worker agent's
handshake, the app's own HTTPS) hangs. The agent's threads do TLS (logins, relay links,
metrics scrapes) beside a pre-fork server's forks: a gunicorn worker forked during the
master's first login could never answer its agent's handshake. Real parts: an agent in a
host process (tests/hosts/forktls.py) forking children one after another, the real
client logging in over and over meanwhile, each child using TLS in a new thread.
"""

from __future__ import annotations

import sys
import threading

from tests.helpers import HostProcess, line_value

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
