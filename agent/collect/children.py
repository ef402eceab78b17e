"""Descendant OS processes of the host, with CPU % kept across calls."""

from __future__ import annotations

import threading

import psutil

from agent.collect import guarded
from agent.collect.proctree import descendant_parents
from agent.collect.roles import child_roles
from agent.redact import redact_argv
from agent.registry import agent_addresses
from agent.schema import ChildInfo

Key = tuple[int, float]  # a process: pid and create time


class ChildTracker:
    """Keeps psutil.Process objects of children so CPU % has a previous reading."""

    def __init__(self, process: psutil.Process) -> None:
        self._process = process
        self._lock = threading.Lock()
        self._known: dict[Key, psutil.Process] = {}
        # each child's command line as last read and redacted: redacted again only when
        # it changed (a master's children are described at every refresh of its tree)
        self._argv: dict[Key, tuple[list[str], tuple[str, ...]]] = {}

    def processes(self) -> list[psutil.Process]:
        """Live descendants, reusing known Process objects (pid + create time identify one)."""
        return [proc for proc, _parent in self._current()]

    def _current(self) -> list[tuple[psutil.Process, int | None]]:
        """processes(), each with its parent's pid where the walk read it (else None)."""
        current = self._descendants()
        if current is None:
            return []
        out = []
        seen = set()
        with self._lock:
            for proc, parent in current:
                try:
                    key = (proc.pid, proc.create_time())
                except psutil.Error:
                    continue
                seen.add(key)
                known = self._known.setdefault(key, proc)
                out.append((known, parent))
            for key in list(self._known):
                if key not in seen:
                    del self._known[key]
                    self._argv.pop(key, None)
        return out

    def _descendants(self) -> list[tuple[psutil.Process, int | None]] | None:
        """Live descendants and their parents, from /proc's children files where the
        kernel has them (agent.collect.proctree), else psutil's scan of every process
        (parents not read); None on error."""
        parents = descendant_parents(self._process.pid)
        if parents is None:
            try:
                return [(p, None) for p in self._process.children(recursive=True)]
            except (psutil.Error, OSError):
                return None
        out: list[tuple[psutil.Process, int | None]] = []
        for pid, parent in parents.items():
            try:
                out.append((psutil.Process(pid), parent))
            except psutil.Error:
                continue  # ended meanwhile
        return out

    def find(self, pid: int) -> psutil.Process | None:
        """A live descendant by pid, or None (never an unrelated process)."""
        for proc in self.processes():
            if proc.pid == pid:
                return proc
        return None

    def _redacted(self, key: Key, argv: list[str]) -> tuple[str, ...]:
        """``argv`` redacted (agent.redact), redone only when it changed since last time."""
        with self._lock:
            held = self._argv.get(key)
        if held is not None and held[0] == argv:
            return held[1]
        redacted = redact_argv(argv)
        with self._lock:
            if key in self._known:  # not one that ended meanwhile: bounded by _known
                self._argv[key] = (argv, redacted)
        return redacted

    def collect(self) -> list[ChildInfo]:
        """Describe every descendant (each fact read now: only the redaction of an
        unchanged command line, the agents' directory check and the parent, which the
        walk read, are not done again per child)."""
        facts = []
        roles = child_roles()  # a worker's argv is its master's: say what it is instead
        for proc, parent in self._current():
            try:
                with proc.oneshot():
                    pid = proc.pid
                    created = proc.create_time()
                    facts.append(
                        (
                            pid,
                            proc.ppid() if parent is None else parent,
                            roles.get(pid) or proc.name(),
                            self._redacted((pid, created), guarded(proc.cmdline, [])),
                            str(guarded(proc.status, "unknown")),
                            guarded(proc.cpu_percent, None),
                            guarded(lambda p=proc: p.memory_info().rss, None),
                            created,
                        )
                    )
            except psutil.Error:
                continue
        # a zombie runs nothing: its agent's registry entry stays until the parent reaps
        # it, but there is no agent to ask (fan-outs skip it)
        addresses = agent_addresses(
            (fact[0], fact[7]) for fact in facts if fact[4] != psutil.STATUS_ZOMBIE
        )
        return [
            ChildInfo(f"pid-{fact[0]}", *fact, agent=addresses.get(fact[0], "")) for fact in facts
        ]
