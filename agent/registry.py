"""A per-user runtime directory where running agents note their address.

Lets an agent mark its child processes that also run an agent (and lets tools find
local agents) without any network scan. Files are 0600 in a 0700 directory.

Under a shared temp dir (no XDG_RUNTIME_DIR) another local user may create the directory
first, or plant symlinks in it. So the directories must be real directories owned by
this user that nobody else may write in (they are made, or tightened to, 0700), or the
agent neither writes nor reads them (and says so once in the log). Entries are written
to a fresh file renamed into place (a planted symlink is replaced, never followed) and
read with O_NOFOLLOW. Entries of processes that died without unregistering (SIGKILL)
are swept when an agent registers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path

import psutil

log = logging.getLogger("agent")

MAX_SWEEP = 10_000  # entries looked at per registration
MAX_ENTRY = 4096
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_warned: set[str] = set()


def runtime_dir() -> Path:
    """$XDG_RUNTIME_DIR/runtime-observer, or a per-user directory under the temp dir."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base:
        return Path(base) / "runtime-observer"
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    return Path(tempfile.gettempdir()) / f"runtime-observer-{uid}"


def _entry(pid: int) -> Path:
    return runtime_dir() / "agents" / str(pid)


def _refuse(folder: Path, why: str) -> None:
    """Log once per directory why the registry is not used."""
    key = str(folder)
    if key not in _warned:
        _warned.add(key)
        log.warning(
            "runtime-observer agent: not using the agent registry %s: %s "
            "(another user may have made it; remove it or set XDG_RUNTIME_DIR)",
            folder,
            why,
        )


def _private_dir(folder: Path, create: bool) -> bool:
    """Whether ``folder`` is a directory (not a symlink) owned by us that nobody else may
    write; created 0700 when ``create``. One that others may only read (as earlier
    versions left it) is tightened to 0700. Refusals are logged."""
    if create:
        with contextlib.suppress(FileExistsError):
            os.mkdir(folder, 0o700)
    try:
        fd = os.open(folder, os.O_RDONLY | _NOFOLLOW | _DIRECTORY | _CLOEXEC)
    except OSError as exc:
        if create and os.path.lexists(folder):
            _refuse(folder, f"it is not a directory one can open safely ({exc.strerror})")
        return False
    try:
        st = os.fstat(fd)
        if not stat.S_ISDIR(st.st_mode):
            _refuse(folder, "it is not a directory")
            return False
        if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
            _refuse(folder, f"it belongs to uid {st.st_uid}")
            return False
        if os.name == "posix" and st.st_mode & 0o022:
            _refuse(folder, f"its mode {stat.S_IMODE(st.st_mode):04o} lets others write in it")
            return False
        if os.name == "posix" and st.st_mode & 0o077 and create:
            os.fchmod(fd, 0o700)  # ours, and nobody else could write in it: just tighten
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _agents_dir(create: bool) -> Path | None:
    """The checked agents/ directory (and its parent), or None."""
    top = runtime_dir()
    if create and not top.parent.is_dir():
        return None
    if not _private_dir(top, create):
        return None
    folder = top / "agents"
    return folder if _private_dir(folder, create) else None


def register(address: str) -> None:
    """Record this process's agent address (best effort, never raises)."""
    try:
        folder = _agents_dir(create=True)
        if folder is None:
            return
        sweep(folder)
        pid = os.getpid()
        temp = folder / f".{pid}.{os.urandom(6).hex()}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(address + "\n")
            os.replace(temp, folder / str(pid))  # replaces a planted symlink, never follows it
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
    except Exception:
        log.debug("runtime-observer agent: registering the address failed", exc_info=True)


def unregister() -> None:
    """Remove this process's entry (best effort)."""
    with contextlib.suppress(OSError):
        _entry(os.getpid()).unlink()


def _stale(pid: int, written: float) -> bool:
    """Whether an entry written at ``written`` cannot belong to a live process ``pid``."""
    try:
        started = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return True
    except Exception:  # cannot tell (access denied): leave it
        return False
    return started > written + 1.0  # the pid was reused by a later process


def sweep(folder: Path) -> int:
    """Remove entries (and leftover temp files) of processes that are gone; returns how many."""
    removed = 0
    try:
        names = os.listdir(folder)[:MAX_SWEEP]
    except OSError:
        return 0
    for name in names:
        pid_text = name.split(".")[1] if name.startswith(".") and name.count(".") >= 2 else name
        if not pid_text.isdigit():
            continue
        path = folder / name
        try:
            st = os.lstat(path)
            if int(pid_text) == os.getpid() and not name.startswith("."):
                continue
            if _stale(int(pid_text), st.st_mtime) or not stat.S_ISREG(st.st_mode):
                os.unlink(path)
                removed += 1
        except (OSError, ValueError):
            continue
    return removed


def agent_address_of(pid: int, create_time: float) -> str | None:
    """The address an agent in process ``pid`` registered, if written after it started."""
    return agent_addresses(((pid, create_time),)).get(pid)


def agent_addresses(processes: Iterable[tuple[int, float]]) -> dict[int, str | None]:
    """agent_address_of for each (pid, create_time), the directory checked once."""
    wanted = list(processes)
    folder = _agents_dir(create=False) if wanted else None
    if folder is None:
        return {pid: None for pid, _created in wanted}
    return {pid: _address_in(folder, pid, created) for pid, created in wanted}


def _address_in(folder: Path, pid: int, create_time: float) -> str | None:
    try:
        fd = os.open(folder / str(pid), os.O_RDONLY | _NOFOLLOW | _CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_mtime + 1.0 < create_time:
            return None  # stale entry from an earlier process with the same pid
        if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
            return None
        return os.read(fd, MAX_ENTRY).decode("utf-8", "replace").strip() or None
    except OSError:
        return None
    finally:
        os.close(fd)


def local_agents() -> dict[int, str]:
    """pid -> address of each running agent of this user registered here (what
    ``observer nodes --local`` lists); entries of dead processes are left to the sweep."""
    folder = _agents_dir(create=False)
    if folder is None:
        return {}
    try:
        names = os.listdir(folder)[:MAX_SWEEP]
    except OSError:
        return {}
    found: dict[int, str] = {}
    for name in sorted(names, key=lambda n: (len(n), n)):
        if not name.isdigit():
            continue
        try:
            started = psutil.Process(int(name)).create_time()
        except (psutil.Error, ValueError):
            continue
        address = agent_address_of(int(name), started)
        if address:
            found[int(name)] = address
    return found
