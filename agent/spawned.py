"""Workers that do not inherit the master's memory (spawn, forkserver, ``subprocess``
running Python, ``uvicorn --workers``) join the master's agent when both opt in.

The master opts in with ``OBSERVER_AGENT_SPAWNED_WORKERS=1`` next to ``workers=True``:
it writes what a worker's agent needs (its tokens, derived as for forked workers, the
certificate and key paths, the master's pid and start time) to a 0600 file in the 0700
runtime directory (agent.registry) and names that file in ``OBSERVER_AGENT_MASTER`` in
its own environment, which its children inherit. The worker opts in by calling
``agent.join()`` (e.g. ``Pool(initializer=agent.join)``, or at import of the app module):
if the file is ours, private, and names a live ancestor of this process, it starts an
agent on loopback that only the master can log in to, exactly as a forked worker's.
Elsewhere ``agent.join()`` does nothing. The file goes when the master's agent stops
(or, after a SIGKILL, when another agent sweeps the runtime directory).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from agent import registry

if TYPE_CHECKING:
    from agent.config import AgentConfig
    from agent.server import AgentServer

log = logging.getLogger("agent")

OPT_IN_ENV = "OBSERVER_AGENT_SPAWNED_WORKERS"
JOIN_ENV = "OBSERVER_AGENT_MASTER"
MAX_FILE = 64 * 1024
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_offered: Path | None = None  # the join file this process wrote


def opted_in() -> bool:
    return os.environ.get(OPT_IN_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _join_file(folder: Path, pid: int) -> Path:
    # ".PID.join": named like registry's temp files, so its sweep removes it once PID is gone
    return folder / f".{pid}.join"


def offer(server: AgentServer) -> None:
    """In a master with workers=True that opted in: write the join file, export its path.
    Best effort: a failure is logged and spawned workers simply get no agent."""
    global _offered
    if not (server.config.workers and opted_in()):
        return
    try:
        folder = registry._agents_dir(create=True)
        if folder is None:
            log.warning("runtime-observer agent: no private runtime directory: no spawned workers")
            return
        config = server.config
        me = psutil.Process()
        record = {
            "master": me.pid,
            "created": me.create_time(),
            "name": config.name,
            "tokens": dict(server.relay_keys.tokens),
            "tls_cert": os.path.abspath(config.tls_cert) if config.tls_cert else None,
            "tls_key": os.path.abspath(config.tls_key) if config.tls_key else None,
            "max_sessions": config.max_sessions,
            "send_timeout": config.send_timeout,
        }
        path = _join_file(folder, me.pid)
        temp = folder / f".{me.pid}.{os.urandom(6).hex()}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(record, fh)
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        _offered = path
        os.environ[JOIN_ENV] = str(path)
    except Exception:
        log.warning("runtime-observer agent: offering spawned workers failed", exc_info=True)


def withdraw() -> None:
    """When the master's agent stops: remove its join file and the variable naming it."""
    global _offered
    path, _offered = _offered, None
    if path is None:
        return
    with contextlib.suppress(OSError):
        path.unlink()
    if os.environ.get(JOIN_ENV) == str(path):
        os.environ.pop(JOIN_ENV, None)


def forget_after_fork() -> None:
    """In a forked child: the join file is the master's, not to be removed from here."""
    global _offered
    _offered = None


def _read(path: Path) -> dict[str, Any] | None:
    """The join file's record if it is a private regular file of ours in the registry."""
    folder = registry._agents_dir(create=False)
    if folder is None or path.parent != folder or not path.name.endswith(".join"):
        return None
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_mode & 0o077:
            return None
        if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
            return None
        data = json.loads(os.read(fd, MAX_FILE))
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    return data if isinstance(data, dict) else None


def _is_ancestor(pid: Any, created: Any) -> bool:
    """Whether ``pid`` (started at ``created``) is an ancestor of this process."""
    if type(pid) is not int or not isinstance(created, (int, float)):
        return False
    try:
        for parent in psutil.Process().parents():
            if parent.pid == pid:
                return abs(parent.create_time() - created) < 1.0
    except psutil.Error:
        return False
    return False


def join_config() -> AgentConfig | None:
    """The config of this process's worker agent, if a master offered one; else None."""
    from agent.config import AgentConfig
    from agent.workers import worker_config_name

    where = os.environ.get(JOIN_ENV)
    if not where:
        return None
    record = _read(Path(where))
    if record is None or not _is_ancestor(record.get("master"), record.get("created")):
        log.info("runtime-observer agent: %s=%s names no master of this process", JOIN_ENV, where)
        return None
    tokens = record.get("tokens")
    if not isinstance(tokens, dict) or not all(
        type(k) is str and type(v) is str for k, v in tokens.items()
    ):
        return None
    cert, key = record.get("tls_cert"), record.get("tls_key")
    name = record.get("name")
    return AgentConfig(
        host="127.0.0.1",
        port=0,
        name=worker_config_name(name if type(name) is str else "agent", os.getpid()),
        tls_cert=cert if type(cert) is str else None,
        tls_key=key if type(key) is str else None,
        tokens=dict(tokens),
        max_sessions=int(record.get("max_sessions") or 16),
        send_timeout=float(record.get("send_timeout") or 30.0),
    )
