"""Keeps the agent's threads out of OpenSSL while the host forks.

fork() copies OpenSSL's locks into the child as they are: one that an agent thread holds
at that instant (a login's handshake, a relay link's, a metrics scrape's, a new thread's
first random bytes) is held in the child for ever, and the child's first TLS use hangs:
its worker agent's handshake, or the app's own HTTPS (tests/test_forksafe.py: 5-6 of
2000 children forked while observers logged in and relayed to a worker). So every
OpenSSL call an agent thread makes with the GIL released goes inside ``openssl()``, and
a fork first waits, at most FORK_WAIT, until none is inside. Such calls never wait for
the network (sockets are non-blocking there), so a fork waits microseconds; reads and
writes on an established session are left out (they wait for data, and TLS 1.3 records
take no global lock; the server sends no session tickets, whose making would).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import ssl
import threading
import time
from collections.abc import Iterator

FORK_WAIT = 1.0  # seconds a fork waits at most for agent threads to leave OpenSSL

_cond = threading.Condition(threading.Lock())
_inside = 0  # agent threads in OpenSSL now
_forking = False  # a fork is waiting for them: no new one goes in
_installed = False
_depth = threading.local()  # .n: this thread's openssl() sections open (they nest)


@contextlib.contextmanager
def openssl() -> Iterator[None]:
    """Around an OpenSSL call that releases the GIL and never blocks on the network."""
    nested = getattr(_depth, "n", 0)
    if not nested:
        _enter()
    _depth.n = nested + 1
    try:
        yield
    finally:
        _depth.n = nested
        if not nested:  # only the outermost counts: a nested one waiting for a fork
            _leave()  # would keep the fork waiting on this very thread


def _enter() -> None:
    global _inside
    with _cond:
        while _forking:
            _cond.wait()
        _inside += 1


def _leave() -> None:
    global _inside
    with _cond:
        _inside -= 1
        if _forking and not _inside:
            _cond.notify_all()


def install() -> None:
    """Make every os.fork() of this process wait for agent threads in OpenSSL (once)."""
    global _installed
    with _cond:
        if _installed or not hasattr(os, "register_at_fork"):
            return
        os.register_at_fork(
            before=_before_fork, after_in_parent=_after_fork, after_in_child=_after_fork_in_child
        )
        _installed = True


def _before_fork() -> None:
    global _forking
    with _cond:
        _forking = True
        _cond.wait_for(lambda: not _inside, FORK_WAIT)  # past it: fork anyway, never hang


def _after_fork() -> None:
    global _forking
    with _cond:
        _forking = False
        _cond.notify_all()


def _after_fork_in_child() -> None:
    """The child has only the forking thread: nobody is inside, nobody waits."""
    global _cond, _inside, _forking
    _cond, _inside, _forking = threading.Condition(threading.Lock()), 0, False


def handshake(sock: ssl.SSLSocket, timeout: float) -> None:
    """A client's TLS handshake on ``sock`` (wrapped with do_handshake_on_connect=False)
    within ``timeout`` seconds: each step inside openssl(), the waits for the peer
    outside. Leaves the socket non-blocking. The caller's thread should have its OpenSSL
    state made (agent.tlsqueue.prepare_thread) for the reads and writes that follow."""
    sock.setblocking(False)
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:  # any descriptor number, unlike select()
        selector.register(sock, selectors.EVENT_READ)
        while True:
            with openssl():
                try:
                    sock.do_handshake()
                    return
                except ssl.SSLWantReadError:
                    want = selectors.EVENT_READ
                except ssl.SSLWantWriteError:
                    want = selectors.EVENT_WRITE
            selector.modify(sock, want)
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                raise TimeoutError("The handshake operation timed out")
