"""Optional client certificates (mTLS): required when the agent is given a client CA."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.config import resolve
from agent.server import AgentServer
from observer.client import connect
from observer.errors import ConnectError, NodeDown


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _client_cert(tmp_path, ca_key, ca_name, cn="operator-laptop"):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / f"{cn}.crt", tmp_path / f"{cn}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


def _ca(tmp_path, cn):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = tmp_path / f"{cn}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, _name(cn), str(path)


def test_client_certificate_is_required_and_checked(tmp_path, keys):
    ca_key, ca_name, ca_file = _ca(tmp_path, "ops-ca")
    rogue_key, rogue_name, _ = _ca(tmp_path, "rogue-ca")
    good = _client_cert(tmp_path, ca_key, ca_name)
    bad = _client_cert(tmp_path, rogue_key, rogue_name, cn="intruder")
    token = keys.operator_token.read_text().strip()
    config = resolve(
        "127.0.0.1:0",
        tls_cert=str(keys.cert),
        tls_key=str(keys.key),
        tokens={"operator": token},
        name="mtls",
        client_cafile=ca_file,
        env={},
    )
    server = AgentServer(config)
    server.start()
    try:
        common = {"token": token, "fingerprint": keys.fingerprint}
        with connect(server.address, certfile=good[0], keyfile=good[1], **common) as node:
            assert node.role == "operator" and node.process().node == "mtls"
        for cert in (None, bad):
            with pytest.raises((ConnectError, NodeDown)):
                kw = {"certfile": cert[0], "keyfile": cert[1]} if cert else {}
                with connect(server.address, **common, **kw) as node:
                    node.process()  # TLS 1.3 may report the refusal on first use
    finally:
        server.stop()
