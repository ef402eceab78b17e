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

A worker's agent does not start agents for its own children, writes no audit file (the
master audits what it relays) and takes as many sessions as the master (each of the
master's observers relays over a link of its own).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable
from typing import TYPE_CHECKING

from agent.relay import RelayKeys

if TYPE_CHECKING:
    from agent.server import AgentServer

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


def start_worker(master: AgentServer) -> AgentServer:
    """In a child just forked from ``master``'s process: start the child's agent."""
    from agent.server import AgentServer

    config = dataclasses.replace(
        master.config,
        host=WORKER_HOST,
        port=0,
        name=worker_config_name(master.config.name, os.getpid()),
        tokens=dict(master.relay_keys.tokens),
        audit_file=None,
        max_sessions=master.config.max_sessions,  # a relay link per master session
        workers=False,
    )
    server = AgentServer(config, tls_parts=master.tls_parts)
    server.start()
    return server
