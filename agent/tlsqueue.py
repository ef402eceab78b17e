"""Empty the calling thread's OpenSSL error queue before a timed TLS read or write, when
a TLS operation of that thread failed since it was last emptied.

A TLS socket with a timeout that finds no record yet (or a full send buffer) asks
OpenSSL's SSL_get_error what happened, and that reads the thread's error queue first.
CPython never empties the queue before a read or write (python/cpython#148594), and on
3.14+ a link whose peer went away leaves its error there: the next timed read of a
sound link in the same thread then fails with the dead link's 'Broken pipe'. Blocking
reads after a poll (rpyc's own) never ask; timed ones (the observer's client, the
agent's frame deadlines, the master's links to its workers) must start clean.

Emptying it costs ~10 us (the only way Python offers is a refused cipher list), a tenth
of a worker's CPU per tree refresh when done before every frame; so the code that sees
a TLS operation fail says so (``note_tls_failure``) and the queue is emptied only then.
Code outside ours can fail in the same thread without saying so (a library's own TLS
link, a stock rpyc peer); ``recv_into`` therefore asks once more, on a clean queue,
before it takes a read's failure for the link's own.
"""

from __future__ import annotations

import contextlib
import ssl
import threading
from typing import Any

from agent.forksafe import openssl

_flusher: ssl.SSLContext | None = None
_thread = threading.local()  # .failed: a TLS operation of this thread failed since
_UNKNOWN: Any = object()
_stop: Any = _UNKNOWN  # OPENSSL_thread_stop, once looked up (None: not to be had)


def note_tls_failure() -> None:
    """A TLS operation of this thread failed: its error may sit in the thread's queue."""
    _thread.failed = True


def clear_tls_errors() -> None:
    """Empty this thread's OpenSSL error queue if a failure was noted since last time."""
    if getattr(_thread, "failed", False):
        _thread.failed = False
        flush_tls_errors()


def flush_tls_errors() -> None:
    """Empty this thread's OpenSSL error queue now (~10 us). CPython's set_ciphers empties
    it when it refuses a list; a list naming no cipher is always refused and leaves the
    context as it was. tests/test_rpc.py holds that this still clears a queue a dead
    link filled, on every supported Python."""
    global _flusher
    with openssl(), contextlib.suppress(ssl.SSLError):
        if _flusher is None:
            _flusher = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        _flusher.set_ciphers("NO-SUCH-CIPHER")


def prepare_thread() -> None:
    """Make this thread's own OpenSSL state now (its error queue, its random generator),
    with the GIL held. A thread's first TLS read or write makes them under OpenSSL's
    global locks with the GIL released, and those reads and writes wait for data, outside
    agent.forksafe's guard: a host forking meanwhile would leave its child a lock held
    for ever."""
    with openssl():
        ssl.RAND_bytes(1)
        flush_tls_errors()


def finish_thread() -> None:
    """Free this thread's OpenSSL state now, inside agent.forksafe's guard, as the thread
    ends: OpenSSL would otherwise free it after the thread's last Python code, under a
    global lock that a host forking at that instant leaves held in its child (a child
    forked as a session thread ended once hung so, in 1 of ~5000 forks)."""
    stop = _thread_stop()
    if stop is not None:
        with openssl():
            stop()


def _thread_stop() -> Any:
    """OpenSSL's OPENSSL_thread_stop as the ssl module links it, or None (not found)."""
    global _stop
    if _stop is _UNKNOWN:
        try:
            import _ssl
            import ctypes

            _stop = ctypes.CDLL(_ssl.__file__).OPENSSL_thread_stop
            _stop.restype, _stop.argtypes = None, []
        except Exception:  # no ctypes, a static build without the symbol: leave it be
            _stop = None
    return _stop


def recv_into(sock: Any, view: memoryview, size: int) -> int:
    """``sock.recv_into``, asked once more after emptying the queue when it fails: the
    failure may be a stale entry another link left unnoted. A dead link fails again
    (its SSL object stays failed, its socket reset), so only a sound one gets through."""
    try:
        return sock.recv_into(view, size)
    except TimeoutError:
        raise
    except OSError:
        flush_tls_errors()
        return sock.recv_into(view, size)
