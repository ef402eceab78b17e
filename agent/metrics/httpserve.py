"""A read-only HTTP endpoint on one daemon thread: GET /metrics, nothing else.

Built like agent.gate, for the same reasons: one selector thread serves every connection
without blocking, each within a total deadline (accept to last byte sent), at most
MAX_CONNECTIONS at once (a newcomer pushes out the idlest), a request head of at most
MAX_REQUEST bytes, one request per connection. So slowloris, a huge request or a flood of
connections cost a bounded number of descriptors and no thread, and a real scraper,
which sends its whole request as it connects, is answered in the turn it is accepted.
The thread also calls ``tick`` about once a second (the loop-lag probes). Nothing it
does raises into the host.
"""

from __future__ import annotations

import collections
import contextlib
import hmac
import logging
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

from agent.forksafe import openssl
from agent.gate import close_socket
from agent.ratelog import RateLog

log = logging.getLogger("agent")

DEADLINE = 5.0  # seconds from accept to the response's last byte
MAX_CONNECTIONS = 16
MAX_REQUEST = 8192  # bytes of request line and headers
ACCEPT_BATCH = 16
TICK_EVERY = 1.0
BACKOFF_MAX = 1.0

# what a request gets: (status line, content type, body)
Render = Callable[[str], tuple[bytes, str]]


class _Conn:
    __slots__ = ("deadline", "events", "inbuf", "ip", "out", "peer", "sock", "spoke", "tls_done")

    def __init__(self, sock: socket.socket, ip: str, port: int, now: float, tls: bool) -> None:
        self.sock = sock
        self.ip = ip
        self.peer = f"{ip}:{port}"
        self.deadline = now + DEADLINE
        self.inbuf = bytearray()
        self.out = b""
        self.spoke = False
        self.tls_done = not tls
        self.events = 0


class _BadRequest(Exception):
    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


class MetricsHTTPServer:
    """Serves ``render(accept_header)`` at /metrics; optional bearer token and TLS."""

    def __init__(
        self,
        listener: socket.socket,
        render: Render,
        *,
        token: str | None = None,
        tls: ssl.SSLContext | None = None,
        tick: Callable[[], None] = lambda: None,
        on_thread: Callable[[int], None] = lambda ident: None,
    ) -> None:
        self.listener = listener
        self._render = render
        self._token = token.encode() if token else None
        self._tls = tls
        self._tick = tick
        self._on_thread = on_thread
        self._conns: dict[int, _Conn] = {}
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._next_tick = 0.0
        self._resume_at = 0.0
        self._backoff = 0.0
        self._events = RateLog(log, every=10.0)
        self.address = listener.getsockname()[:2]
        self.served = 0  # responses sent in full, for tests and the bench

    def start(self) -> None:
        self.listener.listen(64)
        self.listener.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._selector.register(self.listener, selectors.EVENT_READ, None)
        self._thread = threading.Thread(
            target=self._run, name="observer-agent-metrics", daemon=True
        )
        self._thread.start()

    @property
    def serving(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive() and not self._stopping

    def stop(self, shutdown: bool = True) -> None:
        """Close the listener and every connection (only this process's descriptors with
        ``shutdown=False``: a forked child shares them with its parent)."""
        self._stopping = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2.0)
        if thread is None or not thread.is_alive():
            self._close_all(shutdown)
        else:
            with contextlib.suppress(OSError):
                self.listener.close()

    def abandon(self) -> None:
        """In a forked child: close the child's copies of the listener, connections, wake
        pair and selector, never with shutdown() (they are the parent's sockets too) and
        without unregistering from the epoll instance the parent shares; nothing is joined,
        the serving thread is not in the child."""
        self._stopping = True
        self._thread = None
        conns, self._conns = list(self._conns.values()), {}
        for c in conns:
            close_socket(c.sock, shutdown=False)
        with contextlib.suppress(Exception):
            self._selector.close()
        for s in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                s.close()
        close_socket(self.listener, shutdown=False)

    # ------------------------------------------------------------ the loop

    def _run(self) -> None:
        with contextlib.suppress(Exception):
            self._on_thread(threading.get_ident())
        try:
            while not self._stopping:
                try:
                    self._turn()
                except Exception:  # a bug must not end the endpoint, nor reach the host
                    self._events.event(
                        "internal", "runtime-observer agent: metrics endpoint error", level=40
                    )
                    log.debug("runtime-observer agent: metrics endpoint error", exc_info=True)
                    time.sleep(0.05)
        finally:
            self._close_all()

    def _turn(self) -> None:
        now = time.monotonic()
        timeout = max(0.0, self._next_tick - now)
        if self._conns:
            timeout = min(timeout, min(c.deadline for c in self._conns.values()) - now)
        if self._resume_at:
            timeout = min(timeout, self._resume_at - now)
        ready = self._selector.select(max(0.0, timeout))
        now = time.monotonic()
        accept = False
        for key, mask in ready:
            if key.fileobj is self._wake_r:
                with contextlib.suppress(OSError):
                    self._wake_r.recv(64)
            elif key.fileobj is self.listener:
                accept = True
            elif self._conns.get(id(key.data)) is key.data:
                if mask & selectors.EVENT_READ:
                    key.data.spoke = True
                self._step(key.data)
        if self._stopping:
            return
        if self._resume_at and now >= self._resume_at:
            self._selector.register(self.listener, selectors.EVENT_READ, None)
            self._resume_at = 0.0
            accept = True
        if accept:
            self._accept(now)
        for c in [c for c in self._conns.values() if now >= c.deadline]:
            self._events.event(
                "timeout",
                "runtime-observer agent: metrics: closed a connection from %s: no complete "
                "request and response within %gs",
                c.peer,
                DEADLINE,
            )
            self._drop(c)
        if now >= self._next_tick:
            self._next_tick = now + TICK_EVERY
            try:
                self._tick()
            except Exception:
                log.debug("runtime-observer agent: metrics tick failed", exc_info=True)

    def _accept(self, now: float) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, addr = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                self._backoff = 0.0
                return
            except OSError as exc:  # EMFILE and the like: stop polling it for a while
                self._backoff = min(BACKOFF_MAX, self._backoff * 2 or 0.05)
                self._resume_at = now + self._backoff
                with contextlib.suppress(KeyError, ValueError):
                    self._selector.unregister(self.listener)
                self._events.event(
                    "accept", "runtime-observer agent: metrics: cannot accept: %s", exc
                )
                return
            try:
                self._admit(sock, addr, now)
            except Exception as exc:
                self._events.event(
                    "admit", "runtime-observer agent: metrics: could not take a connection: %r", exc
                )
                close_socket(sock)

    def _admit(self, sock: socket.socket, addr: Any, now: float) -> None:
        if len(self._conns) >= MAX_CONNECTIONS:
            # one of the address holding the most connections; of those, one that has
            # sent nothing yet, else the oldest. A flood from one address churns among
            # itself, and a scraper elsewhere is not pushed out before its request lands.
            held = collections.Counter(c.ip for c in self._conns.values())
            victim = min(self._conns.values(), key=lambda c: (-held[c.ip], c.spoke, c.deadline))
            self._events.event(
                "evicted",
                "runtime-observer agent: metrics: %d connections open; closed the idlest, from %s",
                len(self._conns),
                victim.peer,
            )
            self._drop(victim)
        sock.setblocking(False)
        if self._tls is not None:
            with openssl():
                sock = self._tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        c = _Conn(sock, str(addr[0]), int(addr[1]), now, self._tls is not None)
        self._conns[id(c)] = c
        self._step(c)

    # ------------------------------------------------------------ one connection

    def _step(self, c: _Conn) -> None:
        try:
            want = self._advance(c)
        except (ssl.SSLError, OSError, ValueError) as exc:
            self._events.event(
                "rejected", "runtime-observer agent: metrics: dropped %s: %s", c.peer, exc
            )
            self._drop(c)
            return
        if want is None:
            self._drop(c)
            return
        if c.events != want:
            if c.events:
                self._selector.modify(c.sock, want, c)
            else:
                self._selector.register(c.sock, want, c)
            c.events = want

    def _advance(self, c: _Conn) -> int | None:
        """The events the connection waits for next, None when it is done."""
        if not c.tls_done:
            try:
                with openssl():
                    c.sock.do_handshake()  # type: ignore[attr-defined]
            except ssl.SSLWantReadError:
                return selectors.EVENT_READ
            except ssl.SSLWantWriteError:
                return selectors.EVENT_WRITE
            c.tls_done = True
        if not c.out:
            try:
                head = self._read_head(c)
            except _BadRequest as exc:  # too large: say so, read no more
                c.out = _response(exc.status, "text/plain; charset=utf-8", str(exc).encode())
            else:
                if head is None:
                    return selectors.EVENT_READ
                c.out = self._respond(c, head)
        while c.out:
            try:
                with openssl():
                    sent = c.sock.send(c.out)
            except (ssl.SSLWantWriteError, BlockingIOError):
                return selectors.EVENT_WRITE
            except ssl.SSLWantReadError:
                return selectors.EVENT_READ
            c.out = c.out[sent:]
        self.served += 1
        return None

    def _read_head(self, c: _Conn) -> bytes | None:
        while True:
            end = c.inbuf.find(b"\r\n\r\n")
            if end >= 0:
                return bytes(c.inbuf[:end])
            if len(c.inbuf) >= MAX_REQUEST:
                raise _BadRequest(
                    "431 Request Header Fields Too Large", f"over {MAX_REQUEST} bytes\n"
                )
            try:
                with openssl():
                    chunk = c.sock.recv(MAX_REQUEST - len(c.inbuf) + 4)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                return None
            if not chunk:
                raise ConnectionResetError("closed before a complete request")
            c.spoke = True
            c.inbuf += chunk

    def _respond(self, c: _Conn, head: bytes) -> bytes:
        try:
            method, path, headers = _parse(head)
            if method not in ("GET", "HEAD"):
                raise _BadRequest("405 Method Not Allowed", "only GET and HEAD\n")
            if path.split("?", 1)[0] != "/metrics":
                raise _BadRequest("404 Not Found", "the metrics are at /metrics\n")
            if self._token is not None and not _authorized(headers, self._token):
                self._events.event(
                    "unauthorized",
                    "runtime-observer agent: metrics: refused %s: no valid bearer token",
                    c.peer,
                )
                raise _BadRequest("401 Unauthorized", "a bearer token is required\n")
            body, content_type = self._render(headers.get("accept", ""))
            status = "200 OK"
        except _BadRequest as exc:
            status, content_type = exc.status, "text/plain; charset=utf-8"
            body = str(exc).encode()
            method = "GET"
        return _response(status, content_type, body, head_only=method == "HEAD")

    # ------------------------------------------------------------ cleanup

    def _forget(self, c: _Conn) -> None:
        self._conns.pop(id(c), None)
        if c.events:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.unregister(c.sock)
            c.events = 0

    def _drop(self, c: _Conn) -> None:
        self._forget(c)
        close_socket(c.sock)

    def _close_all(self, shutdown: bool = True) -> None:
        for c in list(self._conns.values()):
            self._forget(c)
            close_socket(c.sock, shutdown)
        with contextlib.suppress(Exception):
            self._selector.close()
        for s in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                s.close()
        close_socket(self.listener, shutdown)


def _response(status: str, content_type: str, body: bytes, head_only: bool = False) -> bytes:
    extra = 'WWW-Authenticate: Bearer realm="metrics"\r\n' if status.startswith("401") else ""
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n"
        "Cache-Control: no-store\r\n\r\n"
    ).encode("ascii")
    return head if head_only else head + body


def _parse(head: bytes) -> tuple[str, str, dict[str, str]]:
    """Request line and headers (names lower-cased); a malformed head is a 400."""
    try:
        text = head.decode("latin-1")
        line, *rest = text.split("\r\n")
        method, path, version = line.split(" ")
    except ValueError:
        raise _BadRequest("400 Bad Request", "malformed request\n") from None
    if not version.startswith("HTTP/1."):
        raise _BadRequest("400 Bad Request", "HTTP/1.x only\n")
    headers: dict[str, str] = {}
    for raw in rest:
        name, sep, value = raw.partition(":")
        if not sep:
            raise _BadRequest("400 Bad Request", "malformed header\n")
        headers[name.strip().lower()] = value.strip()
    return method, path, headers


def _authorized(headers: dict[str, str], token: bytes) -> bool:
    scheme, _, given = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode("latin-1", "replace"), token)
