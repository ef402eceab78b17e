"""TLS contexts, the token challenge-response, the login limits and token strength."""

from __future__ import annotations

import collections
import hmac
import ipaddress
import logging
import math
import re
import secrets
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

from agent.forksafe import openssl
from agent.ratelog import RateLog
from agent.version import AGENT_VERSION, PROTOCOL_VERSION
from agent.wire import (
    MAGIC,
    NONCE_BYTES,
    agent_proof,
    cert_digest,
    client_proof,
    decode_nonce,
    is_loopback_host,  # noqa: F401 (lives in agent.wire; imported from here too)
)

log = logging.getLogger("agent")

ROLES = {"viewer": 1, "operator": 2, "admin": 3}
MIN_TOKEN_BITS = 128
_PROOF_RE = re.compile(r"^[0-9a-f]{64}$")  # client_proof: a SHA-256 HMAC in hex


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


def server_context(cert: str, key: str, client_cafile: str | None = None) -> ssl.SSLContext:
    """TLS 1.2+ server context; with ``client_cafile`` clients must present a certificate."""
    with openssl():  # both release the GIL inside OpenSSL
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        if client_cafile:
            ctx.load_verify_locations(client_cafile)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # no TLS 1.3 session tickets: no observer resumes a session, and a client thread
    # taking one in after its handshake would be in OpenSSL outside agent.forksafe's care
    ctx.num_tickets = 0
    if client_cafile:
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


# The alphabets tokens are drawn from, smallest first: a token is judged by the smallest
# one that holds all its characters (keygen's are base64url: 6 bits a character).
_ALPHABETS = tuple(
    (frozenset(chars), math.log2(len(chars)))
    for chars in (
        "0123456789",
        "0123456789abcdef",
        "0123456789ABCDEF",
        "abcdefghijklmnopqrstuvwxyz",
        "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
        # letters of one case with digits count as base64url, not base36: one in ~150k
        # tokens of secrets.token_urlsafe(16) (128 bits) shows no upper (or no lower)
        # case by chance, and judged as base36 it scored 114 bits and was refused;
        # likewise mixed case, even when no digit or -_ shows up
        "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_",
        "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ+/=",
        "".join(map(chr, range(33, 127))),
    )
)


def token_bits(token: str) -> float:
    """A generous estimate of a token's entropy in bits, to refuse guessable ones.

    Length times the bits of the smallest usual alphabet that holds its characters,
    where the length is that of the shortest string the token repeats at least twice
    ('abcabca' counts as 'abc'), and no more than twice the token's character entropy
    (so a token made mostly of one character scores low). For random tokens the estimate
    is at or above the truth; it cannot tell a random token from a chosen one that looks
    random.
    """
    if not token:
        return 0.0
    chars = set(token)
    per_char = next(
        (bits for alphabet, bits in _ALPHABETS if chars <= alphabet),
        math.log2(max(95, len(chars))),
    )
    length = len(token)
    period = next(
        (p for p in range(1, length // 2 + 1) if token == (token[:p] * length)[:length]),
        length,
    )
    counts = collections.Counter(token).values()
    shannon = -sum(c / length * math.log2(c / length) for c in counts)
    return max(0.0, min(period * per_char, 2 * length * shannon))


def weak_token_error(token: str, what: str) -> str | None:
    """Why ``token`` (named ``what`` in the message) is too weak to guard the agent, or None."""
    bits = token_bits(token)
    if bits >= MIN_TOKEN_BITS:
        return None
    return (
        f"{what} is too weak: about {bits:.0f} bits of entropy, the agent needs "
        f"{MIN_TOKEN_BITS}+ (a random token: 32+ hex digits or 22+ base64url characters); "
        "make one with `observer keygen DIR` (256-bit tokens)"
    )


def address_key(ip: str) -> str:
    """What the login limits count by: an IPv4 address, or an IPv6 address's /64 (one
    host's share of a network: counting single IPv6 addresses would give it 2**64 tries)."""
    try:
        addr = ipaddress.ip_address(ip.split("%")[0])
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


class LoginLimiter:
    """Budgets on failed proofs (wrong HMACs), per address and in total, over a window.

    Only a proof that was evaluated and wrong counts: a bare connect, a TLS failure or a
    timeout is not a guess. While an address (or, for addresses that never logged in,
    the agent as a whole) is over budget its proofs are refused without evaluation and
    the refusals are not recorded, so a block ends ``window`` seconds after the failures
    that caused it however often the peer retries. Records exist only for addresses with
    failures inside the window, and the total budget caps how many of those there can be
    (plus the remembered operators' addresses): memory stays bounded without ever
    dropping a live record, so a spray of addresses cannot reset anyone's count.
    """

    def __init__(
        self,
        per_address: int = 10,
        total: int = 60,
        window: float = 60.0,
        *,
        trusted_for: float = 86400.0,
        max_trusted: int = 1024,
    ) -> None:
        self.per_address = max(1, per_address)
        self.total = max(1, total)
        self.window = window
        self.trusted_for = trusted_for
        self.max_trusted = max_trusted
        self._lock = threading.Lock()
        # address key -> times of its last failures, ordered by its latest failure
        self._failures: collections.OrderedDict[str, collections.deque[float]] = (
            collections.OrderedDict()
        )
        self._all: collections.deque[float] = collections.deque(maxlen=self.total)
        # address key -> last successful login, least recent first
        self._trusted: collections.OrderedDict[str, float] = collections.OrderedDict()

    def _expire(self, now: float) -> None:
        cutoff = now - self.window
        while self._all and self._all[0] <= cutoff:
            self._all.popleft()
        while self._failures:
            key, times = next(iter(self._failures.items()))
            if times[-1] > cutoff:
                break
            del self._failures[key]
        while self._trusted:
            key, when = next(iter(self._trusted.items()))
            if when > now - self.trusted_for:
                break
            del self._trusted[key]

    def _recent(self, key: str, now: float) -> int:
        times = self._failures.get(key)
        if times is None:
            return 0
        while times and times[0] <= now - self.window:
            times.popleft()
        return len(times)

    def refusal(self, ip: str) -> str | None:
        """Why a proof from ``ip`` must not be evaluated now ('address' or 'total'), or None."""
        key = address_key(ip)
        now = time.monotonic()
        with self._lock:
            self._expire(now)
            if self._recent(key, now) >= self.per_address:
                return "address"
            if key not in self._trusted and len(self._all) >= self.total:
                return "total"
            return None

    def failed(self, ip: str) -> None:
        """Record one evaluated, wrong proof from ``ip``."""
        key = address_key(ip)
        now = time.monotonic()
        with self._lock:
            self._expire(now)
            times = self._failures.pop(key, None)
            if times is None:
                times = collections.deque(maxlen=self.per_address)
            times.append(now)
            self._failures[key] = times  # now the most recent
            self._all.append(now)

    def succeeded(self, ip: str) -> None:
        """Remember that ``ip`` logged in: the total budget no longer applies to it."""
        key = address_key(ip)
        with self._lock:
            self._trusted.pop(key, None)
            self._trusted[key] = time.monotonic()
            while len(self._trusted) > self.max_trusted:
                self._trusted.popitem(last=False)

    def trusted(self, ip: str) -> bool:
        """Whether ``ip`` logged in recently (within ``trusted_for``)."""
        key = address_key(ip)
        with self._lock:
            when = self._trusted.get(key)
            return when is not None and time.monotonic() - when < self.trusted_for

    def retry_after(self, ip: str) -> float:
        """Seconds until a proof from ``ip`` would be evaluated again (0 if now)."""
        key = address_key(ip)
        now = time.monotonic()
        with self._lock:
            self._expire(now)
            waits = [0.0]
            times = self._failures.get(key)
            if times is not None and self._recent(key, now) >= self.per_address:
                waits.append(times[0] + self.window - now)
            if key not in self._trusted and len(self._all) >= self.total:
                waits.append(self._all[0] + self.window - now)
            return max(waits)

    def records(self) -> int:
        """How many addresses have failures on record (for tests and figures)."""
        with self._lock:
            self._expire(time.monotonic())
            return len(self._failures)


@dataclass(frozen=True)
class Verdict:
    """What the agent answers an observer's proof: the frame to send, the role if granted."""

    reply: dict[str, object]
    role: str | None = None


class Authenticator:
    """The nonce/HMAC exchange, as two pure steps the listener drives without blocking."""

    def __init__(
        self, tokens: Mapping[str, str], limiter: LoginLimiter, own_cert_der: bytes | None
    ) -> None:
        self._tokens = dict(tokens)
        self.limiter = limiter
        self._binding = cert_digest(own_cert_der)
        self._refused = RateLog(log, every=10.0)

    def hello(self) -> tuple[dict[str, object], bytes]:
        """The agent's first frame and the nonce it carries."""
        server_nonce = secrets.token_bytes(NONCE_BYTES)
        frame = {
            "proto": MAGIC,
            "version": PROTOCOL_VERSION,
            "agent": AGENT_VERSION,
            "auth": "token" if self._tokens else "none",
            "nonce": server_nonce.hex(),
        }
        return frame, server_nonce

    def judge(
        self, reply: dict[str, object], server_nonce: bytes, peer_ip: str, peer: str
    ) -> Verdict:
        """Check the observer's answer; raises HandshakeError for malformed ones.

        The limits are checked now, when the proof arrives (a connection opened before
        a block does not skip it); a refused proof is not evaluated and not recorded.
        """
        version = reply.get("version")
        if version != PROTOCOL_VERSION:
            return Verdict(
                {
                    "ok": False,
                    "error": "version",
                    "message": f"protocol version mismatch: agent {AGENT_VERSION} speaks "
                    f"protocol {PROTOCOL_VERSION}, observer {reply.get('observer', '?')} "
                    f"speaks protocol {version}",
                }
            )
        client_nonce = decode_nonce(reply.get("nonce"))
        if not self._tokens:
            return Verdict({"ok": True, "role": "viewer", "proof": ""}, "viewer")
        mac = reply.get("mac")
        role = None
        refusal = self.limiter.refusal(peer_ip)
        if refusal is not None:
            why = "its address" if refusal == "address" else "all addresses"
            self._refused.event(
                refusal,
                "runtime-observer agent: refusing %s: too many failed logins from %s "
                "(proof not evaluated; retry in %.0fs)",
                peer,
                why,
                self.limiter.retry_after(peer_ip),
            )
        elif isinstance(mac, str) and _PROOF_RE.match(mac):
            role = self._match(mac, server_nonce, client_nonce)
            if role is None:
                self.limiter.failed(peer_ip)
                log.warning("runtime-observer agent: authentication failed from %s", peer)
        else:  # not even shaped like a proof: nothing to evaluate, nothing guessed
            self._refused.event(
                "malformed", "runtime-observer agent: refusing %s: no proof in its answer", peer
            )
        if role is None:
            return Verdict({"ok": False, "error": "auth", "message": "authentication failed"})
        self.limiter.succeeded(peer_ip)
        proof = agent_proof(self._tokens[role], server_nonce, client_nonce, self._binding)
        granted = _downgraded(role, reply.get("role"))
        return Verdict({"ok": True, "role": granted, "proof": proof}, granted)

    def _match(self, mac: str, server_nonce: bytes, client_nonce: bytes) -> str | None:
        """The role whose token produced ``mac``; every token is compared in constant time."""
        found = None
        for role, token in self._tokens.items():
            expected = client_proof(token, server_nonce, client_nonce, self._binding)
            if hmac.compare_digest(expected.encode(), mac.encode()):
                found = role if found is None or ROLES[role] > ROLES[found] else found
        return found


def _downgraded(role: str, requested: object) -> str:
    """The role to grant: the token's, or a lower one the observer asked for (a nodes file
    may say ``role = "viewer"`` to hold an operator token read-only); never a higher one."""
    if isinstance(requested, str) and ROLES.get(requested, ROLES[role]) < ROLES[role]:
        return requested
    return role
