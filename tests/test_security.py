"""Who may connect: bad tokens, wrong certificates, plain TCP and garbage are all refused
while the host keeps serving; tokens never travel; unsafe binds are refused."""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import ssl
import struct

import pytest

import agent
from agent.config import resolve
from agent.security import ConfigError
from agent.server import AgentServer
from agent.version import PROTOCOL_VERSION
from agent.wire import recv_frame, send_frame
from observer.client import connect
from observer.errors import AuthenticationError, CertificateError, ConnectError, NodeDown
from tests.helpers import echo_ok, wait_until


def _split(address):
    host, port = address.rsplit(":", 1)
    return host, int(port)


def test_wrong_token_is_rejected(host, other_keys):
    with pytest.raises(AuthenticationError, match="^authentication failed"):
        connect(
            host.address, token_file=other_keys.operator_token, fingerprint=host.keys.fingerprint
        )
    with pytest.raises(AuthenticationError, match="requires a token"):
        connect(host.address, fingerprint=host.keys.fingerprint)
    assert echo_ok(host.echo)


def test_wrong_fingerprint_is_rejected_before_any_token_is_used(host, other_keys):
    with pytest.raises(CertificateError, match="fingerprint mismatch"):
        connect(
            host.address, token_file=host.keys.operator_token, fingerprint=other_keys.fingerprint
        )
    with pytest.raises(CertificateError, match="failed verification"):
        connect(host.address, token_file=host.keys.operator_token, cafile=str(other_keys.cert))
    assert echo_ok(host.echo)


def test_ca_file_verification_works(host):
    with connect(host.address, token_file=host.keys.viewer_token, cafile=str(host.keys.cert)) as n:
        assert n.role == "viewer"


def test_plain_tcp_and_garbage_are_rejected_and_host_keeps_serving(make_host):
    host = make_host(env={"OBSERVER_AGENT_AUTH_FAILURES": "100"})
    for payload in (b"GET / HTTP/1.0\r\n\r\n", secrets.token_bytes(4096), b"\x16\x03\x01\xff\xff"):
        with socket.create_connection(_split(host.address), timeout=10) as sock:
            data = b""
            try:
                sock.sendall(payload)
                sock.shutdown(socket.SHUT_WR)
                while chunk := sock.recv(4096):
                    data += chunk
            except OSError:
                pass  # a reset is a refusal too
            assert b"runtime-observer" not in data  # nothing of ours leaks pre-TLS
    # garbage inside a valid TLS session, where the handshake frame is expected
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    for garbage in (struct.pack(">I", 10**9), struct.pack(">I", 5) + b"\xff\xfe[]{", b"x" * 64):
        with socket.create_connection(_split(host.address), timeout=10) as raw:
            with ctx.wrap_socket(raw) as tls:
                hello = recv_frame(tls)
                assert hello["proto"] == "runtime-observer" and "nonce" in hello
                tls.sendall(garbage)
                try:
                    assert tls.recv(100) == b""  # closed without a word
                except (ConnectionResetError, ssl.SSLError):
                    pass
    assert echo_ok(host.echo)
    with host.connect() as node:  # and real observers still get in
        assert node.process().pid


def test_version_mismatch_names_both_versions(host):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(_split(host.address), timeout=10) as raw,
        ctx.wrap_socket(raw) as tls,
    ):
        recv_frame(tls)
        send_frame(tls, {"version": PROTOCOL_VERSION + 41, "observer": "9.9.9", "nonce": "00" * 32})
        reply = recv_frame(tls)
    assert reply["ok"] is False and reply["error"] == "version"
    assert f"protocol {PROTOCOL_VERSION}" in reply["message"]
    assert f"protocol {PROTOCOL_VERSION + 41}" in reply["message"] and "9.9.9" in reply["message"]


def test_token_never_travels(host):
    """Record the client's bytes on the wire through a relay: the token is not among them."""
    import threading

    captured = bytearray()
    relay = socket.socket()
    relay.bind(("127.0.0.1", 0))
    relay.listen(1)

    def pump(src, dst, record):
        try:
            while data := src.recv(65536):
                if record:
                    captured.extend(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def serve():
        client, _ = relay.accept()
        upstream = socket.create_connection(_split(host.address))
        threading.Thread(target=pump, args=(client, upstream, True), daemon=True).start()
        pump(upstream, client, False)

    threading.Thread(target=serve, daemon=True).start()
    token = host.keys.operator_token.read_text().strip()
    with connect(
        f"127.0.0.1:{relay.getsockname()[1]}",
        token=token,
        fingerprint=host.keys.fingerprint,
    ) as node:
        assert node.role == "operator"
    relay.close()
    assert captured and token.encode() not in bytes(captured)


def test_failed_logins_are_rate_limited(make_host, other_keys):
    limited = make_host(env={"OBSERVER_AGENT_AUTH_FAILURES": "2"})
    for _ in range(2):
        with pytest.raises(AuthenticationError):
            connect(
                limited.address,
                token_file=other_keys.operator_token,
                fingerprint=limited.keys.fingerprint,
            )
    # now even the right token is refused for this peer for a while, with no detail given
    with pytest.raises(AuthenticationError, match="^authentication failed for"):
        limited.connect()
    assert echo_ok(limited.echo)
    wait_until(
        lambda: any("too many failed logins" in line for line in limited.process.stderr),
        message="the agent logs the refusal",
    )


def test_non_loopback_bind_without_tls_and_token_is_refused(keys):
    for kwargs in (
        {},
        {"tls_cert": str(keys.cert), "tls_key": str(keys.key)},
        {"tokens": {"operator": secrets.token_urlsafe(32)}},
    ):
        config = resolve(
            "0.0.0.0:0",
            name="t",
            env={},
            **{"tls_cert": None, "tls_key": None, "tokens": None, **kwargs},
        )
        with pytest.raises(ConfigError, match="without TLS and a token"):
            AgentServer(config)


def test_bad_configuration_is_refused(keys):
    with pytest.raises(ConfigError, match="unknown role"):
        resolve("127.0.0.1:0", tls_cert=None, tls_key=None, tokens={"root": "x" * 32}, name="t")
    with pytest.raises(ConfigError, match="viewer token is too weak.*observer keygen"):
        resolve("127.0.0.1:0", tls_cert=None, tls_key=None, tokens={"viewer": "short"}, name="t")
    with pytest.raises(ConfigError, match="host:port"):
        resolve("nonsense", tls_cert=None, tls_key=None, tokens=None, name="t")
    with pytest.raises(ConfigError, match="both a certificate and a key"):
        resolve("127.0.0.1:0", tls_cert=str(keys.cert), tls_key=None, tokens=None, name="t")


def test_in_process_start_stop_is_idempotent_and_releases_port(keys):
    tokens = {"operator": keys.operator_token.read_text().strip()}
    first = agent.start(
        "127.0.0.1:0", tls_cert=str(keys.cert), tls_key=str(keys.key), tokens=tokens, name="inproc"
    )
    try:
        assert agent.start("127.0.0.1:0") is first
        with connect(first.address, token=tokens["operator"], fingerprint=keys.fingerprint) as n:
            assert n.name == "inproc" and n.role == "operator"
        port = first.port
    finally:
        agent.stop()
    agent.stop()
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))  # the port is free again


def test_loopback_without_tls_gives_an_anonymous_viewer():
    server = agent.start("127.0.0.1:0", name="plain")
    try:
        with connect(server.address, tls=False) as node:
            assert node.role == "viewer"
            assert json.dumps(node.hello().node) == '"plain"'
        with pytest.raises((ConnectError, CertificateError)):
            connect(server.address, fingerprint="sha256:" + "0" * 64)
    finally:
        agent.stop()


def test_stop_closes_connected_observers(keys):
    tokens = {"operator": keys.operator_token.read_text().strip()}
    server = agent.start(
        "127.0.0.1:0", tls_cert=str(keys.cert), tls_key=str(keys.key), tokens=tokens, name="st"
    )
    node = connect(server.address, token=tokens["operator"], fingerprint=keys.fingerprint)
    try:
        assert node.process().node == "st"
        agent.stop()
        with pytest.raises(NodeDown):
            node.process()
    finally:
        agent.stop()
        node.close()
