"""Redaction of secrets before anything leaves the host.

Two kinds of evidence: a name that says "secret" (``DB_PASSWORD=...``, ``--token x``) and a
value that says it by its shape whatever holds it (JWTs, PEM private keys, provider tokens,
webhook URLs, URL userinfo, ``user:password`` and its base64). Every pattern is anchored on
a literal or a run boundary, so each scan is linear in the text on any input.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import re
from collections.abc import Iterable, Mapping
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
    {"key", "auth", "pwd", "pw", "pass", "pin", "sig", "session", "jwt", "otp", "cred"}
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
_AUTH_RE = re.compile(
    r"(?:(?<![A-Za-z0-9_])|(?<=\\[nrt]))(bearer|basic)[ \t]+([A-Za-z0-9\-._~+/]+=*)", re.I
)
# "name=value", "name: value", '"name": value': a name is a maximal run of identifier characters
# (the look-behind forbids starting inside a run, which keeps the search linear).
_NAME_RE = re.compile(r"(?<![A-Za-z0-9_.\-])([A-Za-z0-9_.\-]+)[\"']?[ \t]*[=:]{1,2}[ \t]*")
# An authentication scheme kept in front of a value ("Authorization: Bearer <redacted>").
_SCHEME_RE = re.compile(r"(?:bearer|basic|token|digest|negotiate|ntlm)[ \t]+", re.I)
# In code: what may open a literal, a number worth masking (a PIN, a numeric key), the
# assignment after an annotation (bounded, and not across an argument list), quotes and
# the comment that start text, and the bare "key" names of dict code.
_CODE_OPEN_RE = re.compile(r"[ \t(\[{]*")
_CODE_NUMBER_RE = re.compile(r"(?:0[xX][0-9a-fA-F_]{4,}|[0-9][0-9_]{3,})(?![A-Za-z0-9_.])")
_CODE_ANNOTATION_RE = re.compile(r"[^=\n,()]{0,120}?(?<![=!<>])=(?!=)")
_CODE_QUOTE_RE = re.compile(r"[#\"']")
_CODE_MORE_RE = re.compile(r"[\"']{1,3}[ \t]*[,+]?[ \t]*(?=[rRbBfFuU]{0,2}[\"'])")
_BARE_KEY_RE = re.compile(r"_*keys?[0-9]*_*")  # "key", "_keys": not "KEY", "api_key"
_STRING_PREFIX_RE = re.compile(r"(?:[rR][bBfF]?|[bBfF][rR]?|[uU])(?=[\"'])")
_UNQUOTED_VALUE_RE = re.compile(r"[^\s&;,\"')\]}]+")
_QUOTED_VALUE_RE = {
    '"': re.compile(r'[^"\\]*(?:\\.[^"\\]*)*', re.S),
    "'": re.compile(r"[^'\\]*(?:\\.[^'\\]*)*", re.S),
}
# Each pass only masks; a few passes reach a fixed point for any realistic text.
_MAX_PASSES = 4

# Values that give themselves away. Each starts at a run boundary (the look-behind) with a
# literal, so a failed attempt costs one run and the whole scan stays linear. The group, when
# a pattern has one, is a public prefix kept in front of the mask ("ghp_<redacted>").
_TOKEN_RE = re.compile(
    r"(?=[eghxApdnrsSA])"  # first characters of the patterns below: most positions fail here
    r"(?:(?<![A-Za-z0-9_\-])|(?<=\\[nrt]))"  # not inside a longer word (after "\n" is)
    "(?:"
    + "|".join(
        [
            r"eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}(?:\.[A-Za-z0-9_\-]*)?",  # JWT/JWS
            r"(gh[pousr]_)[A-Za-z0-9]{20,}",  # GitHub tokens
            r"(github_pat_)[A-Za-z0-9_]{20,}",
            r"(glpat-)[A-Za-z0-9_\-]{20,}",  # GitLab
            r"(xox[abeoprs]-)[A-Za-z0-9\-]{10,}",  # Slack tokens
            r"(xapp-)[A-Za-z0-9\-]{10,}",
            r"(A(?:KIA|SIA|BIA|CCA|GPA|IDA|IPA|NPA|NVA|PKA|ROA|SCA))"
            r"[A-Z0-9]{16}(?![A-Za-z0-9])",  # AWS access key ids
            r"(AIza)[A-Za-z0-9_\-]{35}",  # Google API keys
            r"([rs]k_(?:live|test)_)[A-Za-z0-9]{16,}",  # Stripe
            r"(sk-(?:ant-|proj-)?)[A-Za-z0-9_\-]{20,}",  # OpenAI, Anthropic
            r"(hf_)[A-Za-z0-9]{30,}",  # Hugging Face
            r"(npm_)[A-Za-z0-9]{30,}",
            r"(pypi-)[A-Za-z0-9_\-]{50,}",
            r"(SG\.)[A-Za-z0-9_\-]{16,}\.[A-Za-z0-9_\-]{16,}",  # SendGrid
            r"(hooks\.slack\.com/(?:services|workflows|triggers)/)[A-Za-z0-9_/\-]+",
            r"(discord(?:app)?\.com/api/webhooks/)[0-9]+/[A-Za-z0-9_\-]+",
        ]
    )
    + ")"
)
# A PEM private key block: the header and footer stay, the body goes (to the end of the
# text when the footer is missing: a cut-off key is still a key).
_PEM_RE = re.compile(r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----")
_PEM_END = "-----END"
# A padded base64 word of 8 to 1024 characters (candidate for base64 of "user:password"), at
# a run boundary; the groups of four leave out most words without a call to decode them, and
# "<redacted>" is never a candidate (its "redacted" would cost a call per mask).
_B64_WORD_RE = re.compile(
    r"(?:(?<![A-Za-z0-9+/_\-<])|(?<=\\[nrt]))(?:[A-Za-z0-9+/]{4}){2,256}"
    r"(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?(?![A-Za-z0-9+/=_\-])"
)
_MAX_B64_WORD = 1024  # base64 of credentials is short; longer words are data
_B64_CREDS_RE = re.compile(rb"[\w.@+\-~$!%*#]{1,128}:[\x21-\x7e]{1,256}")
# A whole value "user:password" (the password's shape is checked in is_userpass).
_USERPASS_RE = re.compile(r"([A-Za-z_][\w.@+\-]{0,63}):([^\s:/\\]{4,256})")
# "user" parts that are schemes, hash names or hosts: "sha256:ab12...", "urn:x-1"
_NOT_USERS = frozenset(
    {"sha1", "sha224", "sha256", "sha384", "sha512", "md5", "blake2b", "blake2s", "urn"}
    | {"mailto", "tel", "file", "data", "http", "https", "ws", "wss", "ftp", "ssh", "git"}
    | {"unix", "tcp", "udp", "localhost"}
)
_FLAG_RE = re.compile(r"--?[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")  # "--api-key", "-p"
_WEAK_SYMBOLS = frozenset("-_.")  # in identifiers and tags ("create_app", "lts-alpine")


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
    """Mask credentials inside free text (URL userinfo, auth headers, name=value pairs,
    secret-looking values, a whole "user:password"); never raises."""
    try:
        if type(text) is not str:
            if not issubclass(type(text), str):
                return REDACTED
            text = str.__str__(text)
        return _redact(text, code=False)
    except Exception:
        return REDACTED  # never leak what we failed to inspect


def redact_code(text: str) -> str:
    """redact_text for a line of source code: a secret name's value is masked when it is a
    literal, not when it is an expression (``password = os.environ[...]`` stays readable)."""
    try:
        if type(text) is not str:
            return REDACTED
        return _redact(text, code=True)
    except Exception:
        return REDACTED


def redact_argv(argv: Iterable[object]) -> tuple[str, ...]:
    """A command line with secrets masked: the value after a secret flag (``--password x``),
    a secret flag's ``=value``, and every secret-looking value whatever its flag."""
    out: list[str] = []
    hide_next = False
    try:
        for arg in argv:
            text = _as_text(arg)
            if hide_next and not text.startswith("--"):
                out.append(REDACTED)
                hide_next = False
                continue
            hide_next = is_secret_flag(text)
            out.append(_redact_arg(text))
    except Exception:
        out.append(REDACTED)  # never leak what we failed to inspect
    return tuple(out)


def is_secret_flag(text: object) -> bool:
    """Whether text is a command-line flag naming a secret, whose value is the next argument."""
    if type(text) is bytes:
        text = text.decode("latin-1")
    if type(text) is not str:
        return False
    return (
        text.startswith("-")
        and not text.startswith("--no-")  # "--no-auth" is a switch: no value follows
        and "=" not in text
        and len(text) <= 64
        and not any(c.isspace() for c in text)
        and is_sensitive(text)
    )


def is_userpass(text: str) -> bool:
    """Whether a whole value is "user:password" (not host:port, image:tag, module:attr...)."""
    match = _USERPASS_RE.fullmatch(text.strip())
    if match is None:
        return False
    user, password = match.group(1), match.group(2)
    if user.lower() in _NOT_USERS or REDACTED in password or password[0].isdigit():
        return False
    return any(c.isdigit() or (not c.isalnum() and c not in _WEAK_SYMBOLS) for c in password)


def looks_like_password(text: str) -> bool:
    """Whether a lone string looks like a chosen password (mixed case and digits or symbols)."""
    if not 6 <= len(text) <= 128 or REDACTED in text:
        return False
    if any(c.isspace() or c in "/\\" for c in text):
        return False
    lower = any(c.islower() for c in text)
    upper = any(c.isupper() for c in text)
    digit = any(c.isdigit() for c in text)
    symbol = any(not c.isalnum() and c not in _WEAK_SYMBOLS for c in text)
    return (lower and upper and (digit or symbol)) or (symbol and digit and (lower or upper))


def _redact(text: str, *, code: bool) -> str:
    """Mask every secret in text, pass after pass until nothing changes."""
    if is_userpass(text) or _is_b64_creds(text.strip()):
        return REDACTED
    # Every stage runs again until none changes anything: one stage's mask can complete
    # another's pattern (the name stage masking "Pass:/" in "://Pass:/&@" leaves a URL
    # userinfo "Pass:<redacted>&@" for the URL stage), so redacting the result again must
    # find nothing left to do.
    for _ in range(_MAX_PASSES):
        new = _redact_names(_redact_auth(_redact_values(_redact_urls(text))), code=code)
        if new == text:
            break
        text = new
    return text


def _redact_arg(text: str) -> str:
    """One command-line argument: ``--flag=value`` by the flag's name, then by the value."""
    flag, equals, value = text.partition("=")
    if equals and _FLAG_RE.fullmatch(flag):
        if is_sensitive(flag):
            return f"{flag}={REDACTED}"
        return f"{flag}={redact_text(value)}"
    return redact_text(text)


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
    """Replacement for one '://netloc' match: the password goes, and so does a user name
    that is a token (``https://ghp_x@github.com``, a Sentry DSN's key)."""
    netloc = match.group(1)
    at = netloc.rfind("@")
    if at < 0:
        return match.group(0)
    user, colon, password = netloc[:at].partition(":")
    if _looks_like_token(user):
        user = REDACTED
    if password not in ("", REDACTED):
        password = REDACTED
    return f"://{user}{colon}{password}{netloc[at:]}"


def _looks_like_token(user: str) -> bool:
    """Whether a URL's user name is a token: long, letters and digits (a name is rarely both)."""
    if len(user) < 16 or user == REDACTED:
        return False
    return any(c.isdigit() for c in user) and any(c.isalpha() for c in user)


def _redact_values(text: str) -> str:
    """Mask values that give themselves away: provider tokens, JWTs, webhook URLs, PEM
    private keys and standalone base64 of "user:password"."""
    text = _TOKEN_RE.sub(_mask_token, text)
    if "-----BEGIN " in text:
        text = _redact_pem(text)
    return _B64_WORD_RE.sub(_mask_b64_creds, text)


def _mask_token(match: re.Match[str]) -> str:
    """A token's public prefix (if its pattern has one) followed by the mask."""
    prefix = next((group for group in match.groups() if group), "")
    return prefix + REDACTED


def _redact_pem(text: str) -> str:
    """Mask the body of every PEM private key block (to the end when the footer is cut)."""
    parts: list[str] = []
    pos = 0
    while True:
        match = _PEM_RE.search(text, pos)
        if match is None:
            break
        end = text.find(_PEM_END, match.end())
        parts.append(text[pos : match.end()])
        parts.append(REDACTED)
        if end < 0:
            return "".join(parts)
        pos = end
    parts.append(text[pos:])
    return "".join(parts)


def _mask_b64_creds(match: re.Match[str]) -> str:
    """A base64 word that decodes to "user:password" is masked; any other is kept."""
    word = match.group(0)
    return REDACTED if _is_b64_creds(word) else word


def _is_b64_creds(word: str) -> bool:
    """Whether word is base64 of "user:password" (printable, a name, a colon, a secret)."""
    if not 8 <= len(word) <= _MAX_B64_WORD or ":" in word:
        return False
    stripped = word.rstrip("=")
    if len(stripped) % 4 == 1:
        return False
    try:
        raw = base64.b64decode(stripped + "=" * (-len(stripped) % 4), validate=True)
    except (binascii.Error, ValueError):
        return False
    return _B64_CREDS_RE.fullmatch(raw) is not None


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


def _redact_names(text: str, code: bool = False) -> str:
    """Mask the value of every name=value / name: value pair whose name is sensitive."""
    if "=" not in text and ":" not in text:
        return text
    if code:
        return _redact_code_names(text)
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
        start, end = _text_value(text, pos)
        if end > start:
            parts.append(text[done:start])
            parts.append(REDACTED)
            done = end
        pos = max(end, pos)
    if not parts:
        return text
    parts.append(text[done:])
    return "".join(parts)


def _text_value(text: str, pos: int) -> tuple[int, int]:
    """Span of the value of a secret name ending at pos; empty when masked already."""
    scheme = _SCHEME_RE.match(text, pos)
    if scheme is not None:
        pos = scheme.end()
    if text.startswith(REDACTED, pos + (text[pos : pos + 1] in _QUOTED_VALUE_RE)):
        return pos, pos  # masked already (a later pass, or a finer rule)
    return _value_span(text, pos)


def _redact_code_names(text: str) -> str:
    """_redact_names for a line of code. Inside a string literal or a comment it is text;
    in the code itself only a literal (a string, a number of 4 digits or more) given to a
    secret name is masked, not an expression: ``password = os.environ[...]``,
    ``def f(token: str)`` and ``self.token = token`` stay readable."""
    spans = _text_spans(text)
    starts = [start for start, _ in spans]
    parts: list[str] = []
    done = 0
    pos = 0
    while True:
        match = _NAME_RE.search(text, pos)
        if match is None:
            break
        pos = match.end()
        name = match.group(1)
        # a value in a string or a comment is text ("--password=x"); "'password': x" is code
        index = bisect.bisect_right(starts, pos - 1) - 1
        if index >= 0 and pos - 1 < spans[index][1]:
            if not is_sensitive(name):
                continue
            start, end = _text_value(text, pos)
        else:
            if not _is_code_secret_name(name):
                continue
            annotated = ":" in match.group(0)[len(name) :]
            start, end = _code_literal(text, pos, annotated)
            # more literals in the same list or concatenation: ["a", "b"], "a" "b", "a" + "b"
            while end > start and not text.startswith(REDACTED, start):
                parts.append(text[done:start])
                parts.append(REDACTED)
                done = pos = end
                more = _CODE_MORE_RE.match(text, end)
                if more is None:
                    break
                start, end = _code_literal(text, more.end(), False)
            pos = max(end, pos)
            continue
        if end > start and not text.startswith(REDACTED, start):
            parts.append(text[done:start])
            parts.append(REDACTED)
            done = end
        pos = max(end, pos)
    if not parts:
        return text
    parts.append(text[done:])
    return "".join(parts)


def _text_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of every string literal and of the comment in a line of code, in order;
    one left open runs to the end of the line. Linear: each character is looked at once."""
    spans: list[tuple[int, int]] = []
    pos = 0
    while True:
        match = _CODE_QUOTE_RE.search(text, pos)
        if match is None:
            return spans
        start, char = match.start(), match.group()
        if char == "#":
            spans.append((start, len(text)))
            return spans
        if text.startswith(char * 3, start):
            close = text.find(char * 3, start + 3)
            end = len(text) if close < 0 else close + 3
        else:
            inner = _QUOTED_VALUE_RE[char].match(text, start + 1)
            end = min(len(text), (inner.end() if inner else start + 1) + 1)
        spans.append((start, end))
        pos = end


def _is_code_secret_name(name: str) -> bool:
    """Whether a name in code names a secret: its last attribute does, and it is not a bare
    ``key``/``keys`` (a dict key, in code, far more often than a secret)."""
    last = name.rsplit(".", 1)[-1]
    return _BARE_KEY_RE.fullmatch(last) is None and is_sensitive(last)


def _code_literal(text: str, pos: int, annotated: bool) -> tuple[int, int]:
    """Span of the literal given to a secret name in code (empty if it gets an expression):
    a string (after brackets, with its prefix), or a number of four digits or more; after
    an annotation (``token: str = "..."``) the value assigned."""
    pos = _CODE_OPEN_RE.match(text, pos).end()  # type: ignore[union-attr]
    prefix = _STRING_PREFIX_RE.match(text, pos)
    quote_at = prefix.end() if prefix is not None else pos
    quote = text[quote_at : quote_at + 1]
    if quote in _QUOTED_VALUE_RE:
        if text.startswith(quote * 3, quote_at):
            close = text.find(quote * 3, quote_at + 3)
            return quote_at + 3, len(text) if close < 0 else close
        return _value_span(text, quote_at)
    number = _CODE_NUMBER_RE.match(text, pos)
    if number is not None:
        return number.span()
    if annotated:
        assign = _CODE_ANNOTATION_RE.match(text, pos)
        if assign is not None:
            return _code_literal(text, assign.end(), False)
    return pos, pos


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
