"""Descendant OS processes of the host, with CPU % kept across calls."""

from __future__ import annotations

import threading

import psutil

from agent.collect import guarded
from agent.collect.proctree import descendant_pids
from agent.collect.roles import child_roles
from agent.redact import redact_argv
from agent.registry import agent_address_of
from agent.schema import ChildInfo


class ChildTracker:
    """Keeps psutil.Process objects of children so CPU % has a previous reading."""

    def __init__(self, process: psutil.Process) -> None:
        self._process = process
        self._lock = threading.Lock()
        self._known: dict[tuple[int, float], psutil.Process] = {}

    def processes(self) -> list[psutil.Process]:
        """Live descendants, reusing known Process objects (pid + create time identify one)."""
        current = self._descendants()
        if current is None:
            return []
        out = []
        seen = set()
        with self._lock:
            for proc in current:
                try:
                    key = (proc.pid, proc.create_time())
                except psutil.Error:
                    continue
                seen.add(key)
                known = self._known.setdefault(key, proc)
                out.append(known)
            for key in list(self._known):
                if key not in seen:
                    del self._known[key]
        return out

    def _descendants(self) -> list[psutil.Process] | None:
        """Live descendants, from /proc's children files where the kernel has them
        (agent.collect.proctree), else psutil's scan of every process; None on error."""
        pids = descendant_pids(self._process.pid)
        if pids is None:
            try:
                return self._process.children(recursive=True)
            except (psutil.Error, OSError):
                return None
        out = []
        for pid in pids:
            try:
                out.append(psutil.Process(pid))
            except psutil.Error:
                continue  # ended meanwhile
        return out

    def find(self, pid: int) -> psutil.Process | None:
        """A live descendant by pid, or None (never an unrelated process)."""
        for proc in self.processes():
            if proc.pid == pid:
                return proc
        return None

    def collect(self) -> list[ChildInfo]:
        """Describe every descendant."""
        out = []
        roles = child_roles()  # a worker's argv is its master's: say what it is instead
        for proc in self.processes():
            try:
                with proc.oneshot():
                    pid = proc.pid
                    status = str(guarded(proc.status, "unknown"))
                    # a zombie runs nothing: its agent's registry entry stays until the
                    # parent reaps it, but there is no agent to ask (fan-outs skip it)
                    dead = status == psutil.STATUS_ZOMBIE
                    info = ChildInfo(
                        id=f"pid-{pid}",
                        pid=pid,
                        ppid=proc.ppid(),
                        name=roles.get(pid) or proc.name(),
                        cmdline=redact_argv(guarded(proc.cmdline, [])),
                        status=status,
                        cpu_percent=guarded(proc.cpu_percent, None),
                        rss=guarded(lambda p=proc: p.memory_info().rss, None),
                        create_time=proc.create_time(),
                        agent="" if dead else agent_address_of(pid, proc.create_time()),
                    )
            except psutil.Error:
                continue
            out.append(info)
        return out
