"""What the attack tests and bench/attack_listener.py do to an agent (loopback only).

- ``source_addresses(n)``: n loopback source addresses other than 127.0.0.1, so one
  machine can play many attackers.
- ``open_login`` / ``prove`` / ``guess``: the real handshake, step by step, from a chosen
  source address, with the right token or a wrong guess.
- ``Holder``: keeps N sockets open on the agent, idle or dripping a byte at a time after
  TLS; run as a process of its own (the attacker is not the operator):

    python -m tests.attack.tools hold HOST:PORT --count 500 --mode idle|drip
        [--sources 60] [--interval 1.0] [--reconnect] [--seconds 30]

  It prints ``ready opened=N`` once N connections are open, then every 0.25 s
  ``stats open=.. opened=.. closed=.. max_closed_age=.. oldest_open=..``.
- ``guess_for``: wrong proofs one after another from a set of source addresses:

    python -m tests.attack.tools guess HOST:PORT [--sources 60] [--seconds 60]
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import itertools
import secrets
import selectors
import socket
import ssl
import struct
import sys
import time
from dataclasses import dataclass
from typing import Any

from agent.version import PROTOCOL_VERSION
from agent.wire import (
    NONCE_BYTES,
    cert_digest,
    client_proof,
    decode_nonce,
    recv_frame,
    send_frame,
    split_host_port,
)


def source_addresses(count: int) -> list[str]:
    """``count`` loopback addresses from 127.0.0.2 on (127.0.0.1 is the operator's)."""
    out: list[str] = []
    for a, b, c in itertools.product(range(256), range(256), range(1, 255)):
        if (a, b, c) == (0, 0, 1):
            continue
        out.append(f"127.{a}.{b}.{c}")
        if len(out) == count:
            break
    return out


def _target(address: str) -> tuple[str, int]:
    parts = split_host_port(address)
    assert parts is not None, address
    return parts


def _client_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def tcp_from(address: str, source: str | None = None, timeout: float = 10.0) -> socket.socket:
    """A TCP connection to ``address`` from loopback address ``source``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        if source:
            sock.bind((source, 0))
        sock.connect(_target(address))
    except BaseException:
        sock.close()
        raise
    return sock


@dataclass
class Login:
    """A connection that did TLS and read the agent's challenge, not yet answered."""

    sock: ssl.SSLSocket
    hello: dict[str, Any]
    binding: bytes


def open_login(address: str, source: str | None = None, timeout: float = 10.0) -> Login:
    raw = tcp_from(address, source, timeout)
    try:
        tls = _client_context().wrap_socket(raw)
        hello = recv_frame(tls)
    except BaseException:
        raw.close()
        raise
    return Login(tls, hello, cert_digest(tls.getpeercert(binary_form=True)))


def prove(login: Login, token: str | None) -> dict[str, Any]:
    """Answer the challenge with ``token``'s proof (None: a wrong guess); the agent's reply."""
    try:
        nonce = secrets.token_bytes(NONCE_BYTES)
        server_nonce = decode_nonce(login.hello["nonce"])
        mac = (
            client_proof(token, server_nonce, nonce, login.binding)
            if token
            else secrets.token_hex(32)
        )
        send_frame(login.sock, {"version": PROTOCOL_VERSION, "nonce": nonce.hex(), "mac": mac})
        return recv_frame(login.sock)
    finally:
        with contextlib.suppress(OSError):
            login.sock.close()


def guess(address: str, source: str | None = None, token: str | None = None) -> dict[str, Any]:
    """One whole login attempt from ``source``: the agent's verdict."""
    return prove(open_login(address, source), token)


def wrong_reply_frame() -> bytes:
    """A well-formed answer with a wrong proof, as the bytes a dripper sends."""
    import json

    body = json.dumps(
        {"version": PROTOCOL_VERSION, "nonce": "00" * NONCE_BYTES, "mac": "0" * 64}
    ).encode()
    return struct.pack(">I", len(body)) + body


class _Held:
    __slots__ = ("drip_at", "opened", "sent", "sock", "state")

    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock = sock
        self.opened = now
        self.state = "connecting"
        self.sent = 0
        self.drip_at = 0.0


class Holder:
    """Keeps ``count`` connections open on the agent from ``sources``.

    idle: connect and send nothing. drip: do TLS, read the challenge, then send a
    well-formed wrong answer one byte every ``interval`` seconds. With ``reconnect``,
    every connection the agent closes is opened again at once.
    """

    def __init__(
        self,
        address: str,
        count: int,
        mode: str,
        sources: list[str],
        interval: float = 1.0,
        reconnect: bool = False,
    ) -> None:
        self.target = _target(address)
        self.count = count
        self.mode = mode
        self.sources = itertools.cycle(sources)
        self.interval = interval
        self.reconnect = reconnect
        self.ctx = _client_context()
        self.frame = wrong_reply_frame()
        self.selector = selectors.DefaultSelector()
        self.held: dict[int, _Held] = {}
        self.opened = 0
        self.closed = 0
        self.max_closed_age = 0.0

    def _open(self, now: float) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind((next(self.sources), 0))
            sock.setblocking(False)
            err = sock.connect_ex(self.target)
        except OSError:
            sock.close()
            return
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            return
        h = _Held(sock, now)
        self.held[sock.fileno()] = h
        self.selector.register(sock, selectors.EVENT_WRITE, h)
        self.opened += 1

    def _lost(self, h: _Held, now: float) -> None:
        self.held.pop(h.sock.fileno(), None)
        with contextlib.suppress(Exception):
            self.selector.unregister(h.sock)
        with contextlib.suppress(OSError):
            h.sock.close()
        self.closed += 1
        self.max_closed_age = max(self.max_closed_age, now - h.opened)

    def _ready(self, h: _Held, now: float) -> None:
        try:
            if h.state == "connecting":
                if h.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    return self._lost(h, now)
                if self.mode == "idle":
                    h.state = "idle"
                    self.selector.modify(h.sock, selectors.EVENT_READ, h)
                    return None
                self.selector.unregister(h.sock)
                fd = h.sock.fileno()
                h.sock = self.ctx.wrap_socket(h.sock, do_handshake_on_connect=False)
                self.held[fd] = h
                self.selector.register(h.sock, selectors.EVENT_READ, h)
                h.state = "tls"
            if h.state == "tls":
                try:
                    h.sock.do_handshake()
                except ssl.SSLWantReadError:
                    return None
                except ssl.SSLWantWriteError:
                    return None
                h.state = "hello"
            data = h.sock.recv(4096)
            if not data:
                return self._lost(h, now)
            if h.state == "hello":
                h.state = "drip"
                h.drip_at = now
        except (ssl.SSLWantReadError, BlockingIOError):
            return None
        except OSError:
            return self._lost(h, now)
        return None

    def _drip(self, now: float) -> None:
        for h in list(self.held.values()):
            if h.state != "drip" or now < h.drip_at:
                continue
            h.drip_at = now + self.interval
            try:
                h.sock.send(self.frame[h.sent % len(self.frame) : h.sent % len(self.frame) + 1])
                h.sent += 1
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                pass
            except OSError:
                self._lost(h, now)

    def run(self, seconds: float, out: Any = sys.stdout) -> None:
        start = time.monotonic()
        said_ready = False
        next_stats = start
        while True:
            now = time.monotonic()
            if now - start >= seconds:
                break
            wanted = self.count - len(self.held)
            if not self.reconnect:
                wanted = min(wanted, self.count - self.opened)
            for _ in range(min(wanted, 64)):
                self._open(now)
            if not said_ready and self.opened >= self.count:
                said_ready = True
                print(f"ready opened={self.opened}", file=out, flush=True)
            for key, _mask in self.selector.select(0.05):
                h = key.data
                if self.held.get(h.sock.fileno()) is h:
                    self._ready(h, now)
            if self.mode == "drip":
                self._drip(time.monotonic())
            if now >= next_stats:
                next_stats = now + 0.25
                oldest = max((now - h.opened for h in self.held.values()), default=0.0)
                print(
                    f"stats open={len(self.held)} opened={self.opened} closed={self.closed} "
                    f"max_closed_age={self.max_closed_age:.2f} oldest_open={oldest:.2f}",
                    file=out,
                    flush=True,
                )
        for h in list(self.held.values()):
            with contextlib.suppress(OSError):
                h.sock.close()


def guess_for(address: str, sources: list[str], seconds: float) -> dict[str, int]:
    """Guess as fast as one connection at a time allows, cycling through ``sources``."""
    counts = {"made": 0, "refused": 0, "errors": 0}
    deadline = time.monotonic() + seconds
    for source in itertools.cycle(sources):
        if time.monotonic() >= deadline:
            break
        try:
            reply = guess(address, source)
        except (OSError, ValueError):
            counts["errors"] += 1
            continue
        counts["made"] += 1
        counts["refused"] += reply.get("ok") is False
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.attack.tools")
    sub = parser.add_subparsers(dest="command", required=True)
    hold = sub.add_parser("hold")
    hold.add_argument("address")
    hold.add_argument("--count", type=int, default=500)
    hold.add_argument("--mode", choices=("idle", "drip"), default="idle")
    hold.add_argument("--sources", type=int, default=1)
    hold.add_argument("--interval", type=float, default=1.0)
    hold.add_argument("--reconnect", action="store_true")
    hold.add_argument("--seconds", type=float, default=60.0)
    guesser = sub.add_parser("guess")
    guesser.add_argument("address")
    guesser.add_argument("--sources", type=int, default=1)
    guesser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args(argv)
    if args.command == "guess":
        counts = guess_for(args.address, source_addresses(args.sources), args.seconds)
        print(" ".join(f"{k}={v}" for k, v in counts.items()), flush=True)
        return 0
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, args.count + 256)), hard))
    Holder(
        args.address,
        args.count,
        args.mode,
        source_addresses(args.sources),
        args.interval,
        args.reconnect,
    ).run(args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
