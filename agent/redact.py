"""Redaction of secrets (names, URL passwords, auth headers) before anything leaves the host."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from functools import lru_cache

REDACTED = "<redacted>"

# Long, unambiguous words: a name containing one of them anywhere is sensitive.
_LONG_WORDS = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "authorization",
    "credential",
    "cookie",
    "apikey",
    "privatekey",
    "privkey",
    "sessionid",
    "sessid",
    "signature",
    "bearer",
)
# Short, ambiguous words: sensitive only as a whole word ("cache_key" yes, "monkey" no).
_SHORT_WORDS = frozenset(
    {"key", "auth", "pwd", "pw", "pass", "pin", "sig", "session", "jwt", "otp"}
)
# Longest name inspected: longer names are cut (secret names are short; this bounds the work).
_MAX_NAME = 4096
_CACHED_NAME = 128  # names up to this length are cached (bounded memory)

# Words of a name: "accessToken" -> access, Token; "APIKey" -> API, Key; "DB_PWD2" -> DB, PWD, 2.
_WORD_RE = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_NON_ALNUM_RE = re.compile(r"[^a-z0-9]+")

# "scheme://netloc": the netloc stops at the path, query, fragment, whitespace or a quote, so
# consecutive matches never overlap and the scan is linear.
_URL_RE = re.compile(r"://([^\s/?#\"']*)")
# "Bearer <token>" / "Basic <base64>": the classes are disjoint, so there is no backtracking.
_AUTH_RE = re.compile(r"(?<![A-Za-z0-9_])(bearer|basic)[ \t]+([A-Za-z0-9\-._~+/]+=*)", re.I)
# "name=value", "name: value", '"name": value': a name is a maximal run of identifier characters
# (the look-behind forbids starting inside a run, which keeps the search linear).
_NAME_RE = re.compile(r"(?<![A-Za-z0-9_.\-])([A-Za-z0-9_.\-]+)[\"']?[ \t]*[=:]{1,2}[ \t]*")
# An authentication scheme kept in front of a value ("Authorization: Bearer <redacted>").
_SCHEME_RE = re.compile(r"(?:bearer|basic|token|digest|negotiate|ntlm)[ \t]+", re.I)
_UNQUOTED_VALUE_RE = re.compile(r"[^\s&;,\"')\]}]+")
_QUOTED_VALUE_RE = {
    '"': re.compile(r'[^"\\]*(?:\\.[^"\\]*)*', re.S),
    "'": re.compile(r"[^'\\]*(?:\\.[^'\\]*)*", re.S),
}
# Each pass only masks; a few passes reach a fixed point for any realistic text.
_MAX_PASSES = 4


def is_sensitive(name: str) -> bool:
    """Whether a variable, key or env-var name likely holds a secret (so its value is hidden)."""
    try:
        if type(name) is not str:
            if type(name) is bytes:
                name = name.decode("latin-1")
            elif issubclass(type(name), str):
                name = str.__str__(name)  # exact copy: no method of the subclass runs
            else:
                return False
        name = name[:_MAX_NAME]
        return _is_sensitive_cached(name) if len(name) <= _CACHED_NAME else _is_sensitive(name)
    except Exception:
        return False


@lru_cache(maxsize=4096)
def _is_sensitive_cached(name: str) -> bool:
    """is_sensitive for the short names met over and over (locals, keys, env vars)."""
    return _is_sensitive(name)


def _is_sensitive(name: str) -> bool:
    """Core of is_sensitive, for an exact str of bounded length."""
    compact = _NON_ALNUM_RE.sub("", name.lower())
    if any(word in compact for word in _LONG_WORDS):
        return True
    for word in _WORD_RE.findall(name):
        word = word.lower()
        if word in _SHORT_WORDS or (word[-1:] == "s" and word[:-1] in _SHORT_WORDS):
            return True
    return False


def redact_text(text: str) -> str:
    """Mask credentials inside free text (URL passwords, auth headers, name=value); never raises."""
    try:
        if type(text) is not str:
            if not issubclass(type(text), str):
                return REDACTED
            text = str.__str__(text)
        for _ in range(_MAX_PASSES):
            new = _redact_names(_redact_auth(_redact_urls(text)))
            if new == text:
                break
            text = new
        return text
    except Exception:
        return REDACTED  # never leak what we failed to inspect


def redact_mapping(mapping: Mapping[str, str]) -> dict[str, str]:
    """Copy of an environment-like mapping with secrets masked, safe to send to the observer."""
    out: dict[str, str] = {}
    try:
        items = list(mapping.items())
    except Exception:
        return out
    for key, value in items:
        k = _as_text(key)
        if is_sensitive(k):
            out[k] = REDACTED
        else:
            out[k] = redact_text(_as_text(value))
    return out


def _as_text(value: object) -> str:
    """Text of an env key or value (str or bytes); other objects get a placeholder."""
    if type(value) is str:
        return value
    if type(value) is bytes:
        return value.decode("utf-8", "surrogateescape")
    if issubclass(type(value), str):
        return str.__str__(value)
    return "<not text>"  # never format an unknown object: that could run its code


def _redact_urls(text: str) -> str:
    """Mask the password of every URL userinfo: scheme://user:<redacted>@host."""
    if "://" not in text:
        return text
    return _URL_RE.sub(_mask_netloc, text)


def _mask_netloc(match: re.Match[str]) -> str:
    """Replacement for one '://netloc' match."""
    netloc = match.group(1)
    at = netloc.rfind("@")
    if at < 0:
        return match.group(0)
    colon = netloc.find(":", 0, at)
    if colon < 0 or netloc[colon + 1 : at] in ("", REDACTED):
        return match.group(0)
    return f"://{netloc[: colon + 1]}{REDACTED}{netloc[at:]}"


def _redact_auth(text: str) -> str:
    """Mask "Bearer <token>" and "Basic <base64 of user:password>" credentials."""
    return _AUTH_RE.sub(_mask_auth, text)


def _mask_auth(match: re.Match[str]) -> str:
    """Replacement for one authorization-scheme match."""
    scheme, token = match.group(1), match.group(2)
    if scheme.lower() == "basic" and not _looks_like_basic(token):
        return match.group(0)  # "Basic information": an English word, not a credential
    return match.group(0)[: match.start(2) - match.start(0)] + REDACTED


def _looks_like_basic(token: str) -> bool:
    """Whether a token is base64 of 'user:password', as in an HTTP Basic header."""
    stripped = token.rstrip("=")
    try:
        raw = base64.b64decode(stripped + "=" * (-len(stripped) % 4), validate=True)
    except (binascii.Error, ValueError):
        return False
    return b":" in raw


def _redact_names(text: str) -> str:
    """Mask the value of every name=value / name: value pair whose name is sensitive."""
    if "=" not in text and ":" not in text:
        return text
    parts: list[str] = []
    done = 0  # text[:done] is already in parts
    pos = 0
    while True:
        match = _NAME_RE.search(text, pos)
        if match is None:
            break
        pos = match.end()
        if not is_sensitive(match.group(1)):
            continue
        scheme = _SCHEME_RE.match(text, pos)
        if scheme is not None:
            pos = scheme.end()
        start, end = _value_span(text, pos)
        if end > start and text[start:end] != REDACTED:
            parts.append(text[done:start])
            parts.append(REDACTED)
            done = end
        pos = max(end, pos)
    if not parts:
        return text
    parts.append(text[done:])
    return "".join(parts)


def _value_span(text: str, pos: int) -> tuple[int, int]:
    """Span of the value starting at pos: inside its quotes if quoted, else up to a separator."""
    quote = text[pos : pos + 1]
    if quote in _QUOTED_VALUE_RE:
        inner = _QUOTED_VALUE_RE[quote].match(text, pos + 1)
        if inner is not None and text[inner.end() : inner.end() + 1] == quote:
            return pos + 1, inner.end()
        pos += 1  # unclosed quote: treat what follows as an unquoted value
    value = _UNQUOTED_VALUE_RE.match(text, pos)
    if value is None:
        return pos, pos
    return value.span()
