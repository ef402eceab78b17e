"""Create a self-signed agent certificate, its key and viewer/operator tokens.

Lives on the observer side: ``cryptography`` is never required by the agent.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
import ssl
from dataclasses import dataclass
from pathlib import Path

from agent import certexpiry
from agent.wire import format_fingerprint

TOKEN_BYTES = 32
CERT_DAYS = 825


@dataclass(frozen=True)
class KeyMaterial:
    """Paths written by :func:`generate` and the certificate's pinned fingerprint."""

    directory: Path
    cert: Path
    key: Path
    viewer_token: Path
    operator_token: Path
    fingerprint: str
    not_after: datetime.datetime  # when the certificate expires (UTC)


FILES = ("agent.crt", "agent.key", "viewer.token", "operator.token")


def cert_not_after(der: bytes) -> datetime.datetime:
    """When a DER certificate expires (UTC): read by ``cryptography``, or by the agent's
    stdlib reader where the observer runs without it. ValueError if it is not a certificate."""
    try:
        from cryptography import x509
    except ImportError:
        return certexpiry.not_after(der)
    cert = x509.load_der_x509_certificate(der)
    utc = getattr(cert, "not_valid_after_utc", None)  # cryptography 42+
    return utc or cert.not_valid_after.replace(tzinfo=datetime.timezone.utc)


def _material(directory: Path, der: bytes) -> KeyMaterial:
    cert, key, viewer, operator = (directory / name for name in FILES)
    return KeyMaterial(
        directory, cert, key, viewer, operator, format_fingerprint(der), cert_not_after(der)
    )


def load(directory: str | os.PathLike[str]) -> KeyMaterial | None:
    """The key material generate() wrote earlier, or None if any file is missing."""
    out = Path(directory)
    if not all((out / name).is_file() for name in FILES):
        return None
    return _material(out, ssl.PEM_cert_to_DER_cert((out / "agent.crt").read_text()))


def certificate_facts(path: str | os.PathLike[str]) -> tuple[Path, str, datetime.datetime]:
    """(certificate file, fingerprint to pin, expiry) of a keygen directory's agent.crt or
    of a PEM certificate file; ValueError naming the file if it is not one."""
    cert = Path(path)
    if cert.is_dir():
        cert = cert / "agent.crt"
    try:
        der = ssl.PEM_cert_to_DER_cert(cert.read_text(encoding="ascii"))
        return cert, format_fingerprint(der), cert_not_after(der)
    except OSError as exc:
        raise ValueError(f"cannot read {cert}: {exc.strerror or exc}") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{cert} is not a PEM certificate ({exc})") from exc


def _write_private(path: Path, data: bytes) -> None:
    """Write a secret file readable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600)


def generate(
    directory: str | os.PathLike[str],
    *,
    common_name: str = "runtime-observer-agent",
    hosts: tuple[str, ...] = ("localhost", "127.0.0.1", "::1"),
    overwrite: bool = False,
    days: float = CERT_DAYS,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> KeyMaterial:
    """Write agent.crt, agent.key, viewer.token and operator.token into ``directory``.

    The certificate is valid from five minutes ago for ``days`` days, or exactly from
    ``not_before`` to ``not_after`` when given (timezone-aware; a past ``not_after``
    makes an expired certificate, for tests and drills).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    paths = [out / n for n in FILES]
    existing = [p.name for p in paths if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{out} already holds {', '.join(existing)}; refusing to overwrite")

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    alt_names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt_names.append(x509.DNSName(host))
    now = datetime.datetime.now(datetime.timezone.utc)
    start = not_before or now - datetime.timedelta(minutes=5)
    end = not_after or now + datetime.timedelta(days=days)
    if end <= start:
        raise ValueError(f"certificate would expire ({end:%Y-%m-%d}) before it starts")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path, viewer_path, operator_path = paths
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_private(
        key_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    _write_private(viewer_path, (secrets.token_urlsafe(TOKEN_BYTES) + "\n").encode())
    _write_private(operator_path, (secrets.token_urlsafe(TOKEN_BYTES) + "\n").encode())
    return _material(out, cert.public_bytes(serialization.Encoding.DER))
