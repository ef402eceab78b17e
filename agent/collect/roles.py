"""What each child process is to the host, for its label in the process list.

A forked worker's argv is its master's (``python -m agent run ... -- -m gunicorn ...``),
which says nothing; the master itself knows better. Read without side effects: the
multiprocessing processes it started (their names: ``ForkPoolWorker-2``,
``SpawnProcess-1``; agent.compat) and a gunicorn arbiter's workers, found through the
SIGCHLD handler the arbiter installs (a bound method of the arbiter), labelled
``gunicorn worker (age N)`` with gunicorn's own age counter, and a Celery prefork
master's pool processes (billiard, multiprocessing's fork, keeps its own list),
``celery ForkPoolWorker-N``.
"""

from __future__ import annotations

import logging
import signal
import sys
from typing import Any

from agent import compat

log = logging.getLogger("agent")

MAX_ROLES = 4096


def child_roles() -> dict[int, str]:
    """pid -> role label for the children the host can name; never raises."""
    roles: dict[int, str] = {}
    for source in (compat.multiprocessing_children, gunicorn_workers, celery_workers):
        try:
            roles.update(source())
        except Exception:  # a host's odd objects: no labels from there, the list goes on
            log.debug("runtime-observer agent: reading child roles failed", exc_info=True)
    return roles


def _arbiter() -> Any | None:
    """The running gunicorn Arbiter of this process, if it is a gunicorn master."""
    module = sys.modules.get("gunicorn.arbiter")
    arbiter_class = getattr(module, "Arbiter", None) if module is not None else None
    if arbiter_class is None or not hasattr(signal, "SIGCHLD"):
        return None
    handler = signal.getsignal(signal.SIGCHLD)
    owner = getattr(handler, "__self__", None)
    return owner if isinstance(owner, arbiter_class) else None


def gunicorn_workers() -> dict[int, str]:
    """pid -> ``gunicorn worker (age N)`` for a gunicorn master's live workers."""
    arbiter = _arbiter()
    workers = getattr(arbiter, "WORKERS", None) if arbiter is not None else None
    if not isinstance(workers, dict):
        return {}
    for _ in range(10):
        try:
            items = list(workers.items())[:MAX_ROLES]
            break
        except RuntimeError:  # the arbiter changed it meanwhile
            continue
    else:
        return {}
    out = {}
    for pid, worker in items:
        age = getattr(worker, "age", None)
        if type(pid) is int:
            out[pid] = f"gunicorn worker (age {age})" if type(age) is int else "gunicorn worker"
    return out


def celery_workers() -> dict[int, str]:
    """pid -> ``celery ForkPoolWorker-N`` for the billiard processes (Celery's prefork
    pool) this process started: billiard.process._children, read as multiprocessing's."""
    module = sys.modules.get("billiard.process")
    children = getattr(module, "_children", None) if module is not None else None
    if not isinstance(children, set):
        return {}
    for _ in range(10):
        try:
            processes = list(children)[:MAX_ROLES]
            break
        except RuntimeError:  # changed meanwhile
            continue
    else:
        return {}
    out = {}
    for process in processes:
        pid = getattr(getattr(process, "_popen", None), "pid", None)
        name = getattr(process, "_name", None)
        if type(pid) is int and type(name) is str:
            out[pid] = f"celery {name}"
    return out
