"""TLS contexts, the token challenge-response and the failure rate limiter (agent side)."""

from __future__ import annotations

import collections
import hmac
import ipaddress
import logging
import secrets
import socket
import ssl
import threading
import time
from dataclasses import dataclass

from agent.version import AGENT_VERSION, PROTOCOL_VERSION
from agent.wire import (
    MAGIC,
    NONCE_BYTES,
    HandshakeError,
    agent_proof,
    cert_digest,
    client_proof,
    decode_nonce,
    recv_frame,
    send_frame,
)

log = logging.getLogger("agent")

ROLES = {"viewer": 1, "operator": 2, "admin": 3}
HANDSHAKE_TIMEOUT = 10.0


class AuthRejected(Exception):
    """The connection is refused; the peer is told nothing more than 'authentication failed'."""


class ConfigError(ValueError):
    """The agent's configuration is unsafe or inconsistent; it will not start."""


@dataclass(frozen=True)
class Credentials:
    """Who is on the other end of an authenticated connection."""

    role: str
    peer: str

    @property
    def label(self) -> str:
        """'role@peer', how the agent names who did something."""
        return f"{self.role}@{self.peer}"


def is_loopback_host(host: str) -> bool:
    """True when every address ``host`` names is a loopback address."""
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


def server_context(cert: str, key: str, client_cafile: str | None = None) -> ssl.SSLContext:
    """TLS 1.2+ server context; with ``client_cafile`` clients must present a certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    if client_cafile:
        ctx.load_verify_locations(client_cafile)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class FailureLimiter:
    """Refuses peers (by IP) that failed authentication too often recently."""

    def __init__(self, max_failures: int = 10, window: float = 60.0) -> None:
        self.max_failures = max_failures
        self.window = window
        self._lock = threading.Lock()
        self._failures: dict[str, collections.deque[float]] = {}

    def _recent(self, ip: str, now: float) -> collections.deque[float]:
        times = self._failures.setdefault(ip, collections.deque(maxlen=self.max_failures))
        while times and now - times[0] > self.window:
            times.popleft()
        return times

    def blocked(self, ip: str) -> bool:
        with self._lock:
            return len(self._recent(ip, time.monotonic())) >= self.max_failures

    def failed(self, ip: str) -> None:
        with self._lock:
            self._recent(ip, time.monotonic()).append(time.monotonic())
            if len(self._failures) > 10_000:  # bound memory under a spray of addresses
                for key in list(self._failures)[:5000]:
                    del self._failures[key]


class Authenticator:
    """rpyc authenticator: TLS handshake, then the nonce/HMAC exchange, then a role."""

    def __init__(
        self,
        tls: ssl.SSLContext | None,
        tokens: dict[str, str],
        limiter: FailureLimiter,
        own_cert_der: bytes | None,
    ) -> None:
        self._tls = tls
        self._tokens = dict(tokens)
        self._limiter = limiter
        self._binding = cert_digest(own_cert_der)

    def __call__(self, sock: socket.socket) -> tuple[socket.socket, Credentials]:
        try:
            peer_ip, peer_port = sock.getpeername()[:2]
        except OSError as exc:
            raise AuthRejected("peer went away") from exc
        peer = f"{peer_ip}:{peer_port}"
        blocked = self._limiter.blocked(peer_ip)
        if blocked:
            log.warning("runtime-observer agent: refusing %s: too many failed logins", peer)
        sock.settimeout(HANDSHAKE_TIMEOUT)
        try:
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_side=True)
            role = self._challenge(sock, peer, peer_ip, blocked)
        except (HandshakeError, ssl.SSLError, OSError, ValueError) as exc:
            self._limiter.failed(peer_ip)
            log.warning("runtime-observer agent: rejected %s: %s", peer, exc)
            sock.close()
            raise AuthRejected(str(exc)) from exc
        except AuthRejected:
            sock.close()
            raise
        sock.settimeout(None)
        return sock, Credentials(role, peer)

    def _challenge(self, sock: socket.socket, peer: str, peer_ip: str, blocked: bool) -> str:
        """Run the exchange; a rate-limited peer gets the same answer as a wrong token."""
        server_nonce = secrets.token_bytes(NONCE_BYTES)
        send_frame(
            sock,
            {
                "proto": MAGIC,
                "version": PROTOCOL_VERSION,
                "agent": AGENT_VERSION,
                "auth": "token" if self._tokens else "none",
                "nonce": server_nonce.hex(),
            },
        )
        reply = recv_frame(sock)
        version = reply.get("version")
        if version != PROTOCOL_VERSION:
            send_frame(
                sock,
                {
                    "ok": False,
                    "error": "version",
                    "message": f"protocol version mismatch: agent {AGENT_VERSION} speaks "
                    f"protocol {PROTOCOL_VERSION}, observer {reply.get('observer', '?')} "
                    f"speaks protocol {version}",
                },
            )
            raise HandshakeError(f"protocol version mismatch (observer speaks {version!r})")
        client_nonce = decode_nonce(reply.get("nonce"))
        if not self._tokens:
            send_frame(sock, {"ok": True, "role": "viewer", "proof": ""})
            return "viewer"
        mac = reply.get("mac")
        role = None
        if isinstance(mac, str) and not blocked:
            role = self._match(mac, server_nonce, client_nonce)
        if role is None:
            self._limiter.failed(peer_ip)  # before answering, so a quick retry sees it
            send_frame(sock, {"ok": False, "error": "auth", "message": "authentication failed"})
            log.warning("runtime-observer agent: authentication failed from %s", peer)
            raise AuthRejected("authentication failed")
        proof = agent_proof(self._tokens[role], server_nonce, client_nonce, self._binding)
        granted = _downgraded(role, reply.get("role"))
        send_frame(sock, {"ok": True, "role": granted, "proof": proof})
        log.info("runtime-observer agent: %s authenticated as %s", peer, granted)
        return granted

    def _match(self, mac: str, server_nonce: bytes, client_nonce: bytes) -> str | None:
        """The role whose token produced ``mac``; every token is compared in constant time."""
        found = None
        for role, token in self._tokens.items():
            expected = client_proof(token, server_nonce, client_nonce, self._binding)
            if hmac.compare_digest(expected.encode(), mac.encode("utf-8", "replace")):
                found = role if found is None or ROLES[role] > ROLES[found] else found
        return found


def _downgraded(role: str, requested: object) -> str:
    """The role to grant: the token's, or a lower one the observer asked for (a nodes file
    may say ``role = "viewer"`` to hold an operator token read-only); never a higher one."""
    if isinstance(requested, str) and ROLES.get(requested, ROLES[role]) < ROLES[role]:
        return requested
    return role
