"""Agents for the workers a master forks (gunicorn, multiprocessing, os.fork).

When the master's agent was started with ``workers=True``, every child forked from it
gets an agent of its own, right after the fork (agent.forking runs the hook): it listens
on loopback only, on a port of its own (never on the master's network address), with
the master's certificate and tokens, so only the master (which relays observers' calls
to it, agent.relay) and local holders of a token can reach it. It notes its address in
the 0700 runtime directory (agent.registry), where the master finds it by pid.

A worker's agent does not start agents for its own children, writes no audit file (the
master audits what it relays) and takes few sessions.
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.server import AgentServer

WORKER_HOST = "127.0.0.1"


def worker_config_name(master_name: str, pid: int) -> str:
    return f"{master_name} worker {pid}"


def start_worker(master: AgentServer) -> AgentServer:
    """In a child just forked from ``master``'s process: start the child's agent."""
    from agent.server import AgentServer

    config = dataclasses.replace(
        master.config,
        host=WORKER_HOST,
        port=0,
        name=worker_config_name(master.config.name, os.getpid()),
        audit_file=None,
        max_sessions=master.config.max_sessions,  # a relay link per master session
        workers=False,
    )
    server = AgentServer(config, tls_parts=master.tls_parts)
    server.master_pid = master.pid
    server.start()
    return server
