"""A byte-transparent TCP proxy that adds latency, for tests and benchmarks.

    proxy = DelayProxy("127.0.0.1", 7330, delay=0.2)   # 200 ms each way
    connect(proxy.address, ...)                        # TLS passes through untouched
    proxy.cut()                                        # drop every open connection
    proxy.close()

Each direction of each connection has a reader thread that stamps chunks into a queue and
a writer thread that sends every chunk at its stamp + ``delay``: latency, not a bandwidth
cap, and order is preserved. Stdlib only, daemon threads.

As a script it runs until stdin closes (or it is killed) and prints ``proxy: HOST:PORT``:

    python bench/delayproxy.py 127.0.0.1:7330 --delay 0.2
"""

from __future__ import annotations

import argparse
import contextlib
import queue
import socket
import sys
import threading
import time
from collections.abc import Callable

CHUNK = 65536


def _close(sock: socket.socket) -> None:
    """Shut down and close a socket, ignoring errors (wakes threads blocked on it)."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class _Connection:
    """One proxied connection: client <-> upstream, two delayed directions."""

    def __init__(self, client: socket.socket, upstream: socket.socket, delay: float) -> None:
        self.client = client
        self.upstream = upstream
        self.delay = delay
        self.closed = threading.Event()
        self._lock = threading.Lock()
        self._open_directions = 2
        self.on_close: Callable[[_Connection], None] | None = None

    def start(self) -> None:
        for src, dst, name in (
            (self.client, self.upstream, "up"),
            (self.upstream, self.client, "down"),
        ):
            chunks: queue.SimpleQueue[tuple[float, bytes | None]] = queue.SimpleQueue()
            for target, args in ((self._read, (src, chunks)), (self._write, (dst, chunks))):
                threading.Thread(
                    target=target, args=args, name=f"delayproxy-{name}", daemon=True
                ).start()

    def _read(self, src: socket.socket, chunks: queue.SimpleQueue) -> None:
        """Stamp each chunk with when it arrived; ``None`` marks end of stream."""
        try:
            while not self.closed.is_set():
                data = src.recv(CHUNK)
                if not data:
                    break
                chunks.put((time.monotonic(), data))
        except OSError:
            self.close()
        chunks.put((time.monotonic(), None))

    def _write(self, dst: socket.socket, chunks: queue.SimpleQueue) -> None:
        """Send each chunk ``delay`` after it arrived; pass end of stream on as a half-close."""
        try:
            while True:
                stamp, data = chunks.get()
                wait = stamp + self.delay - time.monotonic()
                if (wait > 0 and self.closed.wait(wait)) or self.closed.is_set():
                    return
                if data is None:
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_WR)
                    break
                dst.sendall(data)
        except OSError:
            self.close()
            return
        with self._lock:
            self._open_directions -= 1
            done = self._open_directions == 0
        if done:
            self.close()

    def close(self) -> None:
        """Close both sockets (idempotent); the threads notice and end."""
        with self._lock:
            if self.closed.is_set():
                return
            self.closed.set()
        _close(self.client)
        _close(self.upstream)
        if self.on_close is not None:
            self.on_close(self)


class DelayProxy:
    """Listen on 127.0.0.1 (a free port) and forward to ``target`` with ``delay`` each way."""

    def __init__(self, target_host: str, target_port: int, delay: float = 0.2) -> None:
        self.target = (target_host, target_port)
        self.delay = delay
        self._lock = threading.Lock()
        self._connections: set[_Connection] = set()
        self._closed = False
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, name="delayproxy-accept", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        """Where to connect: ``127.0.0.1:PORT``."""
        return f"127.0.0.1:{self.port}"

    @property
    def connections(self) -> int:
        """How many proxied connections are open now."""
        with self._lock:
            return len(self._connections)

    def __enter__(self) -> DelayProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._closed:
                _close(client)
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
                upstream.settimeout(None)
            except OSError:
                _close(client)  # the target refuses: so does the proxy
                continue
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(client, upstream, self.delay)
            conn.on_close = self._forget
            with self._lock:
                if self._closed:
                    conn.close()
                    return
                self._connections.add(conn)
            conn.start()

    def _forget(self, conn: _Connection) -> None:
        with self._lock:
            self._connections.discard(conn)

    def cut(self) -> None:
        """Close every current connection, as a dropping link would; new ones are accepted."""
        with self._lock:
            current = list(self._connections)
        for conn in current:
            conn.close()

    def close(self) -> None:
        """Stop listening, close every connection and wait for the accept thread (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        with contextlib.suppress(OSError):  # wake accept() portably
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        _close(self._listener)
        self._thread.join(timeout=5)
        self.cut()


def main() -> None:
    parser = argparse.ArgumentParser(description="TCP proxy adding latency each way.")
    parser.add_argument("target", help="HOST:PORT to forward to")
    parser.add_argument("--delay", type=float, default=0.2, help="seconds each way")
    args = parser.parse_args()
    host, _, port = args.target.rpartition(":")
    with DelayProxy(host.strip("[]"), int(port), args.delay) as proxy:
        print(f"proxy: {proxy.address}", flush=True)
        for _ in sys.stdin:  # until stdin closes
            pass


if __name__ == "__main__":
    main()
