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

from agent import forking
from agent.version import AGENT_VERSION, PROTOCOL_VERSION

if TYPE_CHECKING:
    from agent.config import AgentConfig
    from agent.security import ConfigError
    from agent.server import AgentServer
    from agent.workers import DormantWorker

# Imported on first use, so that importing one submodule (the observer reads
# agent.schema, agent.codec and agent.wire) does not load the whole agent: see __getattr__.
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
    "join",
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
_dormant: DormantWorker | None = None  # a forked worker's agent nobody has asked for yet
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
    metrics: str | None = None,
    metrics_public: bool | None = None,
    metrics_token: str | None = None,
    metrics_tls: bool | None = None,
    workers: bool | None = None,
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
    ``metrics="127.0.0.1:9464"`` also serves Prometheus metrics there (read-only, loopback
    unless ``metrics_public``; ``metrics_token`` a bearer token scrapers must send;
    ``metrics_tls`` with the agent's certificate; see agent.metrics.config).
    ``workers=True`` (OBSERVER_AGENT_WORKERS=1): every child forked from this process
    (gunicorn, multiprocessing, os.fork) gets an agent of its own on loopback, which only
    this agent can log in to (it relays observers' calls) and which agent.start() in the
    child returns (agent.workers).
    ``stall_threshold``: seconds an event loop may go without running before the stall
    catcher records what blocked it (default 0.1; 0 = off; OBSERVER_AGENT_STALL_THRESHOLD).
    """
    from agent.config import resolve
    from agent.server import AgentServer

    global _server
    if _dormant is not None and _wake_dormant() is not None:
        return _server  # a worker's agent: started at the fork, built now
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
            metrics=metrics,
            metrics_public=metrics_public,
            metrics_token=metrics_token,
            metrics_tls=metrics_tls,
            workers=workers,
            stall_threshold=stall_threshold,
        )
        server = AgentServer(config)
        for key, obj in _pending_exposed.items():
            server.core.exposed.expose(key, obj)
        _pending_exposed.clear()
        server.start()
        _server = server
        forking.install()  # a forked child closes its copies and forgets this server
        forking.on_child(_start_worker)
        from agent import spawned

        spawned.offer(server)  # OBSERVER_AGENT_SPAWNED_WORKERS=1: spawned children may join
        return server


def join() -> AgentServer | None:
    """In a worker of a master whose agent runs with workers=True: this worker's agent.

    A forked worker has one already (returned, built if dormant). A spawned one (spawn or
    forkserver start method, ``subprocess`` running Python, ``uvicorn --workers``) gets one
    when its master also set OBSERVER_AGENT_SPAWNED_WORKERS=1 (agent.spawned): on
    loopback, reached only through the master. Anywhere else: None, nothing started.
    Never raises; usable as ``Pool(initializer=agent.join)``.
    """
    global _server
    try:
        server = running()
        if server is not None:
            return server
        from agent import spawned
        from agent.server import AgentServer

        config = spawned.join_config()
        if config is None:
            return None
        with _lock:
            if _server is not None:
                return _server
            server = AgentServer(config)
            server.start()
            _install(server)
            forking.install()
            return server
    except Exception:
        import logging

        logging.getLogger("agent").warning(
            "runtime-observer agent: joining the master failed", exc_info=True
        )
        return None


def _start_worker(inherited: AgentServer | None) -> None:
    """In a forked child of an agent started with workers=True: its own agent, dormant
    until someone connects or the child asks for it (agent.workers)."""
    global _dormant
    if inherited is not None and inherited.config.workers:
        from agent.workers import DormantWorker

        _dormant = DormantWorker(inherited, on_wake=_adopt)


def _adopt(server: AgentServer) -> None:
    """The dormant worker agent woke up (a connection came): make it the running one,
    showing what was exposed meanwhile; one stopped or forgotten meanwhile is stopped."""
    global _server, _dormant
    with _lock:
        if _server is server:
            return
        if _dormant is None or _server is not None:
            stale = True
        else:
            stale = False
            _install(server)
            _dormant = None
    if stale:
        server.stop()


def _install(server: AgentServer) -> None:
    """Make ``server`` the running agent (the caller holds _lock)."""
    global _server
    for key, obj in _pending_exposed.items():
        server.core.exposed.expose(key, obj)
    _pending_exposed.clear()
    _server = server


def _wake_dormant() -> AgentServer | None:
    """Build a dormant worker agent now (the worker asked for its agent)."""
    global _dormant
    with _lock:
        if _server is None and _dormant is not None:
            _install(_dormant.wake())
            _dormant = None
        return _server


def _forget_after_fork() -> AgentServer | None:
    """In a forked child (agent.forking): a fresh lock (another thread of the parent may
    have held it at the fork), the inherited server's descriptors closed without touching
    the parent's, the server forgotten; what it exposed is kept for the child's own agent."""
    global _lock, _server, _dormant
    _lock = threading.Lock()
    server, _server = _server, None
    dormant, _dormant = _dormant, None
    if dormant is not None:
        dormant.abandon()
    if server is not None:
        _pending_exposed.update(server.core.exposed.abandon())
        server.abandon()
    from agent.relay import forget_links
    from agent.spawned import forget_after_fork

    forget_links()
    forget_after_fork()
    return server


def stop() -> None:
    """Stop the agent and release its port (safe to call when not running)."""
    global _server, _dormant
    with _lock:
        server, _server = _server, None
        dormant, _dormant = _dormant, None
    if dormant is not None:
        dormant.close()
    if server is not None:
        server.stop()
        from agent.spawned import withdraw

        withdraw()


def running() -> AgentServer | None:
    """The running agent, if any: one that really accepts connections (not one whose
    listener was closed behind its back; agent.start() replaces that one)."""
    if _dormant is not None:
        _wake_dormant()
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
