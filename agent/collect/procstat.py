"""A child process's facts from Linux's /proc/PID/stat, statm and cmdline: three reads.

psutil reads them one probe at a time (stat twice, statm, status, the boot time from
/proc/stat for every create_time, the online CPUs for every cpu_percent): ~49 files for
a master's 8 workers, ~1.1 ms of the master's CPU at every refresh of its tree. These
give the same values as psutil does (tests/test_procstat.py holds them to psutil's on
real processes); None where /proc has no such files (not Linux): callers use psutil.
"""

from __future__ import annotations

import os
from typing import NamedTuple

try:
    TICKS = os.sysconf("SC_CLK_TCK")
    PAGE = os.sysconf("SC_PAGE_SIZE")
except (AttributeError, ValueError, OSError):  # not POSIX
    TICKS = PAGE = 0

# /proc/PID/stat's state letter -> psutil's word for it (psutil's own Linux table;
# tests/test_procstat.py holds them equal)
STATUSES = {
    "R": "running",
    "S": "sleeping",
    "D": "disk-sleep",
    "T": "stopped",
    "t": "tracing-stop",
    "Z": "zombie",
    "X": "dead",
    "x": "dead",
    "K": "wake-kill",
    "W": "waking",
    "I": "idle",
    "P": "parked",
}
MAX_STAT = 4096  # bytes of a stat file read (comm is at most 64, the rest numbers)
MAX_CMDLINE = 1 << 16
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_PAGE_READ = 4096  # some kernels hand a long procfs file over a page per read


def read_proc(path: str, limit: int = MAX_STAT) -> bytes:
    """The first ``limit`` bytes of a /proc file, read with os.open/os.read: no io objects,
    ~8 us against open()'s ~14 for a thread's stat, which a refresh pays for every thread
    and child. Raises OSError as open() does."""
    fd = os.open(path, os.O_RDONLY | _CLOEXEC)
    try:
        data = os.read(fd, limit)
        # one read gives a whole short file; a long one (cmdline) some kernels hand over
        # a page at a time, so a read that ended on a page boundary may have more behind
        while data and len(data) < limit and len(data) % _PAGE_READ == 0:
            more = os.read(fd, limit - len(data))
            if not more:
                break
            data += more
        return data
    finally:
        os.close(fd)


class Stat(NamedTuple):
    """What one read of /proc/PID/stat says."""

    comm: str  # the kernel's name (15 characters at most)
    status: str  # psutil's word for the state
    ppid: int
    cpu: float  # user + system seconds
    started: int  # clock ticks after boot the process started at: its identity with pid
    rss: int  # bytes (statm's, as psutil's: stat's own rss is the kernel's approximation)


def split_stat(data: bytes) -> tuple[str, list[bytes]]:
    """A stat file's (comm, the fields after it: state first, ppid, ... utime at [11],
    stime at [12], starttime at [19]); comm may hold spaces and parentheses, so it ends
    at the last ')'."""
    opened, closed = data.find(b"("), data.rfind(b")")
    return data[opened + 1 : closed].decode("utf-8", "surrogateescape"), data[closed + 2 :].split()


def cpu_seconds(fields: list[bytes]) -> float:
    """User + system CPU seconds from split_stat's fields."""
    return (int(fields[11]) + int(fields[12])) / TICKS


def read_stat(pid: int) -> Stat | None:
    """``pid``'s stat, or None (gone, unreadable, or no /proc)."""
    if not TICKS:
        return None
    try:
        comm, fields = split_stat(read_proc(f"/proc/{pid}/stat"))
        state = fields[0].decode("ascii", "replace")
        return Stat(
            comm=comm,
            status=STATUSES.get(state, "?"),
            ppid=int(fields[1]),
            cpu=cpu_seconds(fields),
            started=int(fields[19]),
            rss=_resident(pid),
        )
    except (OSError, IndexError, ValueError):
        return None


def _resident(pid: int) -> int:
    """Resident bytes from /proc/PID/statm (0 for a zombie, whose statm is all zeros)."""
    return int(read_proc(f"/proc/{pid}/statm", 512).split()[1]) * PAGE


def read_cmdline(pid: int) -> list[str] | None:
    """``pid``'s command line as psutil splits it, or None (gone or unreadable)."""
    try:
        data = read_proc(f"/proc/{pid}/cmdline", MAX_CMDLINE)
    except OSError:
        return None
    text = data.decode("utf-8", "surrogateescape")
    if not text:
        return []  # a zombie or a kernel thread
    sep = "\x00" if text.endswith("\x00") else " "  # a process that rewrote its title
    if text.endswith(sep):
        text = text[:-1]
    argv = text.split(sep)
    if sep == "\x00" and len(argv) == 1 and " " in text:  # a title NUL-ended, space-split
        argv = text.split(" ")
    return argv


def full_name(comm: str, cmdline: list[str]) -> str:
    """The process's name as psutil gives it: the kernel's 15-character comm, or the
    command's base name when comm is a truncated start of it."""
    if len(comm) >= 15 and cmdline:
        extended = os.path.basename(cmdline[0])
        if extended.startswith(comm):
            return extended
    return comm
