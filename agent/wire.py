"""Handshake framing and proofs shared by the agent and the observer.

Before rpyc speaks, the two sides run a tiny length-prefixed JSON exchange over the
(TLS) socket: the agent sends a nonce, the observer answers with an HMAC of both
nonces and the agent certificate's SHA-256 (channel binding, RFC 5929
"tls-server-end-point"), so a token is never sent and a proof cannot be replayed or
relayed through a server holding another certificate.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
import socket
import struct
from typing import Any

MAGIC = "runtime-observer"
MAX_HANDSHAKE_FRAME = 4096
NONCE_BYTES = 32
_LEN = struct.Struct(">I")
_FP_RE = re.compile(r"^(?:sha256:)?([0-9a-fA-F:]+)$")


class HandshakeError(Exception):
    """The peer did not follow the handshake (garbage, oversize frame, early close)."""


def send_frame(sock: socket.socket, message: dict[str, Any]) -> None:
    """Send one length-prefixed JSON handshake frame."""
    data = json.dumps(message, separators=(",", ":")).encode()
    if len(data) > MAX_HANDSHAKE_FRAME:
        raise HandshakeError("handshake frame too large")
    sock.sendall(_LEN.pack(len(data)) + data)


def _recv_exact(sock: socket.socket, count: int) -> bytes:
    """Read exactly ``count`` bytes or raise HandshakeError."""
    chunks: list[bytes] = []
    while count:
        chunk = sock.recv(count)
        if not chunk:
            raise HandshakeError("connection closed during handshake")
        chunks.append(chunk)
        count -= len(chunk)
    return b"".join(chunks)


def recv_frame(sock: socket.socket) -> dict[str, Any]:
    """Receive one handshake frame, rejecting oversize or non-JSON-object input."""
    (length,) = _LEN.unpack(_recv_exact(sock, _LEN.size))
    if length > MAX_HANDSHAKE_FRAME:
        raise HandshakeError(f"handshake frame of {length} bytes exceeds limit")
    raw = _recv_exact(sock, length)
    try:
        message = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise HandshakeError("handshake frame is not JSON") from exc
    if not isinstance(message, dict):
        raise HandshakeError("handshake frame is not a JSON object")
    return message


def split_host_port(text: str) -> tuple[str, int] | None:
    """``host:port`` / ``[v6]:port`` as (host, port), or None when it is not of that form."""
    value = text.strip()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port_text = rest.removeprefix(":")
    else:
        host, _, port_text = value.rpartition(":")
    if not host or not port_text.isdigit() or int(port_text) > 65535:
        return None
    return host, int(port_text)


def join_host_port(host: str, port: int) -> str:
    """The inverse of split_host_port: brackets around IPv6 hosts."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_loopback_host(host: str) -> bool:
    """True when every address ``host`` names is a loopback address (here with the
    other address helpers: the observer's transport needs it without agent.security)."""
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(
        ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos
    )


def cert_digest(der: bytes | None) -> bytes:
    """SHA-256 of a DER certificate, or empty bytes for a plain (loopback) link."""
    return hashlib.sha256(der).digest() if der else b""


def format_fingerprint(der: bytes) -> str:
    """Fingerprint string operators pin: ``sha256:<64 hex digits>``."""
    return "sha256:" + hashlib.sha256(der).hexdigest()


def parse_fingerprint(text: str) -> bytes:
    """Parse ``sha256:HEX`` (colons and case tolerated) into 32 raw bytes."""
    match = _FP_RE.match(text.strip())
    hexdigits = match.group(1).replace(":", "") if match else ""
    if len(hexdigits) != 64:
        raise ValueError(f"not a SHA-256 fingerprint: {text!r} (expected sha256:<64 hex digits>)")
    return bytes.fromhex(hexdigits)


def client_proof(token: str, server_nonce: bytes, client_nonce: bytes, binding: bytes) -> str:
    """The observer's answer to the agent's challenge."""
    msg = b"runtime-observer/client/v1\0" + server_nonce + client_nonce + binding
    return hmac.new(token.encode(), msg, hashlib.sha256).hexdigest()


def agent_proof(token: str, server_nonce: bytes, client_nonce: bytes, binding: bytes) -> str:
    """The agent's proof that it knows the same token (mutual authentication)."""
    msg = b"runtime-observer/agent/v1\0" + client_nonce + server_nonce + binding
    return hmac.new(token.encode(), msg, hashlib.sha256).hexdigest()


def decode_nonce(value: Any) -> bytes:
    """Decode a hex nonce from a handshake frame, validating its size."""
    if not isinstance(value, str) or len(value) != NONCE_BYTES * 2:
        raise HandshakeError("bad nonce in handshake")
    try:
        return bytes.fromhex(value)
    except ValueError as exc:
        raise HandshakeError("bad nonce in handshake") from exc
