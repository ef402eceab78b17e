"""Descendant OS processes of the host, with CPU % kept across calls."""

from __future__ import annotations

import threading
import time

import psutil

from agent.collect import guarded
from agent.collect.pacing import pause_point
from agent.collect.procstat import full_name, read_cmdline, read_stat
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
        # /proc's fast path (agent.collect.procstat): a pid's start tick and its key, and
        # each child's CPU seconds and clock at the last look (its CPU % since then)
        self._started: dict[int, tuple[int, Key]] = {}
        self._cpu: dict[Key, tuple[float, float]] = {}

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
            self._forget_others(seen)
        return out

    def _forget_others(self, seen: set[Key]) -> None:
        """Drop what is kept of every child not in ``seen`` (lock held)."""
        for key in list(self._known):
            if key not in seen:
                del self._known[key]
                self._argv.pop(key, None)
                self._cpu.pop(key, None)
                if self._started.get(key[0], (0, key))[1] == key:
                    del self._started[key[0]]

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
        roles = child_roles()  # a worker's argv is its master's: say what it is instead
        facts = self._facts_from_proc(roles)
        if facts is None:
            facts = self._facts_from_psutil(roles)
        # a zombie runs nothing: its agent's registry entry stays until the parent reaps
        # it, but there is no agent to ask (fan-outs skip it)
        addresses = agent_addresses(
            (fact[0], fact[7]) for fact in facts if fact[4] != psutil.STATUS_ZOMBIE
        )
        return [
            ChildInfo(f"pid-{fact[0]}", *fact, agent=addresses.get(fact[0], "")) for fact in facts
        ]

    def _facts_from_proc(self, roles: dict[int, str]) -> list[tuple] | None:
        """Each descendant's facts from three small reads of /proc (agent.collect.procstat), the
        same psutil gives; psutil is asked only a new child's create time (the registry's
        key). None where /proc lacks the files."""
        parents = descendant_parents(self._process.pid)
        if parents is None:
            return None
        facts: list[tuple] = []
        seen: set[Key] = set()
        for pid, parent in parents.items():
            pause_point()  # a few /proc reads a child: a pool of 64 would hold the GIL long
            stat = read_stat(pid)
            if stat is None:
                continue  # ended meanwhile
            key = self._key_of(pid, stat.started)
            if key is None:
                continue  # ended meanwhile
            seen.add(key)
            argv = read_cmdline(pid) or []
            facts.append(
                (
                    pid,
                    parent,
                    roles.get(pid) or full_name(stat.comm, argv),
                    self._redacted(key, argv),
                    stat.status,
                    self._cpu_percent(key, stat.cpu),
                    stat.rss,
                    key[1],
                )
            )
        with self._lock:
            self._forget_others(seen)
        return facts

    def _key_of(self, pid: int, started: int) -> Key | None:
        """The key (pid, psutil's create time) of the process ``pid`` that started at tick
        ``started``: psutil asked once per process, its Process object kept."""
        with self._lock:
            held = self._started.get(pid)
        if held is not None and held[0] == started:
            return held[1]
        try:
            proc = psutil.Process(pid)
            key = (pid, proc.create_time())
        except psutil.Error:
            return None
        with self._lock:
            self._known.setdefault(key, proc)
            self._started[pid] = (started, key)
        return key

    def _cpu_percent(self, key: Key, cpu: float) -> float:
        """CPU % since the last look at this child, as psutil's cpu_percent() gives it
        (0.0 at the first look)."""
        now = time.monotonic()
        with self._lock:
            last = self._cpu.get(key)
            self._cpu[key] = (cpu, now)
        if last is None or now <= last[1]:
            return 0.0
        return round((cpu - last[0]) / (now - last[1]) * 100, 1)

    def _facts_from_psutil(self, roles: dict[int, str]) -> list[tuple]:
        """Each descendant's facts, psutil probe by probe (where /proc cannot say)."""
        facts: list[tuple] = []
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
        return facts
