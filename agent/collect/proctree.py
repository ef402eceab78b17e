"""A process's children and descendants from Linux's /proc/PID/task/*/children files.

One small file per thread of each process walked, where psutil's children() reads the
stat file of every process on the host to build a parent map: on a host running
hundreds of processes that is most of a snapshot's cost for a master with few workers
(and for each worker, which usually has no children at all). None where the kernel
lacks the files (CONFIG_PROC_CHILDREN off, not Linux): callers then use psutil.
"""

from __future__ import annotations

import os

from agent.collect.procstat import read_proc

MAX_THREADS = 4096  # threads of one process whose children files are read
MAX_DESCENDANTS = 4096


def child_pids(pid: int) -> list[int] | None:
    """The children of ``pid``, or None where the kernel lacks the files."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    found: set[int] = set()
    for tid in tasks[:MAX_THREADS]:
        try:
            found.update(
                int(w) for w in read_proc(f"/proc/{pid}/task/{tid}/children", 1 << 16).split()
            )
        except FileNotFoundError:
            if tid == str(pid):
                return None  # no such file at all (CONFIG_PROC_CHILDREN off)
        except (OSError, ValueError):
            continue  # the thread ended meanwhile
    return sorted(found)


def descendant_pids(pid: int) -> list[int] | None:
    """Every process under ``pid``, parents before their children (at most
    MAX_DESCENDANTS), or None where the kernel lacks the files."""
    parents = descendant_parents(pid)
    return None if parents is None else list(parents)


def descendant_parents(pid: int) -> dict[int, int] | None:
    """Every process under ``pid`` -> its parent, parents before their children (at
    most MAX_DESCENDANTS), or None where the kernel lacks the files: the walk reads
    whose child each one is, so nobody's ppid needs reading again."""
    first = child_pids(pid)
    if first is None:
        return None
    out: dict[int, int] = {}
    seen = {pid}
    queue = [(child, pid) for child in first]
    while queue and len(out) < MAX_DESCENDANTS:
        child, parent = queue.pop(0)
        if child in seen:
            continue
        seen.add(child)
        out[child] = parent
        # a child that ended meanwhile has none
        queue.extend((grandchild, child) for grandchild in child_pids(child) or ())
    return out
