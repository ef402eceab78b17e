"""The agent's front door: one thread accepts connections and runs TLS and the token
challenge for all of them without blocking, each within a total deadline, in a bounded
pool kept apart from the authenticated sessions; an accept error never ends it.

Why one selector thread: a thread per pending handshake costs a thread per idle socket
an attacker opens; here 500 idle or dripping sockets cost at most MAX_PENDING
descriptors and no thread, and a real operator's handshake (a few round trips) goes
through between them.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import json
import logging
import selectors
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from agent.forksafe import openssl
from agent.ratelog import RateLog
from agent.security import Authenticator, Credentials
from agent.tlsqueue import clear_tls_errors, note_tls_failure
from agent.wire import MAX_HANDSHAKE_FRAME, HandshakeError

log = logging.getLogger("agent")

HANDSHAKE_DEADLINE = 5.0  # TLS and the challenge together, from accept to the verdict
MAX_PENDING = 32  # connections still in the handshake, across every peer
ACCEPT_BATCH = 16  # accepts per turn, so handshakes in progress keep moving under a flood
BACKOFF_FIRST = 0.05  # after accept() fails for want of descriptors/buffers: 50 ms ...
BACKOFF_MAX = 1.0  # ... doubling up to 1 s
LIVENESS_EVERY = 1.0  # how often the listener is checked for being closed behind our back
_LEN = struct.Struct(">I")
# accept() failures that concern only the connection being accepted (Linux also passes on
# the new connection's network errors, to be retried like EAGAIN): take the next one
_SKIP = {
    getattr(errno, name)
    for name in [
        "ECONNABORTED",
        "ECONNRESET",
        "EPROTO",
        "EPERM",
        "EINTR",
        "EAGAIN",
        "ETIMEDOUT",
        "ENETDOWN",
        "ENETUNREACH",
        "EHOSTDOWN",
        "EHOSTUNREACH",
        "ENONET",
        "ENOPROTOOPT",
        "EOPNOTSUPP",
    ]
    if hasattr(errno, name)
}
# the listener itself is gone (closed underneath us, or no longer listening)
_DEAD = {errno.EBADF, errno.ENOTSOCK, errno.EINVAL}


class SessionSlots(Protocol):
    """Where authenticated connections go (agent.server.Sessions)."""

    limit: int

    def reserve(self) -> bool: ...

    def release(self) -> None: ...

    def start(self, sock: socket.socket, credentials: Credentials, unsent: bytes) -> None: ...


def encode_frame(message: dict[str, Any]) -> bytes:
    """One handshake frame as agent.wire.send_frame writes it."""
    data = json.dumps(message, separators=(",", ":")).encode()
    return _LEN.pack(len(data)) + data


def decode_frame(body: bytes) -> dict[str, Any]:
    """The JSON object of a handshake frame's body (agent.wire.recv_frame's rules)."""
    try:
        message = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise HandshakeError("handshake frame is not JSON") from exc
    if not isinstance(message, dict):
        raise HandshakeError("handshake frame is not a JSON object")
    return message


class _Pending:
    """One connection in the handshake: where it is, what it owes, when it must be done."""

    __slots__ = (
        "closing",
        "deadline",
        "events",
        "fd",
        "inbuf",
        "ip",
        "last",
        "nonce",
        "out",
        "peer",
        "sock",
        "spoke",
        "tls_done",
        "trusted",
    )

    def __init__(self, sock: socket.socket, ip: str, peer: str, now: float, tls: bool) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.ip = ip
        self.peer = peer
        self.deadline = now + HANDSHAKE_DEADLINE
        self.trusted = False  # its address logged in recently
        self.spoke = False  # the peer has sent something
        self.last = now  # when it last did
        self.tls_done = not tls
        self.nonce = b""
        self.inbuf = bytearray()
        self.out = b""
        self.closing = False  # the verdict is a refusal: close once it is sent
        self.events = 0


class _ListenerGone(Exception):
    """The listening socket no longer works; the gate cannot serve any more."""


class Gate:
    """Accepts, handshakes and hands over; ``serving`` says whether it really does."""

    def __init__(
        self,
        listener: socket.socket,
        tls: ssl.SSLContext | None,
        authenticator: Authenticator,
        sessions: SessionSlots,
        on_thread: Callable[[int], None] = lambda ident: None,
    ) -> None:
        self.listener = listener
        self._tls = tls
        self._auth = authenticator
        self._sessions = sessions
        self._on_thread = on_thread
        self._address = listener.getsockname()
        self._pending: dict[int, _Pending] = {}  # by fd
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._stopping = False
        self._gone = False
        self._thread: threading.Thread | None = None
        self._backoff = 0.0  # > 0 while accept() keeps failing
        self._resume_at = 0.0
        self._shortage_since = 0.0
        self._shortage_count = 0
        self._next_liveness = 0.0
        self._events = RateLog(log, every=10.0)

    # ------------------------------------------------------------ lifecycle

    def start(self, backlog: int = socket.SOMAXCONN) -> None:
        self.listener.listen(backlog)
        self.listener.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._selector.register(self.listener, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._run, name="observer-agent-gate", daemon=True)
        self._thread.start()
        with contextlib.suppress(Exception):  # now, not in the thread: the first load
            self._on_thread(self._thread.ident)  # sample must not count it as the host's

    @property
    def serving(self) -> bool:
        """True while the gate thread runs and its listener accepts."""
        thread = self._thread
        return thread is not None and thread.is_alive() and not (self._gone or self._stopping)

    def stop(self, shutdown: bool = True) -> None:
        """Close the listener and every pending handshake; the port is free on return.

        ``shutdown=False`` only closes this process's descriptors: in a forked child
        they are shared with the parent, and shutdown() would end the parent's too.
        """
        self._stopping = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2.0)
        if thread is None or not thread.is_alive():
            self._close_all(shutdown)
        else:  # wedged: free the port anyway
            with contextlib.suppress(OSError):
                self.listener.close()

    def abandon(self) -> None:
        """In a forked child: close the child's copies of the listener, the wake pair, the
        selector and pending handshakes, never with shutdown() (they are the parent's
        sockets too); the gate thread is not in the child, so nothing is joined."""
        self._stopping = True
        self._thread = None
        # not _forget(): the epoll instance is shared with the parent, and unregistering
        # a handshake there would take it out of the parent's selector
        pending, self._pending = list(self._pending.values()), {}
        for p in pending:
            close_socket(p.sock, shutdown=False)
        with contextlib.suppress(Exception):
            self._selector.close()
        for s in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                s.close()
        with contextlib.suppress(OSError):
            if self._gone:  # its descriptor may be someone else's by now: never close that
                self.listener.detach()
            else:
                self.listener.close()

    # ------------------------------------------------------------ the loop

    def _run(self) -> None:
        with contextlib.suppress(Exception):
            self._on_thread(threading.get_ident())
        try:
            while not self._stopping:
                try:
                    self._turn()
                except _ListenerGone as exc:
                    self._gone = True
                    log.error(
                        "runtime-observer agent: the listener on %s is gone (%s); the agent "
                        "no longer accepts connections (agent.start() opens a new one)",
                        self._where(),
                        exc,
                    )
                    return
                except Exception:  # a bug must not end the door: log, breathe, go on
                    self._events.event(
                        "internal", "runtime-observer agent: listener error", level=logging.ERROR
                    )
                    log.debug("runtime-observer agent: listener error", exc_info=True)
                    time.sleep(0.05)
        finally:
            self._close_all()

    def _turn(self) -> None:
        now = time.monotonic()
        timeout = LIVENESS_EVERY
        if self._pending:
            timeout = min(timeout, min(p.deadline for p in self._pending.values()) - now)
        if self._resume_at:
            timeout = min(timeout, self._resume_at - now)
        ready = self._selector.select(max(0.0, timeout))
        now = time.monotonic()
        accept = False
        # handshakes first, newcomers after: an answer that arrived is read before the
        # next newcomer may push its connection out
        for key, mask in ready:
            if key.fileobj is self._wake_r:
                with contextlib.suppress(OSError):
                    self._wake_r.recv(64)
            elif key.fileobj is self.listener:
                accept = True
            elif self._pending.get(key.data.fd) is key.data:  # not closed earlier this turn
                if mask & selectors.EVENT_READ:
                    key.data.spoke, key.data.last = True, now
                self._step(key.data)
        if self._stopping:
            return
        if accept:
            self._accept(now)
        if self._resume_at and now >= self._resume_at:
            self._selector.register(self.listener, selectors.EVENT_READ, None)
            self._resume_at = 0.0
            self._accept(now)
        for p in [p for p in self._pending.values() if now >= p.deadline]:
            self._events.event(
                "timeout",
                "runtime-observer agent: closed a connection from %s: no login within %gs",
                p.peer,
                HANDSHAKE_DEADLINE,
            )
            self._drop(p)
        if now >= self._next_liveness:
            self._next_liveness = now + LIVENESS_EVERY
            self._check_listener()

    def _where(self) -> str:
        host, port = self._address[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def _check_listener(self) -> None:
        """Notice a listener closed (or replaced) behind our back: epoll would just go quiet."""
        try:
            listening = self.listener.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
            same = self.listener.getsockname() == self._address
        except OSError as exc:
            raise _ListenerGone(exc) from exc
        if not (listening and same):
            raise _ListenerGone("its descriptor no longer is our listening socket")

    # ------------------------------------------------------------ accepting

    def _accept(self, now: float) -> None:
        if self._resume_at:  # backing off: the listener is not registered
            return
        for _ in range(ACCEPT_BATCH):
            try:
                sock, addr = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                # Linux takes the descriptor before it looks at the queue: "nothing to
                # accept" means descriptors are there again
                self._recovered(now)
                break
            except OSError as exc:
                if exc.errno in _DEAD:
                    raise _ListenerGone(exc) from exc
                if exc.errno in _SKIP:
                    continue
                self._shortage(exc, now)  # EMFILE, ENFILE, ENOBUFS, ENOMEM, anything else
                return
            self._recovered(now)
            try:
                self._admit(sock, addr, now)
            except Exception as exc:
                self._events.event(
                    "admit", "runtime-observer agent: could not take a connection: %r", exc
                )
                close_socket(sock)

    def _shortage(self, exc: OSError, now: float) -> None:
        """accept() failed for want of resources: stop polling the listener for a while."""
        if not self._backoff:
            self._shortage_since = now
            self._shortage_count = 0
            log.warning(
                "runtime-observer agent: cannot accept connections on %s: %s; retrying "
                "(50 ms, doubling to 1 s) until it can",
                self._where(),
                exc,
            )
        self._shortage_count += 1
        self._backoff = min(BACKOFF_MAX, self._backoff * 2) if self._backoff else BACKOFF_FIRST
        self._resume_at = now + self._backoff
        self._selector.unregister(self.listener)

    def _recovered(self, now: float) -> None:
        if self._backoff:
            log.warning(
                "runtime-observer agent: accepting connections again after %.1fs (%d failed "
                "attempts)",
                now - self._shortage_since,
                self._shortage_count,
            )
            self._backoff = 0.0

    def _admit(self, sock: socket.socket, addr: Any, now: float) -> None:
        if len(self._pending) >= MAX_PENDING:
            self._evict(now)
        sock.setblocking(False)
        # Replies go out in several writes (TLS records, rpyc frames); without NODELAY the
        # observer's delayed ACK holds each small request/reply pair ~40 ms.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ip, port = str(addr[0]), int(addr[1])
        try:  # a real client has sent its first bytes by the time it is accepted
            spoke = bool(sock.recv(1, socket.MSG_PEEK))
        except OSError:
            spoke = False
        if self._tls is not None:
            with openssl():
                sock = self._tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        p = _Pending(sock, ip, f"{ip}:{port}", now, self._tls is not None)
        p.spoke = spoke
        p.trusted = self._auth.limiter.trusted(ip)
        self._pending[p.fd] = p
        if p.tls_done:
            self._greet(p)
        self._step(p)

    def _evict(self, now: float) -> None:
        """Make room for a newcomer: close a handshake from an address that has not logged
        in lately if there is one; of those, one of the address holding the most; of
        those, one that never sent a byte if any, else the one silent longest.

        A newcomer always gets in, so holding the pool takes a flood of connections
        rather than patience; an operator who logged in before is never pushed out by
        strangers; an address pushes out only its own connections while it holds more
        than the others; a flood of bare connects churns among itself; and a real
        handshake, which answers every round trip, outlasts sockets that drip.
        """
        held = collections.Counter(p.ip for p in self._pending.values())
        victim = max(
            self._pending.values(),
            key=lambda p: (not p.trusted, held[p.ip], not p.spoke, now - p.last),
        )
        self._events.event(
            "evicted",
            "runtime-observer agent: %d connections are in the handshake; closed the idlest, "
            "from %s",
            len(self._pending),
            victim.peer,
        )
        self._drop(victim)

    # ------------------------------------------------------------ handshaking

    def _greet(self, p: _Pending) -> None:
        frame, p.nonce = self._auth.hello()
        p.out = encode_frame(frame)

    def _step(self, p: _Pending) -> None:
        """Move one handshake on as far as its socket allows, then wait for it again.

        Every handshake shares this thread's OpenSSL error queue: one that failed may
        leave its error there, and a sound one's next read that finds nothing yet would
        take it for its own (agent.tlsqueue), so a failure is noted and the queue
        emptied before the next step."""
        if self._tls is not None:
            clear_tls_errors()  # (inside agent.forksafe's guard of its own)
        try:
            with openssl():  # TLS steps and the token check: none waits for the peer
                want = self._advance(p)
        except (HandshakeError, ssl.SSLError, OSError, ValueError) as exc:
            if self._tls is not None:
                note_tls_failure()
            self._events.event(
                "rejected", "runtime-observer agent: rejected %s: %s", p.peer, _reason(exc)
            )
            self._drop(p)
            return
        if want is None:
            return
        if p.events != want:
            if p.events:
                self._selector.modify(p.sock, want, p)
            else:
                self._selector.register(p.sock, want, p)
            p.events = want

    def _advance(self, p: _Pending) -> int | None:
        """The selector events the handshake waits for next, or None once it is handed
        over or closed. Raises for a failed handshake."""
        if not p.tls_done:
            try:
                p.sock.do_handshake()
            except ssl.SSLWantReadError:
                return selectors.EVENT_READ
            except ssl.SSLWantWriteError:
                return selectors.EVENT_WRITE
            p.tls_done = True
            self._greet(p)
        while True:
            if p.out:
                try:
                    sent = p.sock.send(p.out)
                except (ssl.SSLWantWriteError, BlockingIOError):
                    return selectors.EVENT_WRITE
                except ssl.SSLWantReadError:
                    return selectors.EVENT_READ
                p.out = p.out[sent:]
                if p.out:
                    continue
            if p.closing:
                self._drop(p)
                return None
            message = self._read(p)
            if message is None:
                return selectors.EVENT_READ
            if self._decide(p, message) is None:
                return None

    def _read(self, p: _Pending) -> dict[str, Any] | None:
        """The observer's frame once it is complete, else None (wait for more)."""
        while True:
            need = _LEN.size
            if len(p.inbuf) >= _LEN.size:
                (length,) = _LEN.unpack_from(p.inbuf)
                if length > MAX_HANDSHAKE_FRAME:
                    raise HandshakeError(f"handshake frame of {length} bytes exceeds limit")
                need += length
                if len(p.inbuf) == need:
                    return decode_frame(bytes(p.inbuf[_LEN.size :]))
            try:
                chunk = p.sock.recv(need - len(p.inbuf))
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                return None
            if not chunk:
                raise HandshakeError("connection closed during handshake")
            p.inbuf += chunk

    def _decide(self, p: _Pending, message: dict[str, Any]) -> bool | None:
        """Judge the proof; hand the connection to a session or queue the refusal.
        None when the connection left the pool."""
        verdict = self._auth.judge(message, p.nonce, p.ip, p.peer)
        reply = verdict.reply
        if verdict.role is not None:
            if self._sessions.reserve():
                self._hand_over(p, Credentials(verdict.role, p.peer), encode_frame(reply))
                return None
            limit = self._sessions.limit
            reply = {
                "ok": False,
                "error": "busy",
                "sessions": limit,
                "message": f"agent busy ({limit} sessions)",
            }
            self._events.event(
                "busy",
                "runtime-observer agent: refused %s: all %d sessions are taken",
                p.peer,
                limit,
            )
        p.out = encode_frame(reply)
        p.closing = True
        return True

    def _hand_over(self, p: _Pending, credentials: Credentials, reply: bytes) -> None:
        self._forget(p)
        try:
            sent = p.sock.send(reply)
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
            sent = 0
        except OSError:
            self._sessions.release()
            close_socket(p.sock)
            return
        try:
            self._sessions.start(p.sock, credentials, reply[sent:])
        except Exception:
            self._sessions.release()
            log.warning("runtime-observer agent: could not start a session", exc_info=True)
            close_socket(p.sock)

    # ------------------------------------------------------------ cleanup

    def _forget(self, p: _Pending) -> None:
        if self._pending.get(p.fd) is p:
            del self._pending[p.fd]
        if p.events:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.unregister(p.sock)
            p.events = 0

    def _drop(self, p: _Pending) -> None:
        self._forget(p)
        close_socket(p.sock)

    def _close_all(self, shutdown: bool = True) -> None:
        for p in list(self._pending.values()):
            self._forget(p)
            close_socket(p.sock, shutdown)
        with contextlib.suppress(Exception):
            self._selector.close()
        for s in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                s.close()
        if self._gone:  # its descriptor may be someone else's by now: never close that
            with contextlib.suppress(OSError):
                self.listener.detach()
        else:
            close_socket(self.listener, shutdown)


def close_socket(sock: socket.socket, shutdown: bool = True) -> None:
    """Close a socket, never raising; ``shutdown`` first ends the connection for every
    process holding it (a forked child passes False: the parent's copy lives on)."""
    if shutdown:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


def hang_up(sock: socket.socket) -> None:
    """End a connection another thread may be reading or writing, never raising: shut
    it down (the thread wakes to an end of stream) but leave its descriptor to that
    thread to close as it lets go. A number closed under a reader is free for the host's
    next open(), and OpenSSL, which keeps the number, would read the host's file as the
    next record (observer.rpc saw it happen). socket.socket's own shutdown: an
    SSLSocket's would drop its TLS object from under the reader."""
    with contextlib.suppress(OSError, ValueError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    return str(exc) or type(exc).__name__
