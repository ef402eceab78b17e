"""runtime-observer agent: embed in a Python process to let an observer inspect it remotely.

    import agent
    agent.start("127.0.0.1:7330", tls_cert="agent.crt", tls_key="agent.key",
                tokens={"viewer": "...", "operator": "..."}, name="api-1")
    agent.expose("cache", my_cache)

Depends on rpyc and psutil only; never raises into the host after start().
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Mapping
from typing import Any

from agent.config import AgentConfig, resolve
from agent.security import ConfigError
from agent.server import AgentServer
from agent.version import AGENT_VERSION, PROTOCOL_VERSION

__all__ = [
    "AGENT_VERSION",
    "PROTOCOL_VERSION",
    "AgentConfig",
    "AgentServer",
    "ConfigError",
    "expose",
    "running",
    "start",
    "stop",
    "unexpose",
]
__version__ = AGENT_VERSION

_lock = threading.Lock()
_server: AgentServer | None = None
_pending_exposed: dict[str, Any] = {}


def start(
    bind: str | None = None,
    *,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    tokens: Mapping[str, str] | None = None,
    send_timeout: float | None = None,
    name: str | None = None,
    client_cafile: str | None = None,
) -> AgentServer:
    """Start the agent (idempotent: a second call returns the running one).

    Arguments left out come from OBSERVER_AGENT_* environment variables (see
    agent.config). Raises ConfigError for unsafe or invalid settings, OSError if the
    port cannot be bound; after it returns, nothing the agent does raises into the host.

    ``send_timeout``: seconds one reply may take to reach an observer before the agent
    drops that observer (default 30; OBSERVER_AGENT_SEND_TIMEOUT).
    """
    global _server
    with _lock:
        if _server is not None:
            return _server
        config = resolve(
            bind,
            tls_cert=tls_cert,
            tls_key=tls_key,
            tokens=tokens,
            send_timeout=send_timeout,
            name=name,
            client_cafile=client_cafile,
        )
        server = AgentServer(config)
        for key, obj in _pending_exposed.items():
            server.core.exposed.expose(key, obj)
        _pending_exposed.clear()
        server.start()
        _server = server
        return server


def stop() -> None:
    """Stop the agent and release its port (safe to call when not running)."""
    global _server
    with _lock:
        server, _server = _server, None
    if server is not None:
        server.stop()


def running() -> AgentServer | None:
    """The running agent, if any."""
    return _server


def expose(name: str, obj: Any) -> None:
    """Let observers read ``obj`` (safe, redacted repr; size/qsize) under ``name``."""
    with _lock:
        if _server is None:
            _pending_exposed[name] = obj
        else:
            _server.core.exposed.expose(name, obj)


def unexpose(name: str) -> None:
    """Stop showing an exposed object."""
    with _lock:
        _pending_exposed.pop(name, None)
        if _server is not None:
            _server.core.exposed.unexpose(name)


atexit.register(stop)
