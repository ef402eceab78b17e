"""Open an authenticated connection: TCP, TLS with pinning, the token handshake, then
rpyc's protocol (its client half, observer.rpc)."""

from __future__ import annotations

import contextlib
import hmac
import math
import os
import socket
import ssl
import time
from collections.abc import Callable

from agent.certexpiry import SOON_DAYS, expiry_warning, not_after, not_after_seconds
from agent.frames import MAX_REPLY_FRAME
from agent.record import record
from agent.tlsqueue import note_tls_failure
from agent.version import AGENT_VERSION, PROTOCOL_VERSION
from agent.wire import (
    MAGIC,
    NONCE_BYTES,
    HandshakeError,
    agent_proof,
    cert_digest,
    client_proof,
    decode_nonce,
    is_loopback_host,
    join_host_port,
    parse_fingerprint,
    recv_frame,
    send_frame,
    split_host_port,
)
from observer.errors import (
    AuthenticationError,
    BadFingerprint,
    BadSetting,
    CertificateError,
    ConnectError,
    ConnectionRefused,
    NodeTimeout,
    ObserverError,
    VersionMismatch,
)
from observer.rpc import Connection

OBSERVER_VERSION = AGENT_VERSION  # one distribution ships both halves


@record
class Address:
    """host and port of a node."""

    host: str
    port: int

    def __str__(self) -> str:
        return join_host_port(self.host, self.port)


def parse_address(text: str) -> Address:
    """Parse ``host:port`` or ``[v6]:port``; BadSetting names what is wrong with it."""
    parts = split_host_port(text)
    if parts is not None and parts[1] != 0:
        return Address(*parts)
    port = text.strip().rpartition(":")[2]
    if port.isdigit() and ":" in text and (int(port) == 0 or int(port) > 65535):
        raise BadSetting(f"node address {text!r}: port {int(port)} is out of range 1-65535")
    raise BadSetting(f"node address {text!r} must be host:port")


def parse_pin(fingerprint: str | None) -> bytes | None:
    """The SHA-256 digest a ``sha256:HEX`` fingerprint pins (None when none is given)."""
    if not fingerprint:
        return None
    try:
        return parse_fingerprint(fingerprint)
    except ValueError:
        raise BadFingerprint(
            f"fingerprint {fingerprint!r} is not a SHA-256 fingerprint: expected "
            "sha256:<64 hex digits>, as `observer keygen` prints it"
        ) from None


def check_timeout(seconds: float, what: str = "timeout") -> float:
    """``seconds`` if it is a usable timeout; 0, negative or not finite is a BadSetting
    (a socket timeout of 0 would mean non-blocking, not 'wait forever')."""
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
        shown = f"{seconds:g}" if isinstance(seconds, (int, float)) else repr(seconds)
        raise BadSetting(f"{what} must be a positive number of seconds, not {shown}")
    return float(seconds)


@record
class Session:
    """What the handshake established."""

    conn: Connection
    role: str
    agent_version: str
    tls: bool
    cert_warning: str = ""  # "agent certificate expired on YYYY-MM-DD", or "" when fine


def _client_context(
    cafile: str | None, certfile: str | None, keyfile: str | None
) -> ssl.SSLContext:
    """TLS client context: CA verification when a CA is given, else pinning does it."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cafile:
        ctx.load_verify_locations(cafile)
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:  # pinned: the fingerprint check after the handshake is the verification
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if certfile:
        ctx.load_cert_chain(certfile, keyfile)
    return ctx


def _cert_warning(der: bytes) -> str:
    """Whether the agent's certificate expired or soon will: pinning ignores dates, so say it.

    Read by the agent's stdlib DER reader: importing ``cryptography`` on every connect
    cost a CLI call tens of ms. Only a certificate that reader cannot parse goes to
    ``cryptography`` (where installed).
    """
    try:
        if not_after_seconds(der) - time.time() > SOON_DAYS * 86400:
            return ""  # what expiry_warning says so far ahead (without importing datetime)
        expires = not_after(der)
    except ValueError:
        from observer.keygen import cert_not_after

        try:
            expires = cert_not_after(der)
        except ValueError:
            return ""
    return expiry_warning(expires)


def _encoded_host(host: str) -> str | bytes:
    """``host`` as bytes where the idna codec would make it plain ASCII (an IP address, an
    ASCII name): socket and ssl encode a str host with that codec, whose first use
    imports it with stringprep (~1 ms of a CLI call); given bytes, they take them as they
    are. Else ``host`` itself, for the codec to encode (or refuse) as before."""
    try:
        raw = host.encode("ascii")
    except UnicodeEncodeError:
        return host
    labels = raw.split(b".")  # the codec's checks of an ASCII name (encodings.idna)
    if not raw or not all(0 < len(label) < 64 for label in labels[:-1]) or len(labels[-1]) >= 64:
        return host
    return raw


def _ack_promptly(sock: socket.socket) -> None:
    """Acknowledge what the agent sends at once (Linux TCP_QUICKACK; elsewhere nothing).

    Right after TLS the agent sends its session tickets, then its hello; Nagle holds the
    hello until we acknowledge the tickets, which Linux delays by 40 ms: a third of a CLI
    call's fixed cost, spent waiting."""
    quickack = getattr(socket, "TCP_QUICKACK", None)
    if quickack is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)


def open_session(
    address: Address,
    *,
    token: str | None,
    fingerprint: str | None,
    cafile: str | None,
    certfile: str | None = None,
    keyfile: str | None = None,
    tls: bool = True,
    timeout: float = 10.0,
    connect_timeout: float | None = None,
    server_name: str | None = None,
    role: str | None = None,
) -> Session:
    """Connect, verify the agent and authenticate; raise a precise ObserverError otherwise.

    ``connect_timeout`` bounds connecting and the handshake (default ``timeout``, which
    bounds each later call); ``server_name`` is the name the certificate must carry when
    ``address`` is one of several a DNS name resolved to; ``role`` asks for a lower role
    than the token's (the agent never grants a higher one).
    """
    pinned = parse_pin(fingerprint)
    check_timeout(timeout)
    if connect_timeout is not None:
        check_timeout(connect_timeout, "connect timeout")
    if tls and pinned is None and not cafile:
        raise CertificateError(
            "no way to verify the agent's certificate: pass --fingerprint sha256:... "
            "(printed by `observer keygen`) or --cafile"
        )
    handshake_timeout = timeout if connect_timeout is None else min(timeout, connect_timeout)
    try:
        raw = socket.create_connection(
            (_encoded_host(address.host), address.port), timeout=handshake_timeout
        )
    except TimeoutError as exc:
        raise NodeTimeout(f"timed out connecting to {address}") from exc
    except ConnectionRefusedError as exc:
        raise ConnectionRefused(f"cannot connect to {address}: refused") from exc
    except socket.gaierror as exc:
        raise ConnectError(f"cannot resolve {address.host}: {exc.strerror or exc}") from exc
    except OSError as exc:
        raise ConnectError(f"cannot connect to {address}: {exc.strerror or exc}") from exc
    sock: socket.socket = raw
    cert_warning = ""
    try:
        binding = b""
        if tls:
            ctx = _client_context(cafile, certfile, keyfile)
            try:
                sock = ctx.wrap_socket(
                    raw, server_hostname=_encoded_host(server_name or address.host)
                )
            except ssl.SSLCertVerificationError as exc:
                raise CertificateError(
                    f"certificate of {address} failed verification: {exc.verify_message}"
                ) from exc
            except ssl.SSLError as exc:
                hint = ""
                if "WRONG_VERSION_NUMBER" in str(exc) or "wrong version" in str(exc):
                    hint = " (is the agent running without TLS? use --no-tls for loopback)"
                raise ConnectError(
                    f"TLS handshake with {address} failed: {exc.reason}{hint}"
                ) from None
            der = sock.getpeercert(binary_form=True)
            if der is None:
                raise CertificateError(f"{address} presented no certificate")
            if pinned is not None and not hmac.compare_digest(cert_digest(der), pinned):
                raise CertificateError(
                    f"certificate fingerprint mismatch for {address}: expected "
                    f"sha256:{pinned.hex()}, agent presented sha256:{cert_digest(der).hex()}"
                )
            binding = cert_digest(der)
            cert_warning = _cert_warning(der)
        _ack_promptly(sock)
        # rpyc's protocol, its client half (observer.rpc: no rpyc import); replies capped:
        # an agent cannot make us hold 4 GiB. Its first request (the agent's root) goes
        # out with the login's proof, one round trip fewer; nothing of it is read before
        # the agent proved it knows the token.
        conn = Connection(sock, timeout=timeout, max_frame=MAX_REPLY_FRAME)
        granted, agent_version = _handshake(sock, address, token, binding, role, conn.ask_root)
        sock.settimeout(None)
        return Session(conn, granted, agent_version, tls, cert_warning)
    except TimeoutError as exc:
        _give_up(sock)
        raise NodeTimeout(
            f"{address} did not complete the handshake within {handshake_timeout:g}s"
        ) from exc
    except ObserverError:
        _give_up(sock)
        raise
    except (OSError, HandshakeError) as exc:
        _give_up(sock)
        raise ConnectError(f"handshake with {address} failed: {exc}") from exc


def _give_up(sock: socket.socket) -> None:
    """Close a connection whose login failed; over TLS its error may be left in this
    thread's OpenSSL queue, emptied before the thread's next request (agent.tlsqueue)."""
    if isinstance(sock, ssl.SSLSocket):
        note_tls_failure()
    sock.close()


def _handshake(
    sock: socket.socket,
    address: Address,
    token: str | None,
    binding: bytes,
    role: str | None,
    then: Callable[[], None] = lambda: None,
) -> tuple[str, str]:
    """The token challenge; ``then`` runs right after our proof is sent (it may send a
    request of its own, read only once the agent's proof checked out)."""
    try:
        hello = recv_frame(sock)
    except HandshakeError as exc:
        raise ConnectError(
            f"{address} is not a runtime-observer agent or closed the connection ({exc})"
        ) from exc
    if hello.get("proto") != MAGIC:
        raise ConnectError(f"{address} is not a runtime-observer agent")
    agent_version = str(hello.get("agent", "?"))
    if hello.get("version") != PROTOCOL_VERSION:
        raise VersionMismatch(
            f"protocol version mismatch: agent {agent_version} speaks protocol "
            f"{hello.get('version')}, this observer {OBSERVER_VERSION} speaks {PROTOCOL_VERSION}"
        )
    server_nonce = decode_nonce(hello.get("nonce"))
    client_nonce = os.urandom(NONCE_BYTES)  # what secrets.token_bytes is (not its imports)
    loopback = is_loopback_host(sock.getpeername()[0])  # where we really are, not a name
    token = _token_for(hello.get("auth"), address, token, loopback)
    frame = {
        "version": PROTOCOL_VERSION,
        "observer": OBSERVER_VERSION,
        "nonce": client_nonce.hex(),
    }
    if token:  # only ever to an agent whose challenge asked for it
        frame["mac"] = client_proof(token, server_nonce, client_nonce, binding)
    if role:
        frame["role"] = role
    send_frame(sock, frame)
    then()  # may send: it leaves the handshake's timeout alone
    try:
        reply = recv_frame(sock)
    except HandshakeError as exc:
        raise AuthenticationError(f"authentication failed: {address} closed the link") from exc
    if not reply.get("ok"):
        if reply.get("error") == "version":
            raise VersionMismatch(str(reply.get("message")))
        if reply.get("error") == "busy":  # our token was good; every session slot is taken
            sessions = reply.get("sessions")
            count = sessions if type(sessions) is int else "?"
            raise ConnectError(
                f"cannot connect to {address}: agent busy ({count} sessions); "
                "try again once another observer disconnects"
            )
        raise AuthenticationError(f"authentication failed for {address}")
    role = str(reply.get("role", "viewer"))
    if token:
        expected = agent_proof(token, server_nonce, client_nonce, binding)
        if not hmac.compare_digest(expected, str(reply.get("proof", ""))):
            raise AuthenticationError(
                f"authentication failed: {address} could not prove it knows the token"
            )
    elif role != "viewer":
        raise AuthenticationError(
            f"refusing {address}: it skipped authentication yet claims the {role!r} role "
            "(an agent without tokens grants viewer only)"
        )
    return role, agent_version


def _token_for(auth: object, address: Address, token: str | None, loopback: bool) -> str | None:
    """The token to prove, or None for an anonymous link; refuse an agent whose challenge
    does not fit what the user asked for. An agent that skips authentication is accepted
    only on a loopback address when no token was given: had one been given, an impostor
    saying 'auth: none' could pose as the node (and relay our proof where TLS is off)."""
    if auth == "token":
        if not token:
            raise AuthenticationError(
                f"authentication failed: {address} requires a token "
                "(--token-file or OBSERVER_TOKEN)"
            )
        return token
    if auth != "none":
        raise AuthenticationError(f"refusing {address}: unknown authentication {auth!r}")
    if token:
        raise AuthenticationError(
            f"refusing {address}: it asks for no token (auth: none) though one was given; "
            "a real agent with tokens always asks for one (the token was not used)"
        )
    if not loopback:
        raise AuthenticationError(
            f"refusing {address}: it skips authentication, which only a loopback agent may "
            "(give the agent tokens, or reach it through a loopback tunnel)"
        )
    return None
