"""Agents for the workers a master forks (gunicorn, multiprocessing, os.fork).

When the master's agent was started with ``workers=True``, every child forked from it
gets an agent of its own, right after the fork (agent.forking runs the hook): it listens
on loopback only, on a port of its own (never on the master's network address), with
the master's certificate and tokens of its own per role, derived from a secret the
master drew at start and never wrote anywhere: only the master (which relays observers'
calls to it with the caller's role, agent.relay) and processes forked from it know them,
so an observer holding the operator token still goes through the master, and its audit.
It notes its address in the 0700 runtime directory (agent.registry), where the master
finds it by pid.

Until someone connects, the worker's agent is dormant: a bound listener and one thread
blocked in select() on it, nothing else built (the agent's state, its listener and
sampler threads), so an unobserved worker neither wakes up nor copies the pages it
shares with its master. The first connection (or agent.start()/running() in the worker)
builds the real agent on that listener; the connection waits in the backlog meanwhile.

A worker's agent does not start agents for its own children, writes no audit file (the
master audits what it relays) and takes as many sessions as the master (each of the
master's observers relays over a link of its own).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import logging
import os
import secrets
import select
import socket
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from agent import registry
from agent.relay import RelayKeys
from agent.wire import join_host_port

if TYPE_CHECKING:
    from agent.server import AgentServer

log = logging.getLogger("agent")

WORKER_HOST = "127.0.0.1"


def worker_config_name(master_name: str, pid: int) -> str:
    return f"{master_name} worker {pid}"


def relay_keys(roles: Iterable[str], cert_der: bytes | None) -> RelayKeys:
    """A master's keys to its workers: a token per role it grants (viewer at least),
    derived from a fresh secret held only in this process's memory."""
    secret = secrets.token_bytes(32)
    tokens = {
        role: hmac.new(
            secret, f"runtime-observer/worker/{role}".encode(), hashlib.sha256
        ).hexdigest()
        for role in (set(roles) or {"viewer"})
    }
    return RelayKeys(tokens, cert_der)


class DormantWorker:
    """A worker's agent before anyone asked for it: its listener and one waiting thread."""

    def __init__(self, master: AgentServer, on_wake: Callable[[AgentServer], None]) -> None:
        from agent.server import bind_listener

        self._config = dataclasses.replace(
            master.config,
            host=WORKER_HOST,
            port=0,
            name=worker_config_name(master.config.name, os.getpid()),
            tokens=dict(master.relay_keys.tokens),
            audit_file=None,
            max_sessions=master.config.max_sessions,  # a relay link per master session
            workers=False,
            metrics=None,  # the master serves metrics; a worker binding its port would fail
        )
        self._tls_parts = master.tls_parts
        self._on_wake = on_wake
        self._lock = threading.Lock()
        self._server: AgentServer | None = None
        self._closed = False
        self.listener = bind_listener(WORKER_HOST, 0)
        try:
            self.listener.listen(socket.SOMAXCONN)
            self.address = join_host_port(*self.listener.getsockname()[:2])
            self._wake_r, self._wake_w = os.pipe()
        except BaseException:
            self.listener.close()
            raise
        registry.register(self.address)
        self._thread = threading.Thread(
            target=self._wait, name="observer-agent-worker", daemon=True
        )
        self._thread.start()

    def _wait(self) -> None:
        """Block (no timeout, no CPU) until a connection arrives, wake() is called from
        elsewhere or close(); build the agent in the first case."""
        try:
            select.select([self.listener, self._wake_r], [], [])
            if not self._closed:
                self._on_wake(self.wake())
        except Exception:
            log.warning("runtime-observer agent: the worker's agent failed to start", exc_info=True)
        finally:
            with self._lock:
                server = self._server
            if server is not None:  # this thread ends: CPython gives its ident to the next
                server.core.remove_agent_thread(threading.get_ident())
            for fd in (self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)

    def wake(self) -> AgentServer:
        """The worker's real agent, built on the listener the first time (idempotent);
        the waiting thread then ends."""
        from agent.server import AgentServer

        with self._lock:
            if self._server is None:
                server = AgentServer(self._config, self._tls_parts, listener=self.listener)
                if self._thread.is_alive():  # the agent's until it ends (in _wait): the
                    # first load sample must not count it as the host's
                    server.core.add_agent_thread(self._thread.ident or 0)
                server.start()
                self._server = server
            server = self._server
        if threading.current_thread() is not self._thread:
            self._stop_waiting()
        return server

    def _stop_waiting(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def close(self) -> None:
        """agent.stop() in the worker before anyone woke it: free the port, unregister."""
        self._stop_waiting()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)
        with self._lock:
            if self._server is not None:  # woken meanwhile: stopping it does the rest
                self._server.stop()
                return
            with contextlib.suppress(OSError):
                self.listener.close()
        registry.unregister()

    def abandon(self) -> None:
        """In a process forked from the worker: close its copies, touch nothing else."""
        self._closed = True
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        if self._server is not None:
            self._server.abandon()
        else:
            with contextlib.suppress(OSError):
                self.listener.close()
