"""Settings of the metrics endpoint: explicit arguments, else environment variables.

| variable | meaning |
| --- | --- |
| OBSERVER_AGENT_METRICS | host:port of the Prometheus endpoint (off when unset) |
| OBSERVER_AGENT_METRICS_PUBLIC | 1: allow a non-loopback metrics address |
| OBSERVER_AGENT_METRICS_TOKEN_FILE | file holding a bearer token scrapers must send |
| OBSERVER_AGENT_METRICS_TLS | 1: serve the metrics over TLS with the agent's certificate |
| OBSERVER_AGENT_METRICS_MAX_SERIES | samples per scrape at most (5000) |
| OBSERVER_AGENT_METRICS_WORKER_AGENTS | 0: workers' agents stay dormant (no Python series) |
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from agent.security import ConfigError, is_loopback_host, weak_token_error
from agent.wire import split_host_port

DEFAULT_MAX_SERIES = 5000
TRUE = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class MetricsConfig:
    host: str
    port: int
    public: bool = False
    token: str | None = None
    tls: bool = False
    max_series: int = DEFAULT_MAX_SERIES
    worker_agents: bool = True  # ask workers' agents for their Python series at each scrape


def _flag(value: bool | None, env: Mapping[str, str], name: str) -> bool:
    if value is not None:
        return bool(value)
    return env.get(name, "").strip().lower() in TRUE


def resolve_metrics(
    metrics: str | None,
    *,
    public: bool | None,
    token: str | None,
    tls: bool | None,
    env: Mapping[str, str],
    has_tls_material: bool,
) -> MetricsConfig | None:
    """The endpoint's settings, or None when it is off; ConfigError for unsafe ones."""
    address = metrics or env.get("OBSERVER_AGENT_METRICS") or None
    if address is None:
        return None
    parts = split_host_port(address)
    if parts is None:
        raise ConfigError(f"metrics address {address!r} must be host:port with port 0-65535")
    host, port = parts
    public = _flag(public, env, "OBSERVER_AGENT_METRICS_PUBLIC")
    if not public and not is_loopback_host(host):
        raise ConfigError(
            f"refusing to serve metrics on {address}: it is not a loopback address; "
            "pass metrics_public=True (--metrics-public, OBSERVER_AGENT_METRICS_PUBLIC=1) "
            "to expose them beyond this machine"
        )
    if token is None and env.get("OBSERVER_AGENT_METRICS_TOKEN_FILE"):
        from agent.config import read_token_file

        token = read_token_file(env["OBSERVER_AGENT_METRICS_TOKEN_FILE"])
    if token is not None:
        problem = weak_token_error(token, "the metrics token") if isinstance(token, str) else ""
        if problem is None and any(ch.isspace() for ch in token):
            problem = "the metrics token must not contain white space"
        if problem is not None:
            raise ConfigError(problem or "the metrics token must be a string")
    tls = _flag(tls, env, "OBSERVER_AGENT_METRICS_TLS")
    if tls and not has_tls_material:
        raise ConfigError("metrics over TLS need the agent's tls_cert and tls_key")
    try:
        max_series = int(env.get("OBSERVER_AGENT_METRICS_MAX_SERIES", DEFAULT_MAX_SERIES))
    except ValueError:
        raise ConfigError("OBSERVER_AGENT_METRICS_MAX_SERIES must be an integer") from None
    if not 100 <= max_series <= 1_000_000:
        raise ConfigError("OBSERVER_AGENT_METRICS_MAX_SERIES must be 100-1000000")
    worker_agents = env.get("OBSERVER_AGENT_METRICS_WORKER_AGENTS", "1").strip().lower()
    return MetricsConfig(
        host, port, public, token, tls, max_series, worker_agents not in ("0", "false", "no", "off")
    )
