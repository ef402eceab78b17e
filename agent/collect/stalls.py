"""Stall catcher: one watchdog thread for every event loop, always on, nearly free.

Every ``threshold / 2`` the watchdog posts one heartbeat (a no-op ``call_soon_threadsafe``)
to each running loop that has none outstanding. A heartbeat still waiting ``threshold``
after it was posted means the loop is stalled: the watchdog reads the loop thread's stack
at once (``sys._current_frames``) and again every ``threshold`` while the stall lasts,
keeping only the frames every capture shares (the blocking stack: the frame that did not
move is the culprit). When the heartbeat finally runs, a StallEvent goes into a bounded
ring: loop, start, duration, blocking stack, the task and the callback that were running.

When the watchdog's own wake-up is late, some thread held the GIL (or the process was not
scheduled): the watchdog then reads every thread's stack and CPU clock, and names the
thread that used the CPU meanwhile as the GIL holder; its stack is the blocking stack.

A loop whose thread stands in the loop's own wait for I/O runs nothing: a heartbeat would
run at once, so none is posted (no write to its self-pipe, no wake-up of the host's
thread) and it counts as one that came back at once. Where Linux tells (the thread's
``/proc/self/task/TID/syscall``: an epoll wait on the loop's own selector; not a sleep, a
lock or another selector a callback blocks in), that costs one read of a few bytes, and no
frame of any thread is made (``sys._current_frames`` would make one for every thread, at
every wake-up, and keep their locals alive past their return).

Cost with no stall: one wake-up of the watchdog every ``threshold / 2``, one heartbeat
per loop not idle in its wait for I/O then, and one read of the process's CPU clock; the
threads' stacks are read only when a wake-up is late or a heartbeat overdue, and every
thread's CPU clock only when
the process used more than STALE_CPU since they were last read (the baseline a late
wake-up measures from: it then counts at most STALE_CPU too much to any thread). Nothing
here runs on the host's loops but the heartbeat, and nothing raises into the host.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import os
import sys
import sysconfig
import threading
import time
import types
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from agent import compat
from agent.collect.source import source_line
from agent.compat import code_name
from agent.schema import FrameInfo, StallEvent, StallList, StallThread

log = logging.getLogger("agent")

DEFAULT_THRESHOLD = 0.1  # seconds a heartbeat may be late before it is a stall
MIN_THRESHOLD = 0.01
CAPACITY = 200  # stall events kept
LOOP_REFRESH = 2.0  # seconds between looking for new loops and threads
STACK_FRAMES = 100  # innermost frames of a loop thread kept per capture
MAX_OTHER_THREADS = 8  # other threads' stacks kept per stall (the busiest first)
MAX_OTHER_FRAMES = 30  # innermost frames kept of each of those
LATE_AT_LEAST = 0.02  # the watchdog's wake-up is "late" past max(this, threshold / 2)
HOLDER_SHARE = 0.5  # the GIL holder used this share of the late time on CPU (or threshold/2)
MAX_TOTALS = 64  # loops whose stalls are counted apart (the metrics' loop label); then "other"
OTHER = "other"
STALE_CPU = 0.002  # process CPU seconds after which the threads' CPU baselines are re-read

LoopsFn = Callable[[], Iterable[tuple[Any, "int | None", str]]]
Stack = list[tuple[types.FrameType, int]]  # (frame, the line it stood on), outermost first


def read_stack(frame: types.FrameType | None, limit: int = STACK_FRAMES) -> Stack:
    """A thread's frames and their lines as they are now, outermost first (the innermost
    ``limit``). Read at once: a frame object keeps changing while its thread runs on."""
    stack = []
    while frame is not None and len(stack) < limit:
        stack.append((frame, frame.f_lineno or 0))
        frame = frame.f_back
    stack.reverse()
    return stack


class _Stall:
    """A stall in progress on one loop: the frames common to its captures so far."""

    __slots__ = (
        "captures",
        "common",
        "handle",
        "holder",
        "late",
        "lines",
        "next_capture",
        "running",
        "seen",
        "start_mono",
        "start_wall",
        "task",
        "threads",
    )

    def __init__(self, start_mono: float, start_wall: float) -> None:
        self.start_mono = start_mono
        self.start_wall = start_wall
        self.captures = 0
        self.common: list[types.FrameType] = []  # outermost first, the frames themselves
        self.lines: list[collections.Counter[int]] = []  # lines seen per common frame
        self.next_capture = 0.0
        self.running: types.FrameType | None = None  # the Handle._run frame first seen
        self.seen = start_mono  # monotonic time of the latest capture
        self.task = ""
        self.handle = ""
        self.late = 0.0  # the latest the watchdog woke during this stall
        self.holder: tuple[StallThread, ...] = ()  # the GIL holder's record, if one was seen
        self.threads: tuple[StallThread, ...] = ()

    def merge(self, stack: Stack) -> None:
        """Keep the frames this capture shares with every earlier one (the same frame
        objects: the calls that did not return); count the line each stood on."""
        if self.captures == 0:
            self.common = [frame for frame, _line in stack]
            self.lines = [collections.Counter((line,)) for _frame, line in stack]
        else:
            keep = 0
            for old, (new, _line) in zip(self.common, stack, strict=False):
                if old is not new:
                    break
                keep += 1
            del self.common[keep:]
            del self.lines[keep:]
            for (_frame, line), counter in zip(stack, self.lines, strict=False):
                counter[line] += 1
        self.captures += 1


class _Watched:
    """One loop under watch: its heartbeat and the stall it may be in."""

    __slots__ = (
        "arrived",
        "epfd",
        "ident",
        "last_end",
        "loop",
        "name",
        "probe",
        "probe_of",
        "sent",
        "sent_wall",
        "stall",
        "token",
    )

    def __init__(self, loop: Any, ident: int | None, name: str) -> None:
        self.loop = weakref.ref(loop)
        self.ident = ident
        self.name = name
        self.sent: float | None = None  # monotonic time the pending heartbeat was posted
        self.sent_wall = 0.0
        self.arrived: float | None = None
        self.token = 0
        self.stall: _Stall | None = None
        self.last_end = 0.0  # monotonic end of the last stall recorded: none overlaps it
        # the loop thread's syscall file (compat.thread_syscall_file), the (pid, native id)
        # it was opened for, and the descriptor the loop waits on for I/O: see _idle
        self.probe: int | None = None
        self.probe_of: tuple[int, int] | None = None
        self.epfd: int | None = None

    def close_probe(self) -> None:
        probe, self.probe, self.probe_of = self.probe, None, None
        if probe is not None:
            with contextlib.suppress(OSError):
                os.close(probe)

    def beat(self, token: int) -> None:
        """The heartbeat, run by the loop itself: one attribute write, nothing else."""
        if token == self.token:
            self.arrived = time.monotonic()


class StallWatch:
    """The watchdog thread and the ring of stall events it fills; thread-safe to read."""

    def __init__(
        self,
        loops: LoopsFn,
        *,
        threshold: float = DEFAULT_THRESHOLD,
        capacity: int = CAPACITY,
        agent_idents: Callable[[], set[int]] = set,
        on_thread: Callable[[int], None] = lambda _ident: None,
    ) -> None:
        self.threshold = max(MIN_THRESHOLD, float(threshold)) if threshold > 0 else 0.0
        self.capacity = capacity
        self._loops = loops
        self._agent_idents = agent_idents
        self._on_thread = on_thread
        self._ring: collections.deque[StallEvent] = collections.deque(maxlen=capacity)
        self._lock = threading.Lock()
        self._serial = 0
        self._watched: dict[int, _Watched] = {}
        self._threads: list[threading.Thread] = []
        self._cpu: dict[int, float] = {}  # native id -> CPU seconds at the last wake-up
        self._cpu_process = -1.0  # the process's CPU seconds when ``_cpu`` was read
        self._clocks = compat.thread_cpu_time(threading.get_native_id()) is not None
        self._asleep = threading.Lock()  # held while running; stop() releases it
        self._asleep.acquire()
        self._thread: threading.Thread | None = None
        self._errors = 0
        self.wakeups = 0  # for the cost check: wake-ups since start
        self.beats = 0  # heartbeats posted, or found needless (loop idle), since start
        self.posted = 0  # heartbeats posted to a loop since start
        # loop name -> [stalls, seconds] since the loop was first watched (the metrics'
        # counters): never lowered, dropped when the loop is gone, MAX_TOTALS at most
        self._totals: dict[str, list[float]] = {}

    @property
    def enabled(self) -> bool:
        return self.threshold > 0

    @property
    def period(self) -> float:
        return self.threshold / 2

    def start(self) -> None:
        if not self.enabled or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="observer-agent-stalls", daemon=True)
        self._thread.start()
        with contextlib.suppress(Exception):  # now, not in the thread: the first load
            self._on_thread(self._thread.ident)  # sample must not count it as the host's

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError):  # already released
            self._asleep.release()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2.0)
            if not thread.is_alive():
                self.abandon()

    def abandon(self) -> None:
        """Close the loop threads' syscall files (after stop(), or in a forked child, whose
        copies read the parent's threads; the watchdog thread did not come along)."""
        for watched in list(self._watched.values()):
            watched.close_probe()

    # ------------------------------------------------------------ reading

    def stalls(self, since: float = 0.0) -> StallList:
        """The stall events that ended after wall-clock ``since``, oldest first."""
        with self._lock:
            events = tuple(e for e in self._ring if e.start + e.duration > since)
            total = self._serial
        return StallList(
            threshold=self.threshold,
            capacity=self.capacity,
            total=total,
            time=time.time(),
            stalls=events,
        )

    def totals(self) -> dict[str, tuple[int, float]]:
        """Stalls and their seconds per watched loop (by name) since it was first watched,
        zero for a loop that never stalled; loops beyond MAX_TOTALS are summed as "other"."""
        with self._lock:
            return {name: (int(n), secs) for name, (n, secs) in self._totals.items()}

    def _count(self, name: str, duration: float) -> None:
        with self._lock:
            total = self._totals.get(name)
            if total is None:
                total = self._totals.get(OTHER)
                if total is None:
                    total = self._totals[OTHER] = [0, 0.0]
            total[0] += 1
            total[1] += duration

    def _watch(self, key: int, watched: _Watched) -> None:
        self._watched[key] = watched
        with self._lock:
            if watched.name not in self._totals and len(self._totals) < MAX_TOTALS:
                self._totals[watched.name] = [0, 0.0]

    def _unwatch(self, key: int) -> None:
        watched = self._watched.pop(key)
        watched.close_probe()
        name = watched.name
        if any(w.name == name for w in self._watched.values()):
            return
        with self._lock:
            self._totals.pop(name, None)

    # ------------------------------------------------------------ the thread

    def _run(self) -> None:
        with contextlib.suppress(Exception):
            self._on_thread(threading.get_ident())
        due = time.monotonic()
        next_refresh = 0.0
        asleep = self._asleep
        while True:
            # a C-level wait returning straight here: woken late, the stacks are read before
            # any other Python line runs, while the thread that held the GIL still stands
            # where it held it (it waits for the GIL back until this thread let go of it)
            if asleep.acquire(True, max(0.0, due - time.monotonic())):
                return  # stop() released it
            now = time.monotonic()  # a C call: the GIL stays with this thread till the stacks
            late = max(0.0, now - due)
            frames = stacks = None
            if late > max(LATE_AT_LEAST, self.period):  # every stack, before anything else
                frames = sys._current_frames()
                stacks = {ident: read_stack(f, MAX_OTHER_FRAMES) for ident, f in frames.items()}
            cpu = self._read_cpu(stacks is not None)  # at the wake-up: the CPU used up to it
            self.wakeups += 1
            try:
                self._tick(now, late, frames, stacks, cpu)
                if now >= next_refresh:
                    self._refresh()
                    next_refresh = now + LOOP_REFRESH
            except Exception:  # contained: the watchdog must outlive any odd loop or frame
                self._errors += 1
                if self._errors <= 3:
                    log.exception("runtime-observer agent: stall watchdog failed")
            del frames, stacks
            due = now + self.period

    def _refresh(self) -> None:
        """Look for loops started or ended since last time, and for the process's threads."""
        seen = set()
        for loop, ident, name in self._loops():
            key = id(loop)
            seen.add(key)
            watched = self._watched.get(key)
            if watched is None or watched.loop() is not loop:
                if watched is not None:
                    self._unwatch(key)
                self._watch(key, _Watched(loop, ident, name))
            elif ident is not None:
                watched.ident = ident
        for key in list(self._watched):
            if key not in seen and self._watched[key].stall is None:
                self._unwatch(key)
        self._threads = threading.enumerate()
        natives = {t.ident: t.native_id for t in self._threads if t.ident is not None}
        pid = os.getpid()
        for watched in self._watched.values():
            native = natives.get(watched.ident) if watched.ident is not None else None
            if native is None or watched.probe_of != (pid, native):
                watched.close_probe()
                if native is not None:
                    watched.probe = compat.thread_syscall_file(native)
                    watched.probe_of = (pid, native)
                loop = watched.loop()
                watched.epfd = compat.loop_selector_fd(loop) if loop is not None else None
        self._cpu_process = -1.0  # the threads new among them get their baseline at once

    def _tick(
        self,
        now: float,
        late: float,
        frames: dict[int, types.FrameType] | None,
        stacks: dict[int, Stack] | None,
        cpu: dict[int, float],
    ) -> None:
        """One wake-up: finish stalls whose heartbeat came back, capture the ongoing ones,
        post a heartbeat to every loop that has none outstanding. ``frames``: every thread's
        innermost frame, taken the moment a late wake-up returned (else read here when a
        capture is due); ``stacks``: every thread's
        stack read then too, when the wake-up was late; ``cpu``: each thread's CPU clock then
        (the previous wake-up's readings are the baseline)."""
        threshold = self.threshold
        others: tuple[tuple[StallThread, ...], StallThread | None] | None = None
        if stacks is not None:
            others = self._others(late, stacks, cpu)
        self._cpu = cpu
        # a thread held the GIL past the threshold: no loop could run meanwhile, whether or
        # not its heartbeat was already out (the loop's own thread, in a long C call, too)
        holder = others[1] if others is not None and late >= threshold else None
        for key, watched in list(self._watched.items()):
            loop = watched.loop()
            running = loop is not None and _running(loop)
            if watched.sent is not None and watched.arrived is not None:
                lag = watched.arrived - watched.sent
                own = holder is not None and holder.ident == watched.ident and loop is not None
                if watched.stall is None and lag >= threshold and others is not None:
                    # the loop ran again before the watchdog could look: only the late
                    # wake-up tells what held the GIL
                    watched.stall = _Stall(watched.sent, watched.sent_wall)
                    self._note_others(watched.stall, others, late)
                    if own and stacks is not None:
                        self._name_running(watched.stall, loop, stacks.get(watched.ident, []))
                if watched.stall is not None:
                    self._finish(watched, lag)
                begun = max(now - late, watched.last_end)
                if holder is not None and others is not None and now - begun >= threshold:
                    # the heartbeat ran before this wake-up was due, and then a thread held
                    # the GIL all along: the loop could not run either
                    watched.stall = _Stall(begun, time.time() - (now - begun))
                    self._note_others(watched.stall, others, late)
                    if own and stacks is not None:
                        self._name_running(watched.stall, loop, stacks.get(watched.ident, []))
                    self._finish(watched, now - begun)
                watched.sent = watched.arrived = None
            if not running:
                if watched.stall is not None and watched.sent is not None:
                    self._finish(watched, now - watched.sent)
                watched.sent = watched.arrived = None
                if loop is None:
                    self._unwatch(key)
                continue
            if watched.sent is None:
                watched.token += 1
                watched.sent, watched.sent_wall = now, time.time()
                if self._idle(watched):
                    watched.arrived = now  # it runs nothing: as if the heartbeat ran at once
                    self.beats += 1
                    continue
                try:
                    loop.call_soon_threadsafe(watched.beat, watched.token)
                    self.beats += 1
                    self.posted += 1
                except Exception:  # closed meanwhile
                    watched.sent = None
                continue
            if now - watched.sent < threshold * 0.98:
                continue
            stall = watched.stall
            if stall is None:
                stall = watched.stall = _Stall(watched.sent, watched.sent_wall)
            elif now < stall.next_capture:
                continue
            ident = watched.ident
            if stacks is not None and ident in stacks:  # read when a late wake-up returned
                stack = stacks[ident]
            else:
                if frames is None:
                    frames = sys._current_frames()
                stack = read_stack(frames.get(ident) if ident is not None else None)
            handle_frame = _handle_frame(stack)
            if stall.captures and handle_frame is not stall.running:
                # the loop moved on to another callback that blocks as well: the first one
                # ended after it was last seen, the next one began before it was first seen
                self._finish(watched, stall.seen - stall.start_mono)
                stall = watched.stall = _Stall(now, time.time())
            self._capture(loop, stall, stack, handle_frame, now)
            stall.next_capture = now + threshold * 0.98
            if others is not None:
                self._note_others(stall, others, late)

    @staticmethod
    def _idle(watched: _Watched) -> bool:
        """The loop's thread stands in the loop's own wait for I/O (see the module's
        docstring); False when that cannot be told."""
        probe, epfd = watched.probe, watched.epfd
        return probe is not None and epfd is not None and compat.thread_waits_on(probe, epfd)

    # ------------------------------------------------------------ captures

    def _capture(self, loop: Any, stall: _Stall, stack: Stack, running: Any, now: float) -> None:
        """Add one read of the loop thread's stack to its stall (the first also names the
        task and the callback)."""
        stall.seen = now
        if stall.captures == 0:
            stall.running = running
            self._name_running(stall, loop, stack)
        stall.merge(stack)

    def _name_running(self, stall: _Stall, loop: Any, stack: Stack) -> None:
        """The task whose step the loop runs, and the callback on its stack."""
        task = compat.current_task(loop)
        if task is not None:  # named, not registered: the task table is the listings' own
            try:
                stall.task = f"{task.get_name()} ({compat.coroutine_name(task.get_coro())})"
            except Exception:
                stall.task = "?"
        stall.handle = _handle_text(stack)

    def _others(
        self, late: float, stacks: dict[int, Stack], cpu_now: dict[int, float]
    ) -> tuple[tuple[StallThread, ...], StallThread | None]:
        """Every other thread's stack and CPU use since the last wake-up (the watchdog woke
        ``late``), and the one that used the CPU meanwhile: the GIL holder, if any."""
        skip = self._agent_idents() | {threading.get_ident()}
        records = []
        holder: StallThread | None = None
        for thread in threading.enumerate():  # a thread started since the last refresh too
            ident = thread.ident
            if ident is None or ident in skip or ident not in stacks:
                continue
            native = getattr(thread, "native_id", None)
            used = cpu_now.get(native) if native is not None else None
            if used is None:  # a thread started since the last refresh
                used = compat.thread_cpu_time(native)
            cpu = None
            if used is not None and native is not None:
                cpu = used - self._cpu.get(native, 0.0)
            record = StallThread(
                name=str(thread.name),
                ident=ident,
                cpu=cpu,
                frames=tuple(_frame_info(i, f, line) for i, (f, line) in enumerate(stacks[ident])),
            )
            records.append(record)
            busy = cpu is not None and cpu >= min(HOLDER_SHARE * late, self.threshold / 2)
            if busy and (holder is None or (holder.cpu or 0.0) < (cpu or 0.0)):
                holder = record
        records.sort(key=lambda r: -(r.cpu or 0.0))
        return tuple(records[:MAX_OTHER_THREADS]), holder

    @staticmethod
    def _note_others(
        stall: _Stall, others: tuple[tuple[StallThread, ...], StallThread | None], late: float
    ) -> None:
        """Keep the other threads seen at the latest wake-up of this stall."""
        if late < stall.late:
            return
        stall.late = late
        stall.threads, holder = others
        stall.holder = (holder,) if holder is not None else ()

    def _read_cpu(self, now: bool) -> dict[int, float]:
        """Every known thread's CPU clock, so a late wake-up can tell who used the CPU
        since the wake-up before (Linux; elsewhere nothing, and no thread is named): read
        afresh when ``now`` (a late wake-up) or when the process used more than STALE_CPU
        since the last reading, else the last reading (one clock read instead of one a
        thread: no thread can have used more than STALE_CPU since)."""
        cpu: dict[int, float] = {}
        if not self._clocks:
            return cpu
        process = time.process_time()
        if not now and 0.0 <= process - self._cpu_process <= STALE_CPU:
            return self._cpu
        self._cpu_process = process
        for thread in self._threads:
            native = getattr(thread, "native_id", None)
            value = compat.thread_cpu_time(native)
            if value is not None and native is not None:
                cpu[native] = value
        return cpu

    # ------------------------------------------------------------ events

    def _finish(self, watched: _Watched, duration: float) -> None:
        """Turn a stall into its event and put it in the ring."""
        stall = watched.stall
        watched.stall = None
        if stall is None:
            return
        watched.last_end = max(watched.last_end, stall.start_mono + max(0.0, duration))
        loop_thread = watched.ident
        holder = stall.holder[0] if stall.holder else None
        moved_on = False
        if holder is not None and (holder.ident != loop_thread or not stall.captures):
            frames = holder.frames  # as it stood when the watchdog could run again
            gil = holder.name if holder.ident != loop_thread else ""
            moved_on = waiting(frames)  # it let go of the GIL and went on before we looked
        else:
            frames = tuple(
                _frame_info(i, frame, counter.most_common(1)[0][0])
                for i, (frame, counter) in enumerate(zip(stall.common, stall.lines, strict=True))
            )
            gil = ""
        if moved_on:
            function, file, line, source = "(moved on before the watchdog could look)", "", 0, ""
        elif frames:
            culprit = culprit_frame(frames)
            function, file, line, source = (
                culprit.function,
                culprit.file,
                culprit.line,
                culprit.source,
            )
        elif stall.captures:
            function, file, line, source = "(no common frame)", "", 0, ""
        else:
            function, file, line, source = "(not captured)", "", 0, ""
        with self._lock:
            self._serial += 1
            serial = self._serial
        event = StallEvent(
            serial=serial,
            loop=watched.name,
            thread=_thread_name(loop_thread),
            start=stall.start_wall,
            duration=max(0.0, duration),
            captures=stall.captures,
            function=function,
            file=file,
            line=line,
            source=source,
            frames=frames,
            task=stall.task,
            handle=stall.handle,
            gil_elsewhere=bool(gil),
            gil_thread=gil,
            late=stall.late,
            threads=tuple(t for t in stall.threads if t.ident != loop_thread),
        )
        stall.common = []
        with self._lock:
            self._ring.append(event)
        self._count(watched.name, event.duration)


_STDLIB = tuple(
    {
        os.path.join(path, "")
        for name in ("stdlib", "platstdlib")
        if (place := sysconfig.get_path(name))
        for path in (place, os.path.realpath(place))
    }
)
_THIRD_PARTY = (os.sep + "site-packages" + os.sep, os.sep + "dist-packages" + os.sep)


def in_stdlib(path: str) -> bool:
    """True for a file of the standard library (not a package installed next to it)."""
    return path.startswith(_STDLIB) and not any(part in path for part in _THIRD_PARTY)


def culprit_frame(frames: tuple[FrameInfo, ...]) -> FrameInfo:
    """The frame a stall is blamed on: the innermost one outside the standard library (the
    host's line that called ``re.match`` or ``time.sleep``), else the innermost."""
    for frame in reversed(frames):
        if frame.file and not in_stdlib(frame.file):
            return frame
    return frames[-1]


_WAITS = {
    "threading.py": ("wait", "acquire", "join", "_wait_for_tstate_lock"),
    "selectors.py": ("select",),
    "queue.py": ("get", "put"),
}


def waiting(frames: tuple[FrameInfo, ...]) -> bool:
    """True when a stack ends in the standard library's waits (a lock, a condition, a
    queue, a selector): the thread is idle now, so where it stands says nothing about
    what it did while it held the GIL."""
    if not frames:
        return False
    top = frames[-1]
    names = _WAITS.get(os.path.basename(top.file))
    return bool(names) and in_stdlib(top.file) and top.function.rsplit(".", 1)[-1] in names


def _running(loop: Any) -> bool:
    try:
        return bool(loop.is_running()) and not loop.is_closed()
    except Exception:
        return False


def _frame_info(index: int, frame: types.FrameType, line: int) -> FrameInfo:
    """A FrameInfo for ``frame`` standing on ``line``: the source line is redacted, and
    remembered as reported (a viewer may read the source around it)."""
    code = frame.f_code
    return FrameInfo(
        index, code_name(code), code.co_filename, line, source_line(code.co_filename, line)
    )


def _thread_name(ident: int | None) -> str:
    for thread in threading.enumerate():
        if thread.ident == ident:
            return str(thread.name)
    return "" if ident is None else str(ident)


def _handle_frame(stack: Stack) -> types.FrameType | None:
    """The innermost ``Handle._run`` frame on a loop thread's stack: one per callback run."""
    for frame, _line in reversed(stack):
        if compat.running_handle(frame) is not None:
            return frame
    return None


def _handle_text(stack: Stack) -> str:
    """What the loop was running: the callback of the innermost Handle on its stack."""
    for frame, _line in reversed(stack):
        handle = compat.running_handle(frame)
        if handle is None:
            continue
        return describe_callback(compat.handle_callback(handle))
    return ""


def describe_callback(callback: Any, depth: int = 0) -> str:
    """A callback named from C-level slots only (no host repr or __getattr__ runs): a
    function as 'qualname (file:line)', a task's step as 'task step'."""
    kind = type(callback)
    if callback is None:
        return ""
    if kind is types.MethodType:
        owner = type(callback.__self__)
        func = callback.__func__
        if type(func) is types.FunctionType and func.__name__.endswith("__step"):
            return "task step"
        inner = describe_callback(func, depth + 1)
        return inner or f"method of {owner.__qualname__}"
    if kind is types.FunctionType:
        code = callback.__code__
        return f"{code_name(code)} ({code.co_filename}:{code.co_firstlineno})"
    if kind is types.BuiltinFunctionType:
        return f"{callback.__qualname__} (builtin)"
    name = type.__dict__["__qualname__"].__get__(kind)
    if name == "TaskStepMethWrapper":
        return "task step"
    if kind is functools.partial and depth < 3:
        return f"partial of {describe_callback(callback.func, depth + 1) or '?'}"
    return f"{name} object"
