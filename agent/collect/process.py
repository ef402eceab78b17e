"""Whole-process facts: identity, CPU, memory, descriptors, GC, from psutil in one oneshot."""

from __future__ import annotations

import gc
import os
import platform
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import psutil

from agent import compat
from agent.collect import guarded
from agent.collect.pacing import pause_point
from agent.redact import redact_argv, redact_mapping
from agent.schema import ExposedInfo, ProcessInfo
from agent.version import AGENT_VERSION, PROTOCOL_VERSION

ENV_MAX = 500  # variables sent at most
ENV_VALUE_MAX = 2000  # characters per value
T = TypeVar("T")


class Throttled(Generic[T]):
    """A costly probe's last answer, reused until it is older than ``factor`` times what
    the probe took (and at least ``min_age`` seconds): however often it is asked, the
    probe costs at most about 1/``factor`` of a core. Thread-safe."""

    def __init__(self, probe: Callable[[], T], min_age: float = 1.0, factor: float = 200.0) -> None:
        self._probe = probe
        self._min_age = min_age
        self._factor = factor
        self._lock = threading.Lock()
        self._at = -1e9  # monotonic time of the last answer
        self._age = 0.0  # how long that answer may be reused
        self._value: T | None = None

    def get(self) -> T:
        with self._lock:
            now = time.monotonic()
            if now - self._at >= self._age:
                self._value = self._probe()
                done = time.monotonic()
                self._at, self._age = done, max(self._min_age, (done - now) * self._factor)
            return self._value  # type: ignore[return-value]


def connection_count(process: psutil.Process) -> int | None:
    """The process's inet (TCP and UDP, v4 and v6) sockets, None when the OS will not say.

    On Linux counted from this process's own descriptors (see _own_inet_sockets); else
    psutil, which reads every socket table of the machine (the kernel walks its whole
    hash: 1-40 ms however few sockets there are), so callers go through a Throttled.
    """
    if process.pid == os.getpid():
        own = _own_inet_sockets()
        if own is not None:
            return own
    conns = getattr(process, "net_connections", None) or process.connections  # psutil < 6
    return guarded(lambda: len(conns(kind="inet")), None)


_SOL_SOCKET, _SO_TYPE, _SO_DOMAIN = 1, 3, 39  # Linux values
_INET = (socket.AF_INET, socket.AF_INET6)
_INET_TYPES = (socket.SOCK_STREAM, socket.SOCK_DGRAM)
_libc: Any = None


def _socket_facts(fd: int) -> tuple[int, int, int] | None:
    """(domain, type, local port) of a socket descriptor, read in place with getsockopt
    and getsockname (no dup: a copy of the host's socket, inherited by a fork at that
    moment, would keep its connection open); None when it cannot be read."""
    global _libc
    import ctypes  # stdlib; only here, only on Linux

    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    facts = []
    for option in (_SO_DOMAIN, _SO_TYPE):
        value, size = ctypes.c_int(0), ctypes.c_uint32(ctypes.sizeof(ctypes.c_int))
        if _libc.getsockopt(fd, _SOL_SOCKET, option, ctypes.byref(value), ctypes.byref(size)):
            return None
        facts.append(value.value)
    address, size = ctypes.create_string_buffer(128), ctypes.c_uint32(128)
    if _libc.getsockname(fd, address, ctypes.byref(size)) or size.value < 4:
        return None
    port = int.from_bytes(address.raw[2:4], "big")  # sin_port and sin6_port sit there
    return facts[0], facts[1], port


def _own_inet_sockets(limit: int = 4096) -> int | None:
    """Linux: bound or connected inet sockets among this process's descriptors (each
    socket once, however many descriptors share it), by readlink, getsockopt and
    getsockname: work in proportion to the process's descriptors, not the machine's
    sockets. None elsewhere, or past ``limit`` sockets (psutil is then the cheaper way)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        names = os.listdir("/proc/self/fd")
        sockets: dict[str, int] = {}
        for index, name in enumerate(names):
            if index & 15 == 15:
                pause_point()  # a server's hundreds of descriptors: a syscall each
            try:
                link = os.readlink(f"/proc/self/fd/{name}")
            except OSError:  # closed meanwhile
                continue
            if link.startswith("socket:"):
                sockets.setdefault(link, int(name))
                if len(sockets) > limit:
                    return None
        count = 0
        for index, fd in enumerate(sockets.values()):
            if index & 7 == 7:
                pause_point()
            facts = _socket_facts(fd)
            # psutil lists what the kernel's tables hold: bound or connected sockets
            if facts is not None and facts[0] in _INET and facts[1] in _INET_TYPES and facts[2]:
                count += 1
        return count
    except Exception:  # no /proc, no ctypes: the caller asks psutil
        return None


class CpuMeter:
    """Process CPU % between successive readings, shared by all callers (psutil's is not)."""

    def __init__(self, process: psutil.Process) -> None:
        self._process = process
        self._lock = threading.Lock()
        self._last = self._read()
        self._value = 0.0

    def _read(self) -> tuple[float, float]:
        try:
            times = self._process.cpu_times()
            return time.monotonic(), times.user + times.system
        except (psutil.Error, OSError):
            return time.monotonic(), 0.0

    def percent(self, min_interval: float = 0.2) -> float:
        """CPU % since the previous reading (100 = one core); cached for ``min_interval``."""
        with self._lock:
            now, cpu = self._read()
            last_t, last_cpu = self._last
            if now - last_t >= min_interval:
                self._value = max(0.0, 100.0 * (cpu - last_cpu) / (now - last_t))
                self._last = (now, cpu)
            return self._value


AGENT_THREAD_PREFIX = "observer-agent"  # every thread the agent starts is named so


STARTING_WAITS = 50  # looks at most for an agent thread's OS id while it starts...
STARTING_WAIT = 0.002  # ...this many seconds apart (the sampler's thread waits, no host's)
_seen_agent_tids: set[int] = set()  # OS ids of agent threads seen, kept while they run


def note_agent_thread(ident: int) -> None:
    """Remember the OS id of the agent's running thread ``ident`` for as long as the OS
    lists it: it is the agent's until it has ended, also after threading let it go."""
    for thread in threading.enumerate():
        if thread.ident == ident and thread.native_id is not None:
            _seen_agent_tids.add(thread.native_id)


def thread_counts(agents: set[int]) -> tuple[int, int] | None:
    """(threads of the process, those of them that are the agent's, by ident) read from
    one listing of the OS's threads (/proc/self/task, Linux; None elsewhere), so a thread
    ending meanwhile is in neither count: two separate reads would count it in one and
    not the other (a woken worker's first load sample showed 0 host threads). A thread
    named as the agent names its own is the agent's too: one registered late or already
    unregistered while still running (a woken worker's waiting thread, on its way out)
    must not be counted as the host's. So must one still starting (its OS id not known
    yet: waited for, briefly) and one that has left threading's list but not yet the
    OS's (remembered since it was noted, note_agent_thread)."""
    try:
        tids = {int(name) for name in os.listdir("/proc/self/task")}
    except (OSError, ValueError):
        return None
    # threading lists a thread before the OS runs it: looked at after the OS's listing
    for _ in range(STARTING_WAITS):
        mine = [t for t in threading.enumerate() if t.ident in agents or _named_agent(t)]
        if all(t.native_id is not None for t in mine):
            break
        time.sleep(STARTING_WAIT)
    native = {t.native_id for t in mine if t.native_id is not None}
    _seen_agent_tids.intersection_update(tids)  # gone from the OS: forgotten
    _seen_agent_tids.update(native & tids)
    return len(tids), len(_seen_agent_tids)


def _named_agent(thread: threading.Thread) -> bool:
    return thread.name.startswith(AGENT_THREAD_PREFIX)


def gc_collections() -> tuple[int, ...]:
    """Collections run so far per generation."""
    try:
        return tuple(int(s.get("collections", 0)) for s in gc.get_stats())
    except Exception:
        return ()


def collect_process(
    process: psutil.Process,
    cpu: CpuMeter,
    *,
    node: str,
    role: str,
    num_tasks: int,
    num_loops: int,
    exposed: tuple[ExposedInfo, ...],
    connections: Throttled[int | None] | None = None,
) -> ProcessInfo:
    """Describe the host process; every psutil probe guarded on its own. ``connections``
    answers the socket count (a fresh count each call without it)."""
    with process.oneshot():
        # our own parent from the kernel at once: psutil's ppid() checks the pid was not
        # reused by making a second Process (~30 us, a fifth of these facts)
        own = process.pid == os.getpid()
        ppid = os.getppid() if own else guarded(process.ppid, os.getppid())
        name = guarded(process.name, "")
        start = guarded(process.create_time, time.time())
        mem = guarded(process.memory_info, None)
        num_threads = guarded(process.num_threads, threading.active_count())
    pause_point()  # each probe below is a few syscalls and some Python: ~0.1-0.5 ms
    num_fds = guarded(process.num_fds, None)  # not on Windows
    pause_point()
    count = connections.get if connections is not None else lambda: connection_count(process)
    num_connections = count()
    pause_point()
    return ProcessInfo(
        node=node,
        pid=os.getpid(),
        ppid=ppid,
        name=name,
        cmdline=own_argv(),
        python_version=platform.python_version(),
        implementation=platform.python_implementation(),
        executable=sys.executable,
        host=socket.gethostname(),
        start_time=start,
        uptime=max(0.0, time.time() - start),
        cpu_percent=cpu.percent(),
        cpu_count=os.cpu_count() or 1,
        rss=mem.rss if mem else 0,
        vms=mem.vms if mem else 0,
        num_threads=num_threads,
        num_fds=num_fds,
        num_connections=num_connections,
        gc_counts=tuple(gc.get_count()),
        gc_collections=gc_collections(),
        agent_version=AGENT_VERSION,
        protocol_version=PROTOCOL_VERSION,
        num_tasks=num_tasks,
        num_loops=num_loops,
        exposed=exposed,
        role=role,
        environ=environ_lines(),
    )


_argv_last: tuple[tuple[Any, ...], tuple[str, ...]] = ((), ())  # (argv, redacted)


def own_argv() -> tuple[str, ...]:
    """This process's command line, redacted; last time's while sys.argv is the same
    (redacting it again was ~3% of a worker's CPU per refresh of its master's tree)."""
    global _argv_last
    try:
        argv = tuple(sys.argv)
        seen, redacted = _argv_last
        if argv == seen:
            return redacted
        redacted = redact_argv(argv)
        _argv_last = (argv, redacted)
        return redacted
    except Exception:
        return redact_argv(())


_environ_last: tuple[tuple[Any, ...], tuple[str, ...]] = ((), ())  # (items, their lines)


def environ_lines() -> tuple[str, ...]:
    """The host's environment as sorted ``NAME=value`` lines, secrets redacted; the lines
    made last time while the environment is the same (redacting it was ~60% of a
    snapshot's process facts, 0.3 ms, paid by every worker at every refresh)."""
    global _environ_last
    try:
        state = compat.environ_state()
        seen, lines = _environ_last
        if state == seen:
            return lines
        env = redact_mapping(dict(os.environ.items()))
        lines = tuple(f"{k}={v[:ENV_VALUE_MAX]}" for k, v in sorted(env.items())[:ENV_MAX])
        _environ_last = (state, lines)
        return lines
    except Exception:
        return ()
