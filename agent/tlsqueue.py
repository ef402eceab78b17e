"""Empty the calling thread's OpenSSL error queue before a timed TLS read or write.

A TLS socket with a timeout that finds no record yet (or a full send buffer) asks
OpenSSL's SSL_get_error what happened, and that reads the thread's error queue first.
CPython never empties the queue before a read or write (python/cpython#148594), and on
3.14+ a link whose peer went away leaves its error there: the next timed read of a
sound link in the same thread then fails with the dead link's 'Broken pipe'. Blocking
reads after a poll (rpyc's own) never ask; timed ones (the observer's client, the
agent's frame deadlines, the master's links to its workers) must start clean.
"""

from __future__ import annotations

import contextlib
import ssl

_flusher: ssl.SSLContext | None = None


def clear_tls_errors() -> None:
    """Empty this thread's OpenSSL error queue (~10 us). CPython's set_ciphers empties
    it when it refuses a list; a list naming no cipher is always refused and leaves the
    context as it was. tests/test_rpc.py holds that this still clears a queue a dead
    link filled, on every supported Python."""
    global _flusher
    if _flusher is None:
        _flusher = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    with contextlib.suppress(ssl.SSLError):
        _flusher.set_ciphers("NO-SUCH-CIPHER")
