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
from typing import TYPE_CHECKING, Any

from agent.version import AGENT_VERSION, PROTOCOL_VERSION

if TYPE_CHECKING:
    from agent.config import AgentConfig
    from agent.security import ConfigError
    from agent.server import AgentServer

# Imported on first use, so that importing one submodule (the observer reads
# agent.schema and agent.wire) does not load the whole agent: see __getattr__.
_LAZY = {
    "AgentConfig": "agent.config",
    "AgentServer": "agent.server",
    "ConfigError": "agent.security",
}

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


def __getattr__(name: str) -> Any:
    """The public classes, imported when first asked for (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'agent' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


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
    audit_file: str | None = None,
    max_sessions: int | None = None,
    stall_threshold: float | None = None,
) -> AgentServer:
    """Start the agent (idempotent: a second call returns the running one).

    Arguments left out come from OBSERVER_AGENT_* environment variables (see
    agent.config). ``audit_file`` also appends the audit to that file (JSON lines, 0600,
    rotated by size); ``max_sessions`` is how many observers may be connected at once (16).
    Raises ConfigError for unsafe or invalid settings, OSError if the port cannot be
    bound; after it returns, nothing the agent does raises into the host. An agent whose
    listener died (see running()) is replaced by a new one, keeping what was exposed.
    ``send_timeout``: seconds one reply may take to reach an observer before the agent
    drops that observer (default 30; OBSERVER_AGENT_SEND_TIMEOUT).
    ``stall_threshold``: seconds an event loop may go without running before the stall
    catcher records what blocked it (default 0.1; 0 = off; OBSERVER_AGENT_STALL_THRESHOLD).
    """
    from agent.config import resolve
    from agent.server import AgentServer

    global _server
    with _lock:
        if _server is not None:
            if _server.serving:
                return _server
            dead, _server = _server, None
            _pending_exposed.update(dict(dead.core.exposed.items()))
            dead.stop()
        config = resolve(
            bind,
            tls_cert=tls_cert,
            tls_key=tls_key,
            tokens=tokens,
            send_timeout=send_timeout,
            name=name,
            client_cafile=client_cafile,
            audit_file=audit_file,
            max_sessions=max_sessions,
            stall_threshold=stall_threshold,
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
    """The running agent, if any: one that really accepts connections (not one whose
    listener was closed behind its back; agent.start() replaces that one)."""
    server = _server
    return server if server is not None and server.serving else None


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
