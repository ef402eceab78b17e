"""Redaction: secret names are recognised, embedded credentials masked, secrets never leak."""

from __future__ import annotations

import base64
import http.cookies
import random
import string
import time

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from agent.redact import (
    REDACTED,
    is_sensitive,
    redact_argv,
    redact_code,
    redact_mapping,
    redact_text,
)
from agent.saferepr import safe_children, safe_repr
from tests.attack.forms import VALUE_FORMS, Forge, leaks

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
@example("://Pass:/&@")  # the name stage's mask made a URL userinfo for the URL stage
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


# ---------------------------------------------------------------------------- secret values
# Secrets recognised by their value, whatever holds them (tests/attack/forms.py makes them).

made_values = st.builds(
    lambda form, rng: VALUE_FORMS[form](Forge(rng)),
    st.sampled_from(sorted(VALUE_FORMS)),
    st.randoms(use_true_random=False),
)
# "user:password" is recognised as a whole value only; the others inside any text too
text_values = st.builds(
    lambda form, rng: VALUE_FORMS[form](Forge(rng)),
    st.sampled_from(sorted(set(VALUE_FORMS) - {"userpass"})),
    st.randoms(use_true_random=False),
)
innocent_keys = st.sampled_from(["value", "url", "data", "x", "cfg", "item", "remote", "hook"])
as_bytes = st.booleans()


def nest(value: object, draw_path: list[str]) -> object:
    """value wrapped in containers: 'l' list, 't' tuple, 'd' dict under an innocent key."""
    for kind in draw_path:
        value = {"list": [1, value], "tuple": ("x", value, 2), "dict": {"item": value}}[kind]
    return value


def everything_shown(value: object) -> str:
    """All an observer can be shown of value: its repr and its children's, recursively."""
    out = [safe_repr(value, max_len=100_000, max_depth=20, max_items=1000)]
    pending = [value]
    while pending:
        for label, child in safe_children(pending.pop()):
            out.append(label)
            out.append(safe_repr(child, max_len=100_000, max_depth=20, max_items=1000))
            pending.append(child)
    return "\n".join(out)


@settings(max_examples=300, deadline=None)
@given(
    made=made_values,
    binary=as_bytes,
    path=st.lists(st.sampled_from(["list", "tuple", "dict"]), max_size=3),
)
def test_secret_values_never_leak_from_objects(made, binary, path):
    value = made.text.encode() if binary else made.text
    shown = everything_shown(nest(value, path))
    assert not leaks(made.needles, shown), shown
    assert not leaks(made.needles, redact_text(made.text))
    assert not leaks(made.needles, str(redact_mapping({"INNOCENT": made.text})))
    assert not leaks(made.needles, " ".join(redact_argv(["prog", "--opt", made.text])))
    assert not leaks(made.needles, " ".join(redact_argv(["prog", f"--opt={made.text}"])))


@settings(max_examples=300, deadline=None)
@given(
    made=text_values,
    before=st.sampled_from(["", "x ", "value: ", "url=", '{"data": "', "see ", "(", "\n"]),
    after=st.sampled_from(["", " y", '"}', ")", ", and more", "\n", "&z=1"]),
    cut=st.integers(1, 400),
    padding=st.integers(0, 300),
)
def test_secret_values_never_leak_from_text(made, before, after, cut, padding):
    text = "p" * padding + " " + before + made.text + after
    assert not leaks(made.needles, redact_text(text))
    assert not leaks(made.needles, redact_code(f"thing = call({text!r})"))
    # a string shown cut short is redacted before it is cut: no piece shows at the cut
    assert not leaks(made.needles, safe_repr(text, max_len=cut))
    assert not leaks(made.needles, safe_repr(text.encode(), max_len=cut))
    assert not leaks(made.needles, f"{safe_repr([text, text.encode()], max_len=cut + 100)}")


class Entry:
    """A header entry as multidict keeps them (its _Entry has these slots)."""

    __slots__ = ("hash", "identity", "key", "value")

    def __init__(self, hash: int, identity: object, key: object, value: object) -> None:
        self.hash, self.identity, self.key, self.value = hash, identity, key, value


def morsel(name: str, value: str) -> http.cookies.Morsel:
    """A cookie named name (when the name is a legal cookie name) holding value."""
    cookie = http.cookies.SimpleCookie()
    try:
        cookie[name.replace(".", "_")] = value
    except http.cookies.CookieError:
        try:
            cookie["session"] = value
        except http.cookies.CookieError:  # 3.14+ refuses control characters (a PEM's
            assume(False)  # newlines) in any cookie: no host can hold such a cookie
    return next(iter(cookie.values()))


@settings(max_examples=200, deadline=None)
@given(
    made=made_values,
    name=sensitive_names,
    flag_style=st.sampled_from(["--", "-", ""]),
    binary=as_bytes,
    shape=st.sampled_from(
        ["flag", "pair-list", "pair-tuple", "triple", "tuple-key", "auth", "entry", "cookie"]
    ),
    path=st.lists(st.sampled_from(["list", "tuple", "dict"]), max_size=2),
)
def test_secrets_marked_by_their_neighbours_never_leak(made, name, flag_style, binary, shape, path):
    """['--password', x], [('X-Auth-Token', x)], (identity, name, x), {('db', 'password'): x},
    (user, password), header entry objects, cookies: the secret is plain, a neighbour says
    what it is."""
    secret = made.text if shape != "auth" else Forge(random.Random(len(made.text))).password()
    needles = made.needles if shape != "auth" else (secret,)
    word = name.lstrip("-")
    enc = (lambda s: s.encode()) if binary else (lambda s: s)
    value = {
        "flag": ["prog", enc(f"--{word}" if flag_style == "--" else f"-{word}"), enc(secret)],
        "pair-list": [enc(word), enc(secret)],
        "pair-tuple": (enc(word), enc(secret)),
        "triple": (enc(word.lower()), enc(word), enc(secret)),
        "tuple-key": {("db", word): secret, ("db", "host"): "h"},
        "auth": ("admin", secret),
        "entry": Entry(hash(word), enc(word.lower()), enc(word), enc(secret)),
        "cookie": morsel(word, secret),
    }[shape]
    shown = everything_shown(nest(value, path))
    assert not leaks(needles, shown), shown
    if shape == "flag":
        argv = ["prog", f"--{word}", secret, "--verbose"]
        assert not leaks(needles, " ".join(redact_argv(argv)))
        assert redact_argv(argv)[-1] == "--verbose"


@pytest.mark.parametrize(
    "text",
    [
        "/usr/lib/python3.11/asyncio/base_events.py",
        "C:\\Users\\bob\\AppData",
        "db.internal.example.com",
        "localhost:8080",
        "10.0.0.1:5432",
        "[::1]:7330",
        "12:30:45",
        "2024-06-11T12:30:45+00:00",
        "3.14159",
        "123e4567-e89b-12d3-a456-426614174000",  # UUIDs are ids, not secrets (see redact.py)
        "python:3.11-slim",
        "node:lts-alpine",
        "app.main:create_app",
        "en_US:en",
        "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "https://user@example.com/path?q=1",
        "ssh://git@github.com/acme/app.git",
        "https://github.com/acme/app.git",
        "text/html; charset=utf-8",
        "The quick brown fox jumps over the lazy dog",
        "eyJwYWdlIjoyfQ",  # base64 of a small JSON cursor, no dots: not a JWT
        "ZXhhbXBsZQ==",  # base64 of 'example'
        "task-12",
        "worker-1",
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
        "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----",
    ],
)
def test_ordinary_values_are_left_alone(text):
    assert redact_text(text) == text
    assert safe_repr(text, max_len=1000) == repr(text)


@pytest.mark.parametrize(
    "value",
    [
        ("worker", "task-1"),
        ("GET", "/api/v1/items"),
        ("LANG", "en_US.UTF-8"),
        ["username", "email", "created"],
        ["--verbose", "--output", "out.txt"],
        {("db", "host"): "h", ("db", "port"): 5432},
        ("x-request-id", "X-Request-Id", "abc"),
    ],
)
def test_ordinary_structures_are_left_alone(value):
    assert safe_repr(value) == repr(value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("password = os.environ['DB_PASSWORD']", "password = os.environ['DB_PASSWORD']"),
        ("def connect(password: str, token=None):", "def connect(password: str, token=None):"),
        ("self.token = token", "self.token = token"),
        ("if secret == expected:", "if secret == expected:"),
        ("SECRET_KEY = 'abc123'", f"SECRET_KEY = '{REDACTED}'"),
        ('api_key: str = "abc123"', f'api_key: str = "{REDACTED}"'),
        ("token = b'abc123'", f"token = b'{REDACTED}'"),
        ('run("mysql --password=hunter2")', f'run("mysql --password={REDACTED}")'),
        ("PIN = 1234", f"PIN = {REDACTED}"),
        ("key = self._selector.get_key(fd)", "key = self._selector.get_key(fd)"),
        ("if key == 'home':", "if key == 'home':"),  # a bare "key" in code is a dict key
        ("KEY = 'abc123'", f"KEY = '{REDACTED}'"),
        ("api_key: Optional[str] = 'abc'", f"api_key: Optional[str] = '{REDACTED}'"),
        ("TOKENS = ['abc', 'def'] + x", f"TOKENS = ['{REDACTED}', '{REDACTED}'] + x"),
        ("x = 1  # password=hunter2", f"x = 1  # password={REDACTED}"),
        ("{'HAVE_PW': 1, 'db_password': 'x'}", f"{{'HAVE_PW': 1, 'db_password': '{REDACTED}'}}"),
        ("SelectorKey.events.__doc__ = 'Events'", "SelectorKey.events.__doc__ = 'Events'"),
        ("print('token=', tok)", "print('token=', tok)"),
        ('SECRET = """abc', f'SECRET = """{REDACTED}'),
    ],
)
def test_redact_code_masks_literals_not_expressions(text, expected):
    assert redact_code(text) == expected


CODE_PIECES = [*TEXT_PIECES, "(", ")", "[", ",", "+", "#", '"""', "b", "f", "1234", "os.env"]
CODE_PIECES += ["token", "key", "api_key", ": str", " = ", " == ", "eyJhbGciOiJI.eyJzdWIiOiIx"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(CODE_PIECES), max_size=14).map("".join) | st.text(max_size=40))
def test_redact_code_never_raises_and_is_idempotent(text):
    once = redact_code(text)
    assert isinstance(once, str)
    assert redact_code(once) == once


def test_redact_argv():
    argv = ["prog", "--password", "pw1", "--token=t0k", "--api-key", "k", "-v", "--login", "x"]
    argv += ["postgres://u:pw2@h/db", "--password", "--verbose", "--user=admin:Hunter2"]
    assert redact_argv(argv) == (
        "prog",
        "--password",
        REDACTED,
        f"--token={REDACTED}",
        "--api-key",
        REDACTED,
        "-v",
        "--login",
        "x",
        f"postgres://u:{REDACTED}@h/db",
        "--password",
        "--verbose",  # a flag after a secret flag is a flag, not its value
        f"--user={REDACTED}",
    )
    assert redact_argv([b"--token", b"x", 3]) == ("--token", REDACTED, "<not text>")


def test_redact_value_forms_are_linear_on_adversarial_input():
    n = 100_000
    units = ["eyJ", "eyJaaaaaaaaa.", "AKIA", "ghp_", "xoxb-", "QUFBQUFB ", "sk-"]
    units += ["-----BEGIN PRIVATE KEY-----", "hooks.slack.com/services/", "https://aaaaaaaaaaaa1@"]
    units += ["a1b2c3d4e5f6g7h8@"]
    units += ["password: str = ", "token=os.environ["]
    for unit in units:
        text = unit * (n * 4 // len(unit))  # 400k characters each
        start = time.perf_counter()
        redact_text(text)
        redact_code(text)
        assert time.perf_counter() - start < 4.0, unit
