"""When a TLS certificate expires, read from its DER with the stdlib alone, and said plainly.

Pinning checks a fingerprint, not dates, so an expired agent certificate keeps working:
the agent warns when it starts with one, the observer when it connects to one, both in
the words of :func:`expiry_warning`.
"""

from __future__ import annotations

import datetime
import logging
import math

log = logging.getLogger("agent")

SOON_DAYS = 14  # warn this long before the certificate expires
_SEQUENCE, _UTC_TIME, _GENERALIZED_TIME, _VERSION_TAG = 0x30, 0x17, 0x18, 0xA0


def _item(der: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of contents, end of contents) of the DER item at ``pos``."""
    if pos + 2 > len(der):
        raise ValueError("truncated DER")
    tag, length = der[pos], der[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if not 1 <= count <= 4 or pos + count > len(der):
            raise ValueError("bad DER length")
        length = int.from_bytes(der[pos : pos + count], "big")
        pos += count
    if pos + length > len(der):
        raise ValueError("truncated DER")
    return tag, pos, pos + length


def _time(der: bytes, tag: int, start: int, end: int) -> datetime.datetime:
    """An X.509 Time (RFC 5280 4.1.2.5: UTCTime YYMMDDHHMMSSZ or GeneralizedTime)."""
    text = der[start:end].decode("ascii")
    if tag == _UTC_TIME:
        year = int(text[:2])
        text = f"{19 if year >= 50 else 20}{text}"
    elif tag != _GENERALIZED_TIME:
        raise ValueError("validity is not a time")
    if len(text) != 15 or not text.endswith("Z") or not text[:14].isdigit():
        raise ValueError(f"unexpected certificate time {text!r}")
    fields = [int(text[i : i + 2]) for i in range(4, 14, 2)]
    return datetime.datetime(int(text[:4]), *fields, tzinfo=datetime.timezone.utc)


def not_after(der: bytes) -> datetime.datetime:
    """The end of a DER certificate's validity (UTC); ValueError when it cannot be read."""
    tag, start, _ = _item(der, 0)  # Certificate
    tag_tbs, pos, _ = _item(der, start)  # tbsCertificate
    if tag != _SEQUENCE or tag_tbs != _SEQUENCE:
        raise ValueError("not a certificate")
    tag, _, pos = _item(der, pos)
    if tag == _VERSION_TAG:  # [0] version, then serialNumber
        _, _, pos = _item(der, pos)
    for _ in range(2):  # signature algorithm, issuer
        _, _, pos = _item(der, pos)
    tag, pos, _ = _item(der, pos)  # validity: notBefore, notAfter
    if tag != _SEQUENCE:
        raise ValueError("no validity in certificate")
    _, _, pos = _item(der, pos)
    return _time(der, *_item(der, pos))


def expiry_warning(expires: datetime.datetime, now: datetime.datetime | None = None) -> str:
    """'agent certificate expired on YYYY-MM-DD', 'agent certificate expires on YYYY-MM-DD
    (in N days)' within SOON_DAYS of it, else ''."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    day = expires.strftime("%Y-%m-%d")
    if expires <= now:
        return f"agent certificate expired on {day}"
    left = math.ceil((expires - now) / datetime.timedelta(days=1))
    if left > SOON_DAYS:
        return ""
    return (
        f"agent certificate expires on {day} ({'within a day' if left == 1 else f'in {left} days'})"
    )


def warn_at_start(der: bytes | None, path: str) -> str:
    """Log a warning when the certificate the agent serves has expired or soon will;
    the warning ('' if none). Never raises: an unreadable date is only logged."""
    if not der:
        return ""
    try:
        warning = expiry_warning(not_after(der))
    except Exception as exc:
        log.warning("runtime-observer agent: cannot read the expiry date of %s: %s", path, exc)
        return ""
    if warning:
        log.warning(
            "runtime-observer agent: %s (%s); observers pinning it will warn: renew it with "
            "`observer keygen`",
            warning,
            path,
        )
    return warning
