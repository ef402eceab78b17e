"""How a master's workers ended, read before the server reaps them, and who took each
one's place.

The master's server (gunicorn's arbiter, multiprocessing's Pool) reaps its own children
and must see each death itself, so the agent never reaps: one agent thread holds a pidfd
per worker (``os.pidfd_open``, Linux 5.3+) and sleeps in poll() on them. A pidfd turns
readable when its process ends; the thread then reads the zombie's status with
``waitid(P_PIDFD, WEXITED | WNOWAIT)``, which leaves it to be reaped (else from
/proc/PID/stat's exit_code); when the server reaped it first, from what the pidfd
itself kept (PIDFD_GET_INFO, Linux 6.15+). On an older kernel that loses the race the
status is gone, and the exit says so. Workers are found as the metrics find them
(agent.metrics.workers: live children running a worker agent or named by the host),
right after each fork in this process (and a few times in the next 2 s), when an
observer asks, and every RESCAN seconds otherwise; each holds a slot (that module's
Slots), and the worker that later takes a dead one's slot, started after the dead one
ended, is its replacement.

Bounded: MAX_WATCHED pidfds, the last MAX_EXITS exits for KEEP seconds. Idle, the thread
wakes every RESCAN seconds for one read of the master's children list. Fork-safe: a
child closes its copies (abandon) and watches nothing of its parent's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import psutil

from agent import forking
from agent.collect.roles import child_roles
from agent.metrics.workers import Slots, worker_children
from agent.schema import WorkerExit

log = logging.getLogger("agent")

MAX_WATCHED = 256  # workers watched at once; more are not (their exits go unseen)
MAX_EXITS = 64  # exits kept
KEEP = 600.0  # seconds an exit is kept
RESCAN = 5.0  # seconds between looks for new workers while nothing happens
# a replacement is forked after its predecessor was reaped, so after the agent saw it
# end, give or take how late the agent's thread noticed (clock ticks are 10 ms)
REPLACEMENT_SLACK = 0.25
FOLLOW_UP = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)  # seconds after a fork: look for the child
READ_RESCAN = 0.5  # seconds: readers look for replacements at most this often
# an ended worker's status asked at most this many times, this many seconds apart, while
# nothing answers (exit_status): at most ~20 ms, only for a status that would be lost
STATUS_TRIES = 10
STATUS_PAUSE = 0.002


def unsupported() -> str:
    """Why exits cannot be watched here, or "" when they can."""
    if not hasattr(os, "pidfd_open") or not hasattr(select, "poll"):
        return "exit statuses need Linux 5.3+ (pidfd_open); workers show as exited only"
    return ""


@dataclass
class _Exit:
    pid: int
    name: str
    slot: int
    how: str
    code: int | None
    signal: int | None
    time: float
    ended: float  # CLOCK_BOOTTIME when seen: the clock a process's start time counts in
    replaced_by: int = 0

    def record(self) -> WorkerExit:
        return WorkerExit(
            self.pid,
            self.name,
            self.slot,
            self.how,
            self.code,
            self.signal,
            self.time,
            self.replaced_by,
        )


@dataclass
class _Watched:
    fd: int
    created: float
    name: str
    slot: int
    named: bool  # by the host (a role's label), not only by its process name


class ExitWatch:
    """The exits of this process's workers (start() in a master, stop() with its agent)."""

    def __init__(
        self,
        process: psutil.Process | None = None,
        rescan: float = RESCAN,
        on_thread: Callable[[int], None] = lambda ident: None,
    ) -> None:
        """``on_thread(ident)``: told the watch thread's ident (the agent's own threads
        are listed apart from the host's)."""
        self._on_thread = on_thread
        self._process = process or psutil.Process()
        self._pid = os.getpid()
        self._rescan_every = rescan
        self._lock = threading.Lock()
        self._slots = Slots(MAX_WATCHED)
        self._watched: dict[int, _Watched] = {}
        self._exits: deque[_Exit] = deque(maxlen=MAX_EXITS)
        self._thread: threading.Thread | None = None
        self._closed = False
        self._read_scan = -READ_RESCAN
        self.why_not = unsupported()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self.why_not or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="observer-agent-exits", daemon=True)
        self._thread.start()
        forking.on_parent(self.forked)

    def forked(self) -> None:
        """A fork in this process: look for the new worker now (never blocks)."""
        if not self._closed and os.getpid() == self._pid:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"f")

    def stop(self) -> None:
        """End the thread and close every pidfd (reaps nothing)."""
        self._closed = True
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)
        self._close_fds()

    def abandon(self) -> None:
        """In a forked child: close the child's copies; the parent's thread goes on. The
        lock is not taken: the parent's thread may have held it at the fork, and the
        child, which has no other thread, would wait for it forever."""
        self._closed = True
        self._lock = threading.Lock()
        self._close_fds()

    def _close_fds(self) -> None:
        with self._lock:
            fds = [w.fd for w in self._watched.values()]
            self._watched.clear()
        for fd in [*fds, self._wake_r, self._wake_w]:
            with contextlib.suppress(OSError):
                os.close(fd)

    # ------------------------------------------------------------ reads

    def recent(self, fresh: bool = False) -> tuple[WorkerExit, ...]:
        """The exits of the last KEEP seconds, oldest first, replacements filled in as of
        now: looks for new workers first when ``fresh`` (the caller just listed them:
        each is watched from here on), else when there are exits, at most every
        READ_RESCAN s (a replacement may have just started)."""
        if self.why_not or self._closed:
            return ()
        with self._lock:
            exits = bool(self._exits)
        moment = time.monotonic()
        self._note_ended()  # before a rescan, which would miss a dead one's slot
        if fresh or (exits and moment - self._read_scan >= READ_RESCAN):
            self._read_scan = moment
            self.rescan()
        cutoff = time.time() - KEEP
        with self._lock:
            return tuple(e.record() for e in self._exits if e.time >= cutoff)

    def _note_ended(self) -> None:
        """Note now the exits of watched workers that ended but the thread has not seen
        yet (it may not have run since): a reader that listed the workers before it asks
        for exits finds every one missing from that list among them."""
        with self._lock:
            watched = [(w.fd, pid) for pid, w in self._watched.items()]
        if not watched:
            return
        poller = select.poll()
        for fd, _pid in watched:
            poller.register(fd, select.POLLIN)
        try:
            ready = {fd for fd, _events in poller.poll(0)}
        except OSError:
            return
        for fd, pid in watched:
            if fd in ready:  # a fd the thread closed meanwhile: its pid is gone, a no-op
                self._ended(pid)

    # ------------------------------------------------------------ the thread

    def _run(self) -> None:
        try:
            self._on_thread(threading.get_ident())
            poller = select.poll()
            poller.register(self._wake_r, select.POLLIN)
            polled: dict[int, int] = {}  # fd -> pid
            follow: list[float] = []  # when to look again after a fork (its child may
            # not be a worker yet: its agent registers, multiprocessing lists it, a moment
            # later)
            while not self._closed:
                self.rescan()
                with self._lock:
                    now = {w.fd: pid for pid, w in self._watched.items()}
                for fd in set(polled) - set(now):
                    with contextlib.suppress(KeyError, ValueError, OSError):
                        poller.unregister(fd)
                for fd in set(now) - set(polled):
                    poller.register(fd, select.POLLIN)
                polled = now
                moment = time.monotonic()
                follow = [at for at in follow if at > moment]
                wait = min([self._rescan_every, *(at - moment for at in follow)])
                for fd, _events in poller.poll(max(wait, 0.0) * 1000):
                    if fd == self._wake_r:
                        with contextlib.suppress(OSError):
                            woke = os.read(self._wake_r, 512)
                        if b"f" in woke:
                            follow = [time.monotonic() + delay for delay in FOLLOW_UP]
                    elif fd in polled:
                        poller.unregister(fd)
                        self._ended(polled.pop(fd))
        except Exception:
            if not self._closed:
                log.warning("runtime-observer agent: the worker exit watch ended", exc_info=True)

    def rescan(self) -> None:
        """Watch workers not watched yet; free the slots of the dead; name replacements."""
        if self._closed:
            return
        try:
            live = worker_children(self._process)
        except Exception:
            log.debug("runtime-observer agent: listing workers failed", exc_info=True)
            return
        names: dict[int, str] | None = None
        with self._lock:
            if self._closed:
                return
            slots, _beyond = self._slots.update((pid, created) for pid, created, *_ in live)
            added = False
            for pid, created, proc, *_ in live:
                if pid in self._watched or len(self._watched) >= MAX_WATCHED:
                    continue
                if names is None:
                    names = child_roles()
                fd = _pidfd(pid, created, proc)
                if fd is not None:
                    role = names.get(pid)
                    name = role or _name(proc)
                    self._watched[pid] = _Watched(fd, created, name, slots.get(pid, -1), bool(role))
                    added = True
            unnamed = [w for w in self._watched.values() if not w.named]
            if unnamed and names is None:  # a host names its child just after the fork
                names = child_roles()
            for pid, watched in self._watched.items():
                role = None if watched.named or names is None else names.get(pid)
                if role:
                    watched.name, watched.named = role, True
            boot = _boot_time() if any(not e.replaced_by for e in self._exits) else 0.0
            dead = {e.pid for e in self._exits}
            for gone in self._exits:
                if gone.replaced_by or gone.slot < 0:
                    continue
                for pid, slot in slots.items():
                    if pid in dead:  # a dead worker not reaped yet still holds its slot
                        continue
                    started = self._slots.by_pid[pid][1] - boot  # in CLOCK_BOOTTIME
                    if slot == gone.slot and started >= gone.ended - REPLACEMENT_SLACK:
                        gone.replaced_by = pid
                        break
        if added:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"r")  # the thread polls the new pidfds too

    def _ended(self, pid: int) -> None:
        """A watched worker's pidfd turned readable: it ended. Note how, reap nothing."""
        with self._lock:
            watched = self._watched.pop(pid, None)
        if watched is None:
            return
        try:
            how, code, sig = exit_status(watched.fd, pid)
        finally:
            with contextlib.suppress(OSError):
                os.close(watched.fd)
        ended = time.clock_gettime(time.CLOCK_BOOTTIME)
        with self._lock:
            self._exits.append(
                _Exit(pid, watched.name, watched.slot, how, code, sig, time.time(), ended)
            )


def _boot_time() -> float:
    """psutil's boot time, which its process start times count from."""
    try:
        return float(psutil.boot_time())
    except Exception:
        return 0.0


def _pidfd(pid: int, created: float, proc: psutil.Process) -> int | None:
    """A pidfd of the worker ``pid`` started at ``created`` (not of a process that took
    its pid since), or None."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return None
    try:
        if psutil.Process(pid).create_time() == created:
            return fd
    except psutil.Error:
        pass
    os.close(fd)
    return None


def _name(proc: psutil.Process) -> str:
    try:
        return proc.name()
    except psutil.Error:
        return "?"


def exit_status(pidfd: int, pid: int) -> tuple[str, int | None, int | None]:
    """How the ended child behind ``pidfd`` ended, without reaping it: ("signal 9", None,
    9), ("exit 3", 3, None), or ("", None, None) when the status is gone.

    Before the server reaps it: waitid(WNOWAIT) on the pidfd (Linux 5.4+), else the
    zombie's /proc/PID/stat; after: the pidfd's own record of it (PIDFD_GET_INFO with
    PIDFD_INFO_EXIT, Linux 6.15+), which outlives the reaping.

    Asked again a few times, STATUS_PAUSE apart, while none of them answers: a server
    reaping the child at that instant has taken it from waitid and /proc (state X) before
    the kernel records its exit for the pidfd (a CI run showed one SIGKILLed worker as
    "exited" with no signal, the test's master reaping it at once)."""
    for _ in range(STATUS_TRIES - 1):
        found = _exit_status_now(pidfd, pid)
        if found[0]:
            return found
        time.sleep(STATUS_PAUSE)
    return _exit_status_now(pidfd, pid)


def _exit_status_now(pidfd: int, pid: int) -> tuple[str, int | None, int | None]:
    if hasattr(os, "P_PIDFD"):
        try:
            seen = os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOWAIT | os.WNOHANG)
        except OSError:  # ECHILD: reaped already (or not our child)
            seen = None
        if seen is not None:
            if seen.si_code == os.CLD_EXITED:
                return f"exit {seen.si_status}", seen.si_status, None
            if seen.si_code in (os.CLD_KILLED, os.CLD_DUMPED):
                return f"signal {seen.si_status}", None, seen.si_status
    status = _status_from_proc(pid)
    if status is None:
        status = _status_from_pidfd_info(pidfd)
    return _described(status) if status is not None else ("", None, None)


PIDFD_INFO_EXIT = 1 << 3
PIDFD_INFO_SIZE = 64  # struct pidfd_info up to exit_code (PIDFD_INFO_SIZE_VER0)
# _IOWR(PIDFS_IOCTL_MAGIC 0xFF, 11, struct pidfd_info)
PIDFD_GET_INFO = (3 << 30) | (PIDFD_INFO_SIZE << 16) | (0xFF << 8) | 11


def _status_from_pidfd_info(pidfd: int) -> int | None:
    """The reaped child's wait status kept by its pidfd (Linux 6.15+), or None."""
    try:
        import fcntl

        buf = bytearray(PIDFD_INFO_SIZE)
        struct.pack_into("=Q", buf, 0, PIDFD_INFO_EXIT)
        fcntl.ioctl(pidfd, PIDFD_GET_INFO, buf, True)
        mask = struct.unpack_from("=Q", buf, 0)[0]
        if not mask & PIDFD_INFO_EXIT:
            return None
        return int(struct.unpack_from("=i", buf, 60)[0])
    except (OSError, ImportError, struct.error):  # an older kernel: ENOTTY or EINVAL
        return None


def _status_from_proc(pid: int) -> int | None:
    """The zombie's wait status (exit_code, field 52 of /proc/PID/stat, Linux 3.5+), if
    it is still a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read(4096).rpartition(b")")[2].split()
        if fields[0] != b"Z" or len(fields) < 50:
            return None
        return int(fields[49])
    except (OSError, ValueError, IndexError):
        return None


def _described(status: int) -> tuple[str, int | None, int | None]:
    """A wait status as ("signal 9", None, 9) or ("exit 3", 3, None)."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return f"signal {sig}", None, sig
    code = os.WEXITSTATUS(status)
    return f"exit {code}", code, None
