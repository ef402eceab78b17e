"""When a TLS certificate expires, read from its DER with the stdlib alone, and said plainly.

Pinning checks a fingerprint, not dates, so an expired agent certificate keeps working:
the agent warns when it starts with one, the observer when it connects to one, both in
the words of :func:`expiry_warning`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import datetime

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


def _fields(der: bytes, tag: int, start: int, end: int) -> tuple[int, ...]:
    """An X.509 Time (RFC 5280 4.1.2.5: UTCTime YYMMDDHHMMSSZ or GeneralizedTime) as
    (year, month, day, hour, minute, second), each in datetime's range (else ValueError)."""
    text = der[start:end].decode("ascii")
    if tag == _UTC_TIME:
        year = int(text[:2])
        text = f"{19 if year >= 50 else 20}{text}"
    elif tag != _GENERALIZED_TIME:
        raise ValueError("validity is not a time")
    if len(text) != 15 or not text.endswith("Z") or not text[:14].isdigit():
        raise ValueError(f"unexpected certificate time {text!r}")
    year, month, day, hour, minute, second = [int(text[:4])] + [
        int(text[i : i + 2]) for i in range(4, 14, 2)
    ]
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    days = (31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
    if not (1 <= year <= 9999 and 1 <= month <= 12 and 1 <= day <= days[month - 1]):
        raise ValueError(f"certificate date {text!r} out of range")
    if hour > 23 or minute > 59 or second > 59:
        raise ValueError(f"certificate time {text!r} out of range")
    return year, month, day, hour, minute, second


def _time(der: bytes, tag: int, start: int, end: int) -> datetime.datetime:
    import datetime  # here: the observer's fast path (not_after_seconds) needs none

    return datetime.datetime(*_fields(der, tag, start, end), tzinfo=datetime.timezone.utc)


def _validity_end(der: bytes) -> tuple[int, int, int]:
    """(tag, start, end) of a DER certificate's notAfter; ValueError when not found."""
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
    return _item(der, pos)


def not_after_seconds(der: bytes) -> int:
    """``not_after(der).timestamp()`` without datetime (the observer asks it on every
    connect and needs a date only when the certificate expired or soon will)."""
    return _seconds(*_fields(der, *_validity_end(der)))


def _seconds(year: int, month: int, day: int, hour: int, minute: int, second: int) -> int:
    """Seconds from 1970-01-01T00:00Z to a UTC date and time (proleptic Gregorian)."""
    y = year - (month <= 2)  # days from 1970-01-01 to the date: H. Hinnant's days_from_civil
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    days = era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468
    return days * 86400 + hour * 3600 + minute * 60 + second


def not_after(der: bytes) -> datetime.datetime:
    """The end of a DER certificate's validity (UTC); ValueError when it cannot be read."""
    return _time(der, *_validity_end(der))


def expiry_warning(expires: datetime.datetime, now: datetime.datetime | None = None) -> str:
    """'agent certificate expired on YYYY-MM-DD', 'agent certificate expires on YYYY-MM-DD
    (in N days)' within SOON_DAYS of it, else ''."""
    import datetime

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
    import logging  # here, not at the top: the observer's CLI reads dates, never logs them

    log = logging.getLogger("agent")
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
