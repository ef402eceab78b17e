"""The observer's side of the link: what it sends, to whom, and what it tells its user.

A malformed fingerprint is named before anything connects, in every front end; an
impostor on loopback that says ``auth: none`` gets neither the token's proof nor belief
in the role it claims (even when it relays to the real agent); an expired or expiring
agent certificate is still pinned but both halves say so, with the date.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import secrets
import socket
import string
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import agent
from agent import certexpiry
from agent.certexpiry import SOON_DAYS, expiry_warning, not_after, not_after_seconds
from agent.version import PROTOCOL_VERSION
from agent.wire import MAGIC, NONCE_BYTES, HandshakeError, parse_fingerprint, recv_frame, send_frame
from observer import errors
from observer.client import connect
from observer.errors import AuthenticationError, ObserverError
from observer.keygen import generate, load
from observer.link import Link, NotConnected, Status
from observer.nodesfile import NodeSpec, save_nodes
from observer.transport import Address
from tests.helpers import echo_ok, line_value, start_test_host, wait_until
from tests.test_cli import observer

BAD = "sha256:00"
UTC = datetime.timezone.utc


@pytest.fixture
def listener():
    """A port that records whether anyone connected: proof that nothing tried to."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    yield sock
    sock.close()


def nobody_connected(sock: socket.socket) -> bool:
    try:
        conn, _ = sock.accept()
    except BlockingIOError:
        return True
    conn.close()
    return False


def address_of(sock: socket.socket) -> str:
    return f"127.0.0.1:{sock.getsockname()[1]}"


# ------------------------------------------------------------------ malformed fingerprint


def test_malformed_fingerprint_is_one_line_before_connecting_in_cli_api_and_nodes(
    listener, tmp_path
):
    """Each front end names the bad value; no connection is made; `nodes` shows an error
    state, not 'connecting' (it used to: the ValueError vanished in a worker thread)."""
    where = address_of(listener)
    out = observer("ps", where, "--fingerprint", BAD)
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.strip().splitlines() == [out.stderr.strip()], out.stderr
    assert repr(BAD) in out.stderr and "64 hex digits" in out.stderr
    with pytest.raises(ObserverError, match="sha256:00") as caught:
        connect(where, fingerprint=BAD)
    assert isinstance(caught.value, errors.CertificateError)
    nodes = observer("nodes", where, "--fingerprint", BAD, "--json")
    assert nodes.returncode == 0 and "Traceback" not in nodes.stderr, nodes.stderr
    (row,) = json.loads(nodes.stdout)
    assert row["status"] == "auth-failed" and repr(BAD) in row["error"]
    nodes_file = tmp_path / "nodes.toml"  # the file keeps the entry; its row says why
    save_nodes(nodes_file, [NodeSpec(where, name="typo", fingerprint=BAD)])
    listed = observer("nodes", "--nodes-file", str(nodes_file), "--json")
    (row,) = json.loads(listed.stdout)
    assert row["name"] == "typo" and row["status"] == "auth-failed" and BAD in row["error"]
    assert nobody_connected(listener)


def _rejected(text: str) -> bool:
    try:
        parse_fingerprint(text)
    except ValueError:
        return True
    return False


@settings(max_examples=200, deadline=None)
@given(st.text(string.hexdigits + ":sha256 xyz\t", min_size=1, max_size=80).filter(_rejected))
def test_any_malformed_fingerprint_is_named_and_never_connects(text):
    from observer.client import check_settings

    with pytest.raises(errors.CertificateError) as caught:
        check_settings("127.0.0.1:9", text)
    assert repr(text) in str(caught.value) and "\n" not in str(caught.value)
    link = Link(NodeSpec("127.0.0.1:9", fingerprint=text))
    assert link.status is Status.AUTH_FAILED and link.error == str(caught.value)
    with pytest.raises(NotConnected, match="SHA-256"):
        link.call(lambda node: node.hello(), 1.0)


# ------------------------------------------------------------------ impostors saying auth: none


class Impostor:
    """A loopback server speaking the agent's handshake: it says ``auth: none``, claims
    ``role``, and records every frame it gets. With ``upstream`` (a real agent without
    TLS) it relays the real challenge's nonce and the client's answer, as a
    man-in-the-middle would, and keeps the agent's verdict."""

    def __init__(self, role: str = "operator", upstream: str = "") -> None:
        self.role = role
        self.upstream = upstream
        self.frames: list[dict] = []
        self.received = bytearray()
        self.relay_verdict: dict | None = None
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.sock.settimeout(10)
        self.address = address_of(self.sock)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError, HandshakeError), self.sock:
            client, _ = self.sock.accept()
            client.settimeout(10)
            with client, contextlib.ExitStack() as stack:
                nonce = secrets.token_hex(NONCE_BYTES)
                real = None
                if self.upstream:
                    host, port = self.upstream.rsplit(":", 1)
                    real = stack.enter_context(socket.create_connection((host, int(port)), 10))
                    nonce = recv_frame(real)["nonce"]  # the real agent's challenge
                hello = {"proto": MAGIC, "version": PROTOCOL_VERSION, "agent": "impostor"}
                send_frame(client, {**hello, "auth": "none", "nonce": nonce})
                frame = recv_frame(client)
                self.frames.append(frame)
                if real is not None:
                    send_frame(real, frame)
                    self.relay_verdict = recv_frame(real)
                send_frame(client, {"ok": True, "role": self.role, "proof": ""})
                while data := client.recv(4096):  # whatever else the client says
                    self.received.extend(data)

    def join(self) -> None:
        self.sock.close()
        self.thread.join(15)
        assert not self.thread.is_alive()


def test_impostor_relaying_to_a_plain_agent_gets_no_proof_and_no_session(keys):
    """The attacker sits on loopback between an operator (--no-tls, holding the operator
    token) and a real agent without TLS, passes on the agent's nonce but says 'auth:
    none'. Before: the observer sent the HMAC anyway, the relay got an operator session
    on the real agent, and the operator believed the impostor's 'operator'."""
    tokens = {"operator": keys.operator_token.read_text().strip()}
    server = agent.start("127.0.0.1:0", tokens=tokens, name="real")
    try:
        impostor = Impostor(upstream=server.address)
        with pytest.raises(AuthenticationError, match="auth: none"):
            connect(impostor.address, token=tokens["operator"], tls=False)
        impostor.join()
        assert all("mac" not in frame for frame in impostor.frames), impostor.frames
        assert impostor.relay_verdict is None or not impostor.relay_verdict.get("ok")
        assert tokens["operator"].encode() not in impostor.received
        with connect(server.address, token=tokens["operator"], tls=False) as node:
            assert node.role == "operator"  # the real agent and a real operator: unharmed
    finally:
        agent.stop()


def test_anonymous_impostor_claiming_operator_is_refused_and_gets_no_mac():
    impostor = Impostor(role="operator")
    with pytest.raises(AuthenticationError, match="claims the 'operator' role"):
        connect(impostor.address, tls=False)
    impostor.join()
    assert len(impostor.frames) == 1 and "mac" not in impostor.frames[0]


def test_cli_no_tls_with_a_token_refuses_an_impostor_in_one_line(keys):
    impostor = Impostor(role="operator")
    out = observer("ps", impostor.address, "--no-tls", "--token-file", str(keys.operator_token))
    impostor.join()
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "refusing" in out.stderr
    assert all("mac" not in frame for frame in impostor.frames)


def test_auth_none_is_only_for_a_tokenless_loopback_link():
    from observer.transport import _token_for

    where = Address("node.internal", 7330)
    assert _token_for("none", where, None, True) is None
    assert _token_for("token", where, "t", False) == "t"
    for auth, token, loopback in [
        ("none", None, False),  # a remote agent always asks for a token
        ("none", "t", True),  # we hold a token: a real agent would have asked for it
        ("plain", None, True),  # an authentication we do not know
        ("token", None, True),  # asks for a token we do not have
    ]:
        with pytest.raises(AuthenticationError):
            _token_for(auth, where, token, loopback)


def test_a_real_anonymous_loopback_agent_still_gives_a_viewer():
    server = agent.start("127.0.0.1:0", name="anon")
    try:
        with connect(server.address, tls=False) as node:
            assert node.role == "viewer" and node.hello().node == "anon"
    finally:
        agent.stop()


# ------------------------------------------------------------------ certificate expiry


@pytest.fixture(scope="module")
def expired_keys(tmp_path_factory):
    return generate(
        tmp_path_factory.mktemp("expired"),
        not_before=datetime.datetime(2020, 1, 1, tzinfo=UTC),
        not_after=datetime.datetime(2021, 6, 30, 12, tzinfo=UTC),
    )


@pytest.fixture(scope="module")
def expired_host(expired_keys):
    proc = start_test_host(expired_keys.directory)
    yield proc, line_value(proc, "agent"), line_value(proc, "echo")
    proc.stop()


def test_expired_certificate_warns_on_both_sides_with_the_date(expired_keys, expired_host):
    """The agent starts (pinning ignores dates) but logs the date; the observer connects
    and says so once: on stderr for the CLI, as cert_warning for the API."""
    proc, address, echo = expired_host
    wait_until(
        lambda: any("agent certificate expired on 2021-06-30" in line for line in proc.stderr),
        message="the agent's warning at start",
    )
    creds = ["--token-file", str(expired_keys.viewer_token)]
    out = observer("info", address, *creds, "--fingerprint", expired_keys.fingerprint)
    assert out.returncode == 0, out.stderr
    assert out.stderr.splitlines() == ["warning: agent certificate expired on 2021-06-30"]
    with connect(
        address, token_file=expired_keys.viewer_token, fingerprint=expired_keys.fingerprint
    ) as node:
        assert node.cert_warning == "agent certificate expired on 2021-06-30"
        link = Link(
            NodeSpec(
                address,
                token_file=str(expired_keys.viewer_token),
                fingerprint=expired_keys.fingerprint,
            )
        )
        link.call(lambda n: n.hello(), 10.0)
        assert link.cert_warning == node.cert_warning
        link.close()
    assert echo_ok(echo)


def test_certificate_expiring_soon_is_announced_by_agent_and_observer(tmp_path, caplog):
    soon = generate(tmp_path / "soon", days=5)
    day = soon.not_after.strftime("%Y-%m-%d")
    tokens = {"viewer": soon.viewer_token.read_text().strip()}
    with caplog.at_level("WARNING", logger="agent"):
        server = agent.start(
            "127.0.0.1:0", tls_cert=str(soon.cert), tls_key=str(soon.key), tokens=tokens
        )
    try:
        assert f"agent certificate expires on {day} (in 5 days)" in caplog.text
        with connect(server.address, token=tokens["viewer"], fingerprint=soon.fingerprint) as n:
            assert n.cert_warning == f"agent certificate expires on {day} (in 5 days)"
    finally:
        agent.stop()


def test_keygen_prints_the_expiry_date(tmp_path):
    out = observer("keygen", str(tmp_path / "k"))
    assert out.returncode == 0, out.stderr
    made = load(tmp_path / "k")
    assert made is not None and made.not_after > datetime.datetime.now(UTC)
    assert f"certificate expires on {made.not_after:%Y-%m-%d}" in out.stdout


@pytest.fixture(scope="module")
def signing_key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


@settings(max_examples=60, deadline=None)
@given(
    start=st.datetimes(datetime.datetime(1950, 1, 1), datetime.datetime(2090, 1, 1)),
    length=st.timedeltas(datetime.timedelta(seconds=1), datetime.timedelta(days=9000)),
)
def test_agent_reads_the_expiry_date_as_cryptography_does(signing_key, start, length):
    """The agent has no cryptography: its stdlib DER reader must agree with it, for
    UTCTime (before 2050) and GeneralizedTime dates alike."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    name = x509.Name(  # an issuer longer than 127 bytes: multi-byte DER lengths
        [
            x509.NameAttribute(oid, "x" * 60)
            for oid in (NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME, NameOID.LOCALITY_NAME)
        ]
    )
    begin = start.replace(microsecond=0, tzinfo=UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(signing_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(begin)
        .not_valid_after(begin + length)
        .sign(signing_key, hashes.SHA256())
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    assert not_after(der) == cert.not_valid_after_utc
    assert not_after_seconds(der) == cert.not_valid_after_utc.timestamp()


@settings(max_examples=500, deadline=None)
@given(
    text=st.one_of(
        st.datetimes(datetime.datetime(1, 1, 1), datetime.datetime(9999, 12, 31)).map(
            lambda d: d.strftime("%Y%m%d%H%M%SZ").rjust(15, "0")
        ),
        st.from_regex(r"\A[0-9]{14}Z\Z"),  # any digits: month 13, Feb 30, 24:00, ...
    ),
    utc=st.booleans(),
)
def test_the_observers_datetime_free_expiry_reads_what_datetime_does(text, utc):
    """On connect the observer reads the agent certificate's expiry as seconds, without
    datetime (an import of every CLI call), and asks for a date only when it is near:
    the same instant datetime makes, and a ValueError wherever datetime refuses."""
    tag, raw = (0x17, text[2:]) if utc else (0x18, text)
    data = raw.encode()
    try:
        expected = certexpiry._time(data, tag, 0, len(data)).timestamp()
    except ValueError:
        with pytest.raises(ValueError):
            certexpiry._seconds(*certexpiry._fields(data, tag, 0, len(data)))
        return
    assert certexpiry._seconds(*certexpiry._fields(data, tag, 0, len(data))) == expected


def test_expiry_warning_says_expired_soon_or_nothing():
    now = datetime.datetime(2030, 5, 1, 12, tzinfo=UTC)
    day = datetime.timedelta(days=1)
    assert expiry_warning(now - day, now) == "agent certificate expired on 2030-04-30"
    assert expiry_warning(now, now) == "agent certificate expired on 2030-05-01"
    assert (
        expiry_warning(now + 3 * day, now) == "agent certificate expires on 2030-05-04 (in 3 days)"
    )
    assert expiry_warning(now + day / 2, now).endswith("(within a day)")
    assert expiry_warning(now + SOON_DAYS * day, now).endswith(f"(in {SOON_DAYS} days)")
    assert expiry_warning(now + SOON_DAYS * day + day / 24, now) == ""
    with pytest.raises(ValueError):
        not_after(b"\x30\x03\x02\x01\x01")
    with pytest.raises(ObserverError, match="timeout must be a positive number"):
        connect("127.0.0.1:9", tls=False, timeout=0)
