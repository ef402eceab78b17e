"""Agent configuration: explicit arguments, else ``OBSERVER_AGENT_*`` environment variables.

| variable | meaning |
| --- | --- |
| OBSERVER_AGENT_BIND | host:port to listen on (default 127.0.0.1:7330) |
| OBSERVER_AGENT_NAME | node name shown in the observer (default: host name) |
| OBSERVER_AGENT_TLS_CERT / OBSERVER_AGENT_TLS_KEY | PEM certificate and key |
| OBSERVER_AGENT_CLIENT_CA | CA file: require client certificates (mTLS) |
| OBSERVER_AGENT_TOKEN_DIR | a directory made by `observer keygen` (cert, key, *.token) |
| OBSERVER_AGENT_VIEWER_TOKEN_FILE | file holding the viewer token |
| OBSERVER_AGENT_OPERATOR_TOKEN_FILE | file holding the operator token |
| OBSERVER_AGENT_TOKEN_FILE | same as OBSERVER_AGENT_OPERATOR_TOKEN_FILE |
| OBSERVER_AGENT_HISTORY_IDLE | seconds between history samples with no observer (0 = off) |
| OBSERVER_AGENT_SEND_TIMEOUT | seconds an observer gets to take a reply before it is dropped (30) |
| OBSERVER_AGENT_MAX_SESSIONS | observers connected at once; one more is told "agent busy" (16) |
| OBSERVER_AGENT_AUTH_FAILURES | wrong proofs per address per window before it is refused (10) |
| OBSERVER_AGENT_AUTH_FAILURES_TOTAL | wrong proofs from all addresses per window (60) |
| OBSERVER_AGENT_AUTH_WINDOW | seconds those failures are remembered (60) |
| OBSERVER_AGENT_AUDIT_FILE | also append the audit to this JSON-lines file (0600, rotated) |
| OBSERVER_AGENT_METRICS* | the Prometheus endpoint (off unless set): see agent.metrics.config |
| OBSERVER_AGENT_WORKERS | 1: forked children get a loopback agent of their own (agent.workers) |
| OBSERVER_AGENT_STALL_THRESHOLD | seconds a loop may not run before it is a stall (0.1; 0 = off) |
| OBSERVER_AGENT_TASK_FACTORY | 0: no task factory in the host's loops (ages are lower bounds) |

Only a wrong proof (an HMAC that does not match any token) counts as a failed login: a
bare connect, a port scanner, a TCP health probe or a timed-out handshake does not. An
address over its budget, or any address that has not logged in within a day while the
total budget is spent, is refused without its proof being evaluated, and the refusals
do not count: the block ends ``OBSERVER_AGENT_AUTH_WINDOW`` seconds after the failures
that caused it. Tokens must carry 128+ bits of entropy (``observer keygen`` makes
256-bit ones).
"""

from __future__ import annotations

import logging
import os
import socket
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from agent.metrics.config import MetricsConfig, resolve_metrics
from agent.security import ROLES, ConfigError, weak_token_error
from agent.wire import split_host_port

log = logging.getLogger("agent")

DEFAULT_BIND = "127.0.0.1:7330"
DEFAULT_MAX_SESSIONS = 16
# A reply no caller still waits for: the observer's calls time out after 10 s by
# default, rpyc's after 30 s. Bounds how long a peer that stops reading holds a thread.
DEFAULT_SEND_TIMEOUT = 30.0
MAX_SESSIONS_LIMIT = 1024  # a thread and a descriptor each


@dataclass(frozen=True)
class AgentConfig:
    """Resolved settings for one agent server."""

    host: str
    port: int
    name: str
    tls_cert: str | None = None
    tls_key: str | None = None
    client_cafile: str | None = None
    tokens: dict[str, str] = field(default_factory=dict)
    history_idle_interval: float = 10.0
    max_sessions: int = DEFAULT_MAX_SESSIONS
    send_timeout: float = DEFAULT_SEND_TIMEOUT
    auth_failure_limit: int = 10
    audit_file: str | None = None
    auth_failure_total: int = 60
    auth_window: float = 60.0
    metrics: MetricsConfig | None = None  # the Prometheus endpoint, None = off
    workers: bool = False  # forked children get a loopback agent of their own (agent.workers)
    stall_threshold: float = 0.1
    task_factory: bool = True  # chain a factory stamping creation times (collect.births)


def parse_bind(bind: str) -> tuple[str, int]:
    """Split ``host:port`` / ``[v6]:port`` into parts, with a clear error."""
    parts = split_host_port(bind)
    if parts is None:
        raise ConfigError(f"bind address {bind!r} must be host:port with port 0-65535")
    return parts


def read_token_file(path: str | os.PathLike[str]) -> str:
    """Read a token (first line), refusing empty or guessable ones."""
    p = Path(path)
    try:
        text = p.read_text().strip().splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read token file {p}: {exc.strerror}") from exc
    token = text[0].strip() if text else ""
    problem = weak_token_error(token, f"the token in {p}")
    if problem:
        raise ConfigError(problem)
    try:
        if p.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("runtime-observer agent: token file %s is readable by group/others", p)
    except OSError:
        pass
    return token


def key_dir_files(directory: str | os.PathLike[str]) -> dict[str, str]:
    """What an `observer keygen` directory holds: cert/key paths and token files by role."""
    d = Path(directory)
    names = {"tls_cert": "agent.crt", "tls_key": "agent.key"}
    names.update({role: f"{role}.token" for role in ROLES})
    return {what: str(d / name) for what, name in names.items() if (d / name).exists()}


def _env_number(env: Mapping[str, str], name: str, default: float, kind: type) -> float:
    try:
        return kind(env.get(name, default))
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {env[name]!r}") from None


def resolve(
    bind: str | None,
    *,
    tls_cert: str | None,
    tls_key: str | None,
    tokens: Mapping[str, str] | None,
    name: str | None,
    client_cafile: str | None = None,
    max_sessions: int | None = None,
    env: Mapping[str, str] | None = None,
    send_timeout: float | None = None,
    audit_file: str | None = None,
    metrics: str | None = None,
    metrics_public: bool | None = None,
    metrics_token: str | None = None,
    metrics_tls: bool | None = None,
    workers: bool | None = None,
    stall_threshold: float | None = None,
) -> AgentConfig:
    """Merge explicit arguments with the environment; validate roles and tokens."""
    env = os.environ if env is None else env
    from_dir = (
        key_dir_files(env["OBSERVER_AGENT_TOKEN_DIR"])
        if env.get("OBSERVER_AGENT_TOKEN_DIR")
        else {}
    )
    host, port = parse_bind(bind or env.get("OBSERVER_AGENT_BIND") or DEFAULT_BIND)
    tls_cert = tls_cert or env.get("OBSERVER_AGENT_TLS_CERT") or from_dir.get("tls_cert")
    tls_key = tls_key or env.get("OBSERVER_AGENT_TLS_KEY") or from_dir.get("tls_key")
    client_cafile = client_cafile or env.get("OBSERVER_AGENT_CLIENT_CA") or None
    if tokens is None:
        files = {
            "viewer": env.get("OBSERVER_AGENT_VIEWER_TOKEN_FILE"),
            "operator": env.get("OBSERVER_AGENT_OPERATOR_TOKEN_FILE")
            or env.get("OBSERVER_AGENT_TOKEN_FILE"),
            "admin": env.get("OBSERVER_AGENT_ADMIN_TOKEN_FILE"),
        }
        tokens = {
            role: read_token_file(path)
            for role in ROLES
            if (path := files[role] or from_dir.get(role))
        }
    clean: dict[str, str] = {}
    for role, token in dict(tokens).items():
        if role not in ROLES:
            raise ConfigError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
        if not isinstance(token, str):
            raise ConfigError(f"the {role} token must be a string")
        problem = weak_token_error(token, f"the {role} token")
        if problem:
            raise ConfigError(problem)
        clean[role] = token
    if len(set(clean.values())) != len(clean):
        raise ConfigError("each role needs its own token")
    if bool(tls_cert) != bool(tls_key):
        raise ConfigError("TLS needs both a certificate and a key")
    idle = _env_number(env, "OBSERVER_AGENT_HISTORY_IDLE", 10.0, float)
    failures = int(_env_number(env, "OBSERVER_AGENT_AUTH_FAILURES", 10, int))
    total = int(_env_number(env, "OBSERVER_AGENT_AUTH_FAILURES_TOTAL", 60, int))
    window = _env_number(env, "OBSERVER_AGENT_AUTH_WINDOW", 60.0, float)
    if max_sessions is None:
        max_sessions = int(
            _env_number(env, "OBSERVER_AGENT_MAX_SESSIONS", DEFAULT_MAX_SESSIONS, int)
        )
    if type(max_sessions) is not int or not 1 <= max_sessions <= MAX_SESSIONS_LIMIT:
        raise ConfigError(
            f"max_sessions (OBSERVER_AGENT_MAX_SESSIONS) must be 1-{MAX_SESSIONS_LIMIT}, "
            f"got {max_sessions!r}"
        )
    if send_timeout is None:
        send_timeout = _env_number(env, "OBSERVER_AGENT_SEND_TIMEOUT", DEFAULT_SEND_TIMEOUT, float)
    if not 0 < send_timeout < float("inf"):
        raise ConfigError(
            "send_timeout (OBSERVER_AGENT_SEND_TIMEOUT) must be a positive number of seconds, "
            f"got {send_timeout}"
        )
    if stall_threshold is None:
        stall_threshold = _env_number(env, "OBSERVER_AGENT_STALL_THRESHOLD", 0.1, float)
    if type(stall_threshold) not in (int, float) or not 0 <= stall_threshold <= 60:
        raise ConfigError(
            "stall_threshold (OBSERVER_AGENT_STALL_THRESHOLD) must be 0 (off) to 60 seconds, "
            f"got {stall_threshold!r}"
        )
    return AgentConfig(
        host=host,
        port=port,
        name=name or env.get("OBSERVER_AGENT_NAME") or socket.gethostname(),
        tls_cert=tls_cert,
        tls_key=tls_key,
        client_cafile=client_cafile,
        tokens=clean,
        history_idle_interval=max(0.0, idle),
        max_sessions=max_sessions,
        send_timeout=float(send_timeout),
        auth_failure_limit=max(1, failures),
        audit_file=audit_file or env.get("OBSERVER_AGENT_AUDIT_FILE") or None,
        auth_failure_total=max(1, total),
        auth_window=max(0.1, window),
        metrics=resolve_metrics(
            metrics,
            public=metrics_public,
            token=metrics_token,
            tls=metrics_tls,
            env=env,
            has_tls_material=bool(tls_cert and tls_key),
        ),
        workers=_env_flag(env, "OBSERVER_AGENT_WORKERS") if workers is None else bool(workers),
        stall_threshold=float(stall_threshold),
        task_factory=env.get("OBSERVER_AGENT_TASK_FACTORY", "1").strip().lower()
        not in ("0", "off", "no", "false"),
    )


def _env_flag(env: Mapping[str, str], name: str) -> bool:
    """An on/off variable: 1/true/yes/on is on, unset or 0/false/no/off is off."""
    value = env.get(name, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name} must be 1 or 0, got {env[name]!r}")
