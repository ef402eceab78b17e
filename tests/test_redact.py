"""Redaction: secret names are recognised, embedded credentials masked, secrets never leak."""

from __future__ import annotations

import base64
import string
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.redact import REDACTED, is_sensitive, redact_mapping, redact_text
from agent.saferepr import safe_repr

SENSITIVE = [
    "password",
    "passwd",
    "pwd",
    "DB_PASSWORD",
    "secret",
    "client_secret",
    "token",
    "accessToken",
    "api_key",
    "apiKey",
    "APIKEY",
    "private_key",
    "key",
    "KEY",
    "cache_key",
    "aws_secret_access_key",
    "authorization",
    "Authorization",
    "auth",
    "cookie",
    "set-cookie",
    "Set-Cookie",
    "credential",
    "credentials",
    "session_id",
    "sessionid",
    "sessionId",
    "signature",
    "passphrase",
    "OBSERVER_TOKEN",
    "X-Api-Key",
    "user.password",
    "jwt",
    "otp_code",
    "pin",
    "sig",
    "--password",
]
NOT_SENSITIVE = [
    "monkey",
    "keyboard",
    "author",
    "authors",
    "pinned",
    "spinner",
    "signal",
    "design",
    "username",
    "host",
    "path",
    "data",
    "value",
    "hotkey",
    "redacted",
    "",
]

ALNUM = string.ascii_letters + string.digits
secrets = st.text(alphabet=ALNUM, min_size=8, max_size=40)
sensitive_names = st.sampled_from(SENSITIVE)
# Pieces that combine into URLs, headers and name=value pairs (and tricky near-misses).
TEXT_PIECES = ["password", "key", "x", "://", ":", "=", "@", "/", "&", " ", '"', "'", "\\"]
TEXT_PIECES += ["Bearer", "Basic", "dXNlcjpwYXNz", REDACTED, "<", ">", ".", "-", "\n", ";"]


@pytest.mark.parametrize("name", SENSITIVE)
def test_sensitive_names(name):
    assert is_sensitive(name)


@pytest.mark.parametrize("name", NOT_SENSITIVE)
def test_innocent_names(name):
    assert not is_sensitive(name)


def test_is_sensitive_odd_inputs():
    class Name(str):
        def lower(self):
            raise AssertionError("subclass method called")

    assert is_sensitive(Name("db_password"))
    assert is_sensitive(b"DB_PASSWORD")
    assert not is_sensitive(42)  # type: ignore[arg-type]
    assert is_sensitive("x" * 100 + "_token")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgres://user:pw@host", f"postgres://user:{REDACTED}@host"),
        ("postgres://user:pw@host:5432/db?x=1", f"postgres://user:{REDACTED}@host:5432/db?x=1"),
        ("redis://:p@ss@cache:6379/0", f"redis://:{REDACTED}@cache:6379/0"),
        ("password=hunter2&x=1", f"password={REDACTED}&x=1"),
        ("user=bob password=hunter2", f"user=bob password={REDACTED}"),
        ("Authorization: Bearer abc.def-ghi", f"Authorization: Bearer {REDACTED}"),
        ("curl -H 'Bearer eyJhbGciOi.x.y'", f"curl -H 'Bearer {REDACTED}'"),
        ("Basic " + base64.b64encode(b"user:pw").decode(), f"Basic {REDACTED}"),
        ('{"password": "hu\\"nter2", "x": 1}', f'{{"password": "{REDACTED}", "x": 1}}'),
        ("{'api_key': 'abc', 'user': 'bob'}", f"{{'api_key': '{REDACTED}', 'user': 'bob'}}"),
        ("a=1; token=xyz; b=2", f"a=1; token={REDACTED}; b=2"),
        ("--password=hunter2", f"--password={REDACTED}"),
        ("DB_PASSWORD: s3cr3t", f"DB_PASSWORD: {REDACTED}"),
        ("a=password=secret", f"a=password={REDACTED}"),
        ("token=Bearer abc", f"token=Bearer {REDACTED}"),
    ],
)
def test_redact_text_masks(text, expected):
    assert redact_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello world",
        "https://example.com/path?q=1#frag",
        "https://user@example.com/",
        "Basic information about monkeys",
        "keyboard=qwerty author: me",
        "time: 12:30, ratio=3:4",
        f"password={REDACTED}",
    ],
)
def test_redact_text_leaves_innocent_text(text):
    assert redact_text(text) == text


def test_redact_mapping():
    env = {
        "DB_PASSWORD": "hunter2",
        "OBSERVER_TOKEN": "tok",
        "DATABASE_URL": "postgres://u:pw@h/db",
        "HOME": "/root",
        "PATH": "/usr/bin:/bin",
    }
    assert redact_mapping(env) == {
        "DB_PASSWORD": REDACTED,
        "OBSERVER_TOKEN": REDACTED,
        "DATABASE_URL": f"postgres://u:{REDACTED}@h/db",
        "HOME": "/root",
        "PATH": "/usr/bin:/bin",
    }
    assert redact_mapping({b"API_KEY": b"x", b"LANG": b"C"}) == {"API_KEY": REDACTED, "LANG": "C"}


def test_redact_text_is_linear_on_adversarial_input():
    n = 100_000
    for text in ["a" * n, "a-" * n, "a://" * n, 'password="' * n, "Bearer " * n, "a:" * n]:
        start = time.perf_counter()
        redact_text(text)
        assert time.perf_counter() - start < 2.0, text[:20]


@settings(max_examples=150, deadline=None)
@given(
    name=sensitive_names,
    prefix=st.sampled_from(["", "db_", "MY_", "x."]),
    secret=secrets,
    others=st.dictionaries(st.text(alphabet="xyzqw", min_size=1), st.integers(), max_size=3),
)
def test_secret_never_leaks(name, prefix, secret, others):
    key = prefix + name
    boilerplate = f"https://u:{REDACTED}@h/ {key} Bearer {REDACTED}"
    if secret.lower() in boilerplate.lower() or secret.lower() in REDACTED:
        return  # the secret would show up by coincidence, not by a leak
    if any(secret in other for other in others):
        return  # an innocent key spells the secret (its alphabet is a subset of ALNUM)
    data = {**others, key: secret}
    assert secret not in safe_repr(data)
    assert secret not in safe_repr({"outer": [data]}, max_depth=5)
    assert secret not in redact_mapping({key: secret})[key]
    assert secret not in redact_text(f"https://u:{secret}@h/")
    assert secret not in redact_text(f"{key}={secret}")
    assert secret not in redact_text(f'{{"{key}": "{secret}"}}')
    assert secret not in redact_text(f"Authorization: Bearer {secret}")


@settings(max_examples=300, deadline=None)
@given(
    st.text()
    | st.lists(
        st.sampled_from(TEXT_PIECES),
        max_size=12,
    ).map("".join)
)
def test_redact_text_never_raises_and_is_idempotent(text):
    once = redact_text(text)
    assert isinstance(once, str)
    assert redact_text(once) == once


@settings(max_examples=100, deadline=None)
@given(
    words=st.lists(st.text(alphabet="xyzqw", min_size=1, max_size=6), max_size=3),
    secret_word=st.sampled_from(["password", "token", "key", "auth", "secret", "pin"]),
    sep=st.sampled_from(["_", "-", ".", ""]),
    upper=st.booleans(),
)
def test_is_sensitive_in_compound_names(words, secret_word, sep, upper):
    if sep == "":
        parts = [w.capitalize() for w in words] + [secret_word.capitalize()]
        name = words[0] + "".join(parts[1:]) if words else secret_word
    else:
        name = sep.join([*words, secret_word])
    assert is_sensitive(name.upper() if upper and sep else name)
