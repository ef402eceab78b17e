"""An attacker's tools: a real login, then rpyc frames of its own making; the host's peak RSS.

The attacker logs in as the observer does (TLS, the token challenge) with code of its
own, so nothing of the observer's client stands between it and the socket; after that
it writes whatever bytes it likes: rpyc frames with a forged length, a zlib bomb, a
flood of pings, or real requests whose replies it never reads.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import ssl
import struct
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import psutil
import rpyc
from rpyc.core import brine, consts

from agent.channel import TLSSocketStream
from agent.version import AGENT_VERSION, PROTOCOL_VERSION
from agent.wire import (
    MAGIC,
    NONCE_BYTES,
    agent_proof,
    cert_digest,
    client_proof,
    decode_nonce,
    recv_frame,
    send_frame,
    split_host_port,
)

FRAME = struct.Struct("!LB")  # rpyc's frame header: body length, compressed flag
MIB = 1024 * 1024
_DROPPED = (OSError, EOFError)  # reset, broken pipe, TLS EOF: the agent hung up


def zlib_bomb(inflated: int) -> bytes:
    """A valid zlib stream of a request byte and zeros, ``inflated`` bytes once inflated
    (~1/1000 of that on the wire), made without ever holding the inflated bytes."""
    deflater = zlib.compressobj(9)
    parts = [deflater.compress(bytes([consts.MSG_REQUEST]))]
    zeros = bytes(MIB)
    left = inflated - 1
    while left > 0:
        parts.append(deflater.compress(zeros[: min(left, MIB)]))
        left -= MIB
    parts.append(deflater.flush())
    return b"".join(parts)


def request_body(seq: int, handler: int, *args: Any) -> bytes:
    """The body of an rpyc request frame: ``handler(*args)`` with plain-value arguments."""
    boxed = (consts.LABEL_TUPLE, tuple((consts.LABEL_VALUE, a) for a in args))
    return brine.I1.pack(consts.MSG_REQUEST) + brine.dump((seq, (handler, boxed)))


def frame(body: bytes, *, compressed: bool = False, length: int | None = None) -> bytes:
    """An rpyc frame around ``body``; ``length`` forges the header's length field."""
    declared = len(body) if length is None else length
    return FRAME.pack(declared, int(compressed)) + body + b"\n"


class Attacker:
    """One logged-in connection, driven by hand."""

    def __init__(self, sock: ssl.SSLSocket, role: str = "") -> None:
        self.sock = sock
        self.role = role
        host, port = sock.getsockname()[:2]
        self.peer = f"{host}:{port}"  # how the agent names this connection in its audit
        self._conn: rpyc.Connection | None = None

    @classmethod
    def login(
        cls, address: str, keys: Any, role: str = "viewer", *, rcvbuf: int | None = None
    ) -> Attacker:
        """Connect and pass the token challenge for ``role``; ``rcvbuf`` shrinks the receive
        buffer before connecting (so the TCP window stays that small: a slow reader)."""
        parts = split_host_port(address)
        assert parts is not None, address
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        raw.settimeout(10)
        raw.connect(parts)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # the attacker does not care who it talks to
        sock = ctx.wrap_socket(raw)
        binding = cert_digest(sock.getpeercert(binary_form=True))
        token = Path(keys.operator_token if role == "operator" else keys.viewer_token)
        hello = recv_frame(sock)
        server_nonce = decode_nonce(hello.get("nonce"))
        client_nonce = secrets.token_bytes(NONCE_BYTES)
        mac = client_proof(token.read_text().strip(), server_nonce, client_nonce, binding)
        send_frame(
            sock,
            {
                "version": PROTOCOL_VERSION,
                "observer": "attacker",
                "nonce": client_nonce.hex(),
                "mac": mac,
            },
        )
        reply = recv_frame(sock)
        assert reply.get("ok"), reply
        sock.settimeout(None)
        return cls(sock, str(reply.get("role")))

    @classmethod
    def before_login(cls, address: str) -> Attacker:
        """Connect and finish TLS, read the agent's hello, and stop there (not logged in)."""
        parts = split_host_port(address)
        assert parts is not None, address
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        sock = ctx.wrap_socket(socket.create_connection(parts, timeout=10))
        recv_frame(sock)
        return cls(sock)

    def rpyc(self) -> rpyc.Connection:
        """An rpyc connection over this socket, for real requests (made once)."""
        if self._conn is None:
            self._conn = rpyc.connect_stream(
                TLSSocketStream(self.sock), config={"sync_request_timeout": 60}
            )
        return self._conn

    def stall(self, method: str, *args: Any, requests: int = 1, fill: int = 0) -> None:
        """Send ``fill`` bytes of pings, then ``requests`` calls of ``method``, and never
        read a reply: the pings' echoes fill the socket buffers (the kernel holds a few
        MB per connection), so the agent is left holding the calls' replies."""
        fn = rpyc.async_(getattr(self.rpyc().root, method))  # resolved while still reading
        self.sock.settimeout(5)  # the agent may stop reading too: the attacker gives up
        try:
            self.flood_pings(fill)
            for _ in range(requests):
                fn(*args)
        except _DROPPED:  # stalled (timeout) or already dropped (reset, TLS EOF)
            pass
        finally:
            with contextlib.suppress(OSError):
                self.sock.settimeout(None)

    def flood_pings(self, total: int, size: int = 60_000) -> None:
        """rpyc pings of ``size`` random (incompressible) bytes each, ``total`` in all:
        the agent echoes each one back."""
        for seq in range(1_000_000, 1_000_000 + -(-total // size)):
            self.sock.sendall(frame(request_body(seq, consts.HANDLE_PING, os.urandom(size))))

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def stream(self, data_size: int, chunk: int = MIB) -> int:
        """Stream ``data_size`` zero bytes; how many went out before the agent hung up."""
        zeros = bytes(chunk)
        sent = 0
        try:
            while sent < data_size:
                self.sock.sendall(zeros[: min(chunk, data_size - sent)])
                sent += min(chunk, data_size - sent)
        except _DROPPED:
            pass
        return sent

    def dropped_within(self, timeout: float) -> bool:
        """True once the agent closes the connection (within ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        try:
            while (left := deadline - time.monotonic()) > 0:
                self.sock.settimeout(left)
                if not self.sock.recv(65536):
                    return True
        except TimeoutError:
            return False
        except _DROPPED:
            return True
        return False

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def stock_request(node: Any, peer: Attacker, method: str, args: tuple[Any, ...]) -> Any:
    """The agent's reply to ``method(*args)`` sent by ``peer``'s stock rpyc, for arguments
    the observer's client will not carry: rpyc passes a list or dict by reference (a
    netref the agent must refuse), the client sends plain values only and refuses the
    call before sending anything (TypeError: checked here on ``node``)."""
    from observer import rpc

    assert not rpc.dumpable(args), args
    try:
        node._request(method, args)
    except TypeError:
        pass
    else:
        raise AssertionError(f"the observer's client sent {args!r}")
    return getattr(peer.rpyc().root, method)(*args)


class RogueAgent:
    """A compromised host's agent: it has the certificate and the tokens, logs the observer
    in as a real agent would, then answers its first call with ``reply`` (raw bytes, a
    forged frame) followed by ``stream`` zero bytes, counting what got out."""

    def __init__(self, keys: Any, reply: bytes, stream: int = 0) -> None:
        self.keys = keys
        self.reply = reply
        self.stream = stream
        self.sent = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.keys.cert, self.keys.key)
        raw, _ = self.listener.accept()
        raw.settimeout(20)
        with ctx.wrap_socket(raw, server_side=True) as sock:
            binding = cert_digest(_der(self.keys.cert))
            nonce = secrets.token_bytes(NONCE_BYTES)
            send_frame(
                sock,
                {
                    "proto": MAGIC,
                    "version": PROTOCOL_VERSION,
                    "agent": AGENT_VERSION,
                    "auth": "token",
                    "nonce": nonce.hex(),
                },
            )
            hello = recv_frame(sock)
            token = Path(self.keys.operator_token).read_text().strip()
            proof = agent_proof(token, nonce, decode_nonce(hello["nonce"]), binding)
            send_frame(sock, {"ok": True, "role": "operator", "proof": proof})
            length, _ = FRAME.unpack(_read(sock, FRAME.size))  # the observer's first call
            _read(sock, length + 1)
            try:
                sock.sendall(self.reply)
                self.sent = len(self.reply)
                zeros = bytes(MIB)
                while self.sent < len(self.reply) + self.stream:
                    sock.sendall(zeros)
                    self.sent += len(zeros)
            except _DROPPED:
                pass

    def close(self) -> None:
        self.listener.close()
        self._thread.join(30)


def _der(pem_path: Any) -> bytes:
    return ssl.PEM_cert_to_DER_cert(Path(pem_path).read_text())


def _read(sock: ssl.SSLSocket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise EOFError("peer closed")
        data += chunk
    return data


class PeakRss:
    """The host's peak RSS over a ``with`` block, minus its RSS when the block began.

    Linux keeps the high-water mark (VmHWM) and lets it be reset (clear_refs 5), so no
    short-lived peak is missed; elsewhere a thread samples RSS every 2 ms.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.process = psutil.Process(pid)
        self.start = 0
        self.peak = 0
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None

    @property
    def growth(self) -> int:
        return self.peak - self.start

    def __enter__(self) -> PeakRss:
        self.start = self.process.memory_info().rss
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        except OSError:
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            with contextlib.suppress(psutil.Error):
                self.peak = max(self.peak, self.process.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        if self._sampler is not None:
            self._stop.set()
            self._sampler.join()
            return
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                self.peak = int(line.split()[1]) * 1024
