"""Secrets in the forms hosts really hold them, each with the random parts a leak would show.

``Forge`` makes one secret of a form from a random source (``random.Random`` or hypothesis's
``st.randoms()``); ``plant`` lays out the planted host of tests/hosts/secrets.py: its argv, its
child's argv, its environment, the values it puts in locals and exposed objects, and a settings
module with secrets hard-coded in its source.
"""

from __future__ import annotations

import base64
import random
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

ALNUM = string.ascii_letters + string.digits
UPPER_DIGITS = string.ascii_uppercase + string.digits
HEX = "0123456789abcdef"
B64 = ALNUM + "+/"
B64URL = ALNUM + "-_"
WINDOW = 12  # any WINDOW characters of a needle showing anywhere is a leak


@dataclass(frozen=True)
class Made:
    """One secret value as planted and the random parts of it that must never show."""

    text: str
    needles: tuple[str, ...]


class Forge:
    """Makes secrets of every form from a random source."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def chars(self, alphabet: str, n: int) -> str:
        return "".join(self.rng.choice(alphabet) for _ in range(n))

    def mixed(self, n: int, *classes: str) -> str:
        """n characters from the union of classes, at least one of each (generated secrets
        are; a token of 32 zeros is no token), in random order."""
        picked = [self.rng.choice(c) for c in classes]
        picked += [self.rng.choice("".join(classes)) for _ in range(n - len(classes))]
        self.rng.shuffle(picked)
        return "".join(picked)

    def alnum(self, n: int) -> str:
        return self.mixed(n, string.ascii_uppercase, string.ascii_lowercase, string.digits)

    def hex(self, n: int) -> str:
        return self.mixed(n, "abcdef", string.digits)

    def password(self, n: int = 18) -> str:
        """A password as people choose them: a letter first, then letters, digits, a symbol."""
        return (
            self.chars(string.ascii_letters, 1)
            + self.alnum(n - 3)
            + self.chars(string.digits, 1)
            + self.chars("!.-_", 1)
        )

    # ------------------------------------------------------------ forms

    def jwt(self) -> Made:
        payload, signature = self.chars(B64URL, 40), self.chars(B64URL, 43)
        return Made(f"eyJhbGciOiJIUzI1NiJ9.eyJ{payload}.{signature}", (payload, signature))

    def pem(self) -> Made:
        kind = self.rng.choice(["RSA ", "EC ", "OPENSSH ", "ENCRYPTED ", ""])
        body = [self.chars(B64, 64) for _ in range(4)] + [self.chars(B64, 24) + "=="]
        text = "\n".join(
            [f"-----BEGIN {kind}PRIVATE KEY-----", *body, f"-----END {kind}PRIVATE KEY-----", ""]
        )
        return Made(text, tuple(line.rstrip("=") for line in body))

    def aws(self) -> Made:
        key = self.chars(UPPER_DIGITS, 16)
        return Made(self.rng.choice(["AKIA", "ASIA"]) + key, (key,))

    def github(self) -> Made:
        if self.rng.random() < 0.5:
            body = self.alnum(36)
            return Made(self.rng.choice(["ghp_", "gho_", "ghs_"]) + body, (body,))
        first, second = self.alnum(22), self.alnum(59)
        return Made(f"github_pat_{first}_{second}", (first, second))

    def slack_token(self) -> Made:
        secret = self.alnum(24)
        digits = self.chars(string.digits, 12)
        prefix = self.rng.choice(["xoxb", "xoxp"])
        return Made(f"{prefix}-{digits}-{self.chars(string.digits, 13)}-{secret}", (secret,))

    def slack_webhook(self) -> Made:
        secret = self.alnum(24)
        team, bot = self.chars(UPPER_DIGITS, 8), self.chars(UPPER_DIGITS, 10)
        return Made(f"https://hooks.slack.com/services/T{team}/B{bot}/{secret}", (secret,))

    def url_token(self) -> Made:
        token = self.github().text if self.rng.random() < 0.5 else self.alnum(40)
        host = self.rng.choice(["github.com/acme/deploy.git", "api.example.com/v2/items"])
        return Made(f"https://{token}@{host}", (token[-30:],))

    def sentry_dsn(self) -> Made:
        public = self.hex(32)
        if self.rng.random() < 0.5:
            org, project = self.chars(string.digits, 6), self.chars(string.digits, 7)
            return Made(f"https://{public}@o{org}.ingest.sentry.io/{project}", (public,))
        private = self.hex(32)
        return Made(f"https://{public}:{private}@sentry.example.com/42", (public, private))

    def git_remote(self) -> Made:
        user = self.rng.choice(["x-access-token", "oauth2", "gitlab-ci-token"])
        token = self.rng.choice(["ghs_", "glpat-", ""]) + self.alnum(36)
        return Made(f"https://{user}:{token}@git.example.com/acme/app.git", (token[-30:],))

    def userpass(self) -> Made:
        password = self.password()
        user = self.rng.choice(["admin", "svc-backup", "deploy.bot", "root"])
        return Made(f"{user}:{password}", (password,))

    def b64_userpass(self) -> Made:
        password = self.password()
        encoded = base64.b64encode(f"svc-{self.alnum(5)}:{password}".encode()).decode()
        return Made(encoded, (encoded.rstrip("="), password))

    def basic(self) -> Made:
        made = self.b64_userpass()
        return Made(f"Basic {made.text}", made.needles)

    def dsn(self) -> Made:
        password = self.password()
        scheme = self.rng.choice(["postgres", "mysql", "redis", "amqp", "mongodb+srv"])
        return Made(f"{scheme}://app:{password}@db.internal:5432/app", (password,))

    def bearer(self) -> Made:
        token = self.alnum(40)
        return Made(f"Bearer {token}", (token,))


# Forms whose value alone gives them away, whatever name holds them.
VALUE_FORMS: dict[str, Callable[[Forge], Made]] = {
    "jwt": Forge.jwt,
    "pem": Forge.pem,
    "aws": Forge.aws,
    "github": Forge.github,
    "slack_token": Forge.slack_token,
    "slack_webhook": Forge.slack_webhook,
    "url_token": Forge.url_token,
    "sentry_dsn": Forge.sentry_dsn,
    "git_remote": Forge.git_remote,
    "userpass": Forge.userpass,
    "b64_userpass": Forge.b64_userpass,
    "basic": Forge.basic,
    "dsn": Forge.dsn,
    "bearer": Forge.bearer,
}


def windows(needle: str, width: int = WINDOW) -> Iterable[str]:
    """Every ``width``-character piece of a needle (the whole needle if it is shorter)."""
    if len(needle) <= width:
        yield needle
        return
    for i in range(len(needle) - width + 1):
        yield needle[i : i + width]


def leaks(needles: Iterable[str], text: str) -> bool:
    """Whether any piece of any needle shows in text."""
    return any(piece in text for needle in needles for piece in windows(needle))


# ------------------------------------------------------------------ the planted host


@dataclass(frozen=True)
class Planted:
    """One planted secret: where it went, the text that proves the place was shown, needles."""

    label: str
    marker: str  # shown next to the secret's place in some view (a name, a flag, a key)
    needles: tuple[str, ...]


@dataclass
class Plant:
    """Everything tests/hosts/secrets.py is started with, and the inventory of what it holds."""

    argv: list[str] = field(default_factory=list)
    child_argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    values: dict[str, str] = field(default_factory=dict)  # read by the host from a JSON file
    module_source: str = ""
    secrets: list[Planted] = field(default_factory=list)

    def add(self, label: str, marker: str, made: Made) -> str:
        self.secrets.append(Planted(label, marker, made.needles))
        return made.text

    def value(self, key: str, marker: str, made: Made, label: str = "") -> None:
        """A value the host reads by ``key`` and puts in a local or exposed object."""
        self.values[key] = self.add(label or key, marker, made)


def plant(seed: int) -> Plant:
    """The planted host's inputs: every form, in argv, env, locals, exposed and source."""
    f = Forge(random.Random(seed))
    p = Plant()

    def plain(text: str) -> Made:
        return Made(text, (text,))

    # host argv: flags with a separate value, flag=value, and values under innocent flags
    p.argv += ["--password", p.add("argv --password", "--password", plain(f.password()))]
    p.argv.append("--token=" + p.add("argv --token=", "--token=", plain(f.alnum(32))))
    p.argv += ["--api-key", p.add("argv --api-key", "--api-key", plain(f.alnum(32)))]
    p.argv.append(p.add("argv DSN", "db.internal:5432", f.dsn()))
    p.argv += ["--assertion", p.add("argv JWT", "--assertion", f.jwt())]
    p.argv += ["--notify", p.add("argv slack webhook", "--notify", f.slack_webhook())]
    p.argv += ["--origin", p.add("argv token@host URL", "--origin", f.url_token())]
    p.argv += ["--login", p.add("argv user:pass", "--login", f.userpass())]
    # the child's argv ("--aws-id" is the child's alone: it proves its command line was shown)
    child = [
        ("--password", plain(f.password())),
        ("--token=", plain(f.alnum(32))),
        ("--api-key", plain(f.alnum(32))),
        ("", f.dsn()),
        ("--aws-id", f.aws()),
        ("--bot", f.slack_token()),
        ("--authorization", f.basic()),
    ]
    for flag, made in child:
        value = p.add(f"child {flag or 'DSN'}", "--aws-id", made)
        if flag.endswith("="):
            p.child_argv.append(flag + value)
        else:
            p.child_argv += [flag, value] if flag else [value]
    # environment: secret names (redacted by name) and innocent names holding secret values
    env_forms = {
        "DB_PASSWORD": plain(f.password()),
        "API_TOKEN": plain(f.alnum(32)),
        "CREDS": f.userpass(),
        "SENTRY_DSN": f.sentry_dsn(),
        "GIT_REMOTE_URL": f.git_remote(),
        "SLACK_URL": f.slack_webhook(),
        "SLACK_BOT": f.slack_token(),
        "LOGIN_B64": f.b64_userpass(),
        "UPSTREAM_HEADER": f.basic(),
        "AWS_ID": f.aws(),
        "GH_DEPLOY": f.github(),
        "SIGNING_PEM": f.pem(),
        "SERVICE_ASSERTION": f.jwt(),
        "DATABASE_URL": f.dsn(),
        "CALLBACK_URL": f.url_token(),
    }
    for name, made in env_forms.items():
        p.env[name] = p.add(f"env {name}", name, made)
    # str and bytes locals of a task, each form under an innocent name (held_01, held_02...)
    forms = [*VALUE_FORMS.items(), ("bytes jwt", Forge.jwt), ("bytes pem", Forge.pem)]
    for number, (form, make) in enumerate(forms, 1):
        p.value(f"held_{number:02d}", f"held_{number:02d}", make(f), f"local {form}")
    # structures in a thread's locals (the host builds them around these values)
    p.value("st_cmd", "st_cmd", plain(f.password()))
    p.value("st_argv_tuple", "st_argv_tuple", plain(f.alnum(30)))
    p.value("st_bytes_cmd", "st_bytes_cmd", plain(f.alnum(30)))
    p.value("st_tuple_keyed", "st_tuple_keyed", plain(f.password()))
    p.value("st_header_tuple", "st_headers", plain(f.alnum(30)))
    p.value("st_header_list", "st_headers", f.bearer())
    p.value("st_multidict", "st_multidict", plain(f.alnum(30)))
    p.value("st_pair", "st_pair", plain(f.password()))
    p.value("st_opts", "st_opts", plain(f.password()))
    p.value("st_nested", "st_nested", f.jwt())
    p.value("st_urls", "st_urls", f.url_token())
    # exposed objects
    p.value("exp_upstream", "vault_settings", f.url_token())
    p.value("exp_hook", "vault_settings", f.slack_webhook())
    p.value("exp_pem", "vault_settings", f.pem())
    p.value("exp_pair", "vault_settings", plain(f.password()))
    p.value("exp_tuple_key", "vault_settings", plain(f.password()))
    p.value("exp_header", "vault_settings", f.bearer())
    p.value("exp_client_dsn", "api_client", f.dsn())
    p.value("exp_client_header", "api_client", plain(f.alnum(30)))
    p.value("exp_client_creds", "api_client", f.b64_userpass())
    # a settings module with secrets hard-coded; a thread stands on a line holding two more
    module = {
        "SECRET_KEY": plain(f.alnum(40)),
        "DATABASE_URL": f.dsn(),
        "AWS_ACCESS_KEY_ID": f.aws(),
        "DEPLOY_URL": f.url_token(),
        "SLACK_HOOK": f.slack_webhook(),
        "SIGNING_PEM": f.pem(),
        "RELEASE_BOT": f.github(),
    }
    for name, made in module.items():
        p.add(f"source {name}", name, made)
    line_dsn = p.add("source current line DSN", "connect(stop", f.dsn())
    line_bearer = p.add("source current line Bearer", "connect(stop", f.bearer())
    p.module_source = MODULE_TEMPLATE.format(
        assignments="\n".join(
            f'{name} = """{made.text}"""' if "\n" in made.text else f"{name} = {made.text!r}"
            for name, made in module.items()
        ),
        line_dsn=line_dsn,
        line_bearer=line_bearer,
    )
    return p


MODULE_TEMPLATE = '''"""Settings with secrets hard-coded as people do (a planted test module)."""

from __future__ import annotations

import threading

{assignments}
NOTE = "nothing secret here"


def connect(stop: threading.Event, dsn: str, headers: dict[str, str]) -> None:
    """Stands for a driver waiting on its server: blocks until ``stop`` is set."""
    stop.wait()


def hold(stop: threading.Event) -> None:
    """Runs on a thread, so a stack shows the next line, which holds a DSN and a token."""
    connect(stop, dsn="{line_dsn}", headers={{"Authorization": "{line_bearer}"}})
'''
