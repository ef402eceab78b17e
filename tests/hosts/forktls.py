"""A host with the agent whose main thread forks children on command while observers
log in (tests/test_forksafe.py). Each child, in a new thread, does what a worker's first
TLS use does (a fresh DRBG, a client context, a digest) within CHILD_LIMIT seconds; one
that cannot has inherited an OpenSSL lock held at the fork and would hang for ever.

The agent runs with workers=True. Commands on stdin:
- ``worker``: fork a child that waits until killed (a pre-fork server's worker, with a
  worker agent the master's sessions reach through relay links); prints
  ``event: worker PID``.
- ``forks N``: fork N children one after another; prints ``event: forks N hung K`` (K:
  children killed by their alarm or failed otherwise).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import signal
import ssl
import sys
import threading

from tests.hosts.common import start_agent

PR_SET_PDEATHSIG = 1  # linux/prctl.h
CHILD_LIMIT = 3  # seconds a child's first TLS use may take before it counts as hung (~ms)


def first_tls_use() -> None:
    """A new thread's first OpenSSL work: what a forked worker's agent or app does."""
    ssl.RAND_bytes(16)
    ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    hashlib.sha256(b"x" * 4096).digest()


def child() -> None:
    signal.alarm(CHILD_LIMIT)
    try:
        worker = threading.Thread(target=first_tls_use)
        worker.start()
        worker.join()
    except BaseException:
        os._exit(2)
    os._exit(0)


def forks(count: int) -> int:
    """Fork ``count`` children one after another; how many did not exit 0."""
    hung = 0
    for _ in range(count):
        pid = os.fork()
        if pid == 0:
            child()
        _, status = os.waitpid(pid, 0)
        hung += os.waitstatus_to_exitcode(status) != 0
    return hung


def worker() -> int:
    """A child that waits until killed (by the host as it ends, or by the kernel when the
    host dies: it must not outlive its test); its agent wakes when the master relays."""
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the host died before the request took
            os._exit(0)
        while True:
            signal.pause()
    return pid


def main() -> None:
    server = start_agent(sys.argv[1], "forktls", workers=True)
    print(f"agent: {server.address}", flush=True)
    workers: list[int] = []

    def end(_signum: int, _frame: object) -> None:  # the test's stop(): workers first
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        os._exit(0)

    signal.signal(signal.SIGTERM, end)
    for line in sys.stdin:
        words = line.split()
        if words[:1] == ["worker"]:
            workers.append(worker())
            print(f"event: worker {workers[-1]}", flush=True)
        elif words[:1] == ["forks"]:
            count = int(words[1])
            print(f"event: forks {count} hung {forks(count)}", flush=True)
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    server.stop()


if __name__ == "__main__":
    main()
