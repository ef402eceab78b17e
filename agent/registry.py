"""A per-user runtime directory where running agents note their address.

Lets an agent mark its child processes that also run an agent (and lets tools find
local agents) without any network scan. Files are 0600 in a 0700 directory.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def runtime_dir() -> Path:
    """$XDG_RUNTIME_DIR/runtime-observer, or a per-user directory under the temp dir."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base:
        return Path(base) / "runtime-observer"
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    return Path(tempfile.gettempdir()) / f"runtime-observer-{uid}"


def _entry(pid: int) -> Path:
    return runtime_dir() / "agents" / str(pid)


def register(address: str) -> None:
    """Record this process's agent address (best effort, never raises)."""
    try:
        folder = _entry(os.getpid()).parent
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = _entry(os.getpid())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(address + "\n")
    except OSError:
        pass


def unregister() -> None:
    """Remove this process's entry (best effort)."""
    with contextlib.suppress(OSError):
        _entry(os.getpid()).unlink()


def agent_address_of(pid: int, create_time: float) -> str | None:
    """The address an agent in process ``pid`` registered, if written after it started."""
    path = _entry(pid)
    try:
        if path.stat().st_mtime + 1.0 < create_time:
            return None  # stale entry from an earlier process with the same pid
        return path.read_text().strip() or None
    except OSError:
        return None
