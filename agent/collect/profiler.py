"""Sampling profiler: on demand, one agent thread reads every thread's stack at a rate.

Each tick reads ``sys._current_frames()``, walks each stack into a tuple of interned frame
indices (one table of (function, file, first line) per profile) and counts it under its
thread, the asyncio task that the thread's loop was stepping at that moment (if any), and
whether the thread used CPU since the tick before (its own CPU clock, Linux) or waited.
A stack whose innermost frame is one of the standard library's waits (a selector, a lock,
a queue) is marked idle, so views can hide it (py-spy's ``--idle``).

Who may start it: every role (viewer too). A profile reads nothing a viewer cannot already
read (stacks, function names, file names; no locals, no source), its cost is bounded
(rate and duration clamped, one profile at a time, stops by itself), and it is the first
tool of whoever asks "why is it slow"; it is still audited (start and stop) because it
costs the host CPU, so an operator can see who profiled. Only the session that started a
profile, or an operator, may stop it early.

Bounded: at most MAX_FRAMES distinct frames and MAX_ROWS distinct (stack, thread, task)
rows (later samples that do not fit are counted as ``dropped``), MAX_DEPTH frames a stack;
the thread stops at its deadline whatever the observer does, and it runs Python code only,
so it gives the GIL up at every switch interval (a tick with 50 threads takes ~0.1-0.5 ms).

A thread that has not moved costs one lookup: when its innermost frame is the same frame
object as at its previous sample and is a plain function's (not a generator or coroutine,
which a different caller may resume), its callers are the same frames (a frame's callers
are fixed while it runs), so the stack interned then is counted again without a walk. The
frames so remembered (one a thread) are let go of at the next sample.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import threading
import time
import types
from collections.abc import Callable, Iterable
from typing import Any

from agent import compat
from agent.collect.source import note_reported
from agent.collect.stalls import in_stdlib
from agent.compat import code_name
from agent.errors import AgentError, BadRequest
from agent.schema import Profile, ProfileFrame, ProfileStack

log = logging.getLogger("agent")

MAX_RATE = 1000.0  # samples a second, at most
MIN_RATE = 1.0
MAX_SECONDS = 600.0  # a profile's duration, at most
MIN_SECONDS = 0.1
MAX_FRAMES = 20_000  # distinct frames per profile
MAX_ROWS = 20_000  # distinct (stack, thread, task) rows per profile
MAX_DEPTH = 128  # innermost frames kept of a stack
THREADS_REFRESH = 1.0  # seconds between re-reading the thread list (names, native ids)
TRUNCATED = "(truncated)"
# a frame of these may be suspended and resumed by another caller between two samples
_RESUMABLE = 0x20 | 0x80 | 0x100 | 0x200  # CO_GENERATOR, CO_COROUTINE, _ITERABLE_, CO_ASYNC_GEN

LoopsFn = Callable[[], Iterable[tuple[Any, "int | None"]]]
# what a sample remembers of a thread for the next: its innermost frame (None when that may
# be resumed by another caller), the stack interned for it, its loop's task, its label, the
# counts row it was counted in (None when the row cap dropped it) and whether it stood
# parked in a known wait with no loop to step (then the next sample of the same frame is
# one more off-CPU count in the same row, nothing else)
_Seen = tuple["types.FrameType | None", tuple[int, ...], Any, str, "list[int] | None", bool]

_IDLE = {
    "selectors.py": ("select",),
    "threading.py": ("wait", "acquire", "join", "_wait_for_tstate_lock"),
    "queue.py": ("get", "put"),
    "socketserver.py": ("serve_forever",),
}


class Busy(AgentError):
    """A profile is already running (one at a time)."""

    kind = "busy"


def is_idle_code(code: types.CodeType) -> bool:
    """True for the standard library's waits: a thread standing there is idle."""
    names = _IDLE.get(os.path.basename(code.co_filename))
    return bool(names) and code.co_name in names and in_stdlib(code.co_filename)


def clamp_rate(rate: float) -> float:
    if not math.isfinite(rate) or rate <= 0:
        raise BadRequest("rate must be a positive number of samples a second")
    return min(max(rate, MIN_RATE), MAX_RATE)


def clamp_seconds(seconds: float) -> float:
    if not math.isfinite(seconds) or seconds <= 0:
        raise BadRequest("seconds must be a positive number")
    return min(max(seconds, MIN_SECONDS), MAX_SECONDS)


class _Stopper:
    """A stop flag whose timed wait is one C-level lock acquire (``Event.wait`` runs a
    dozen Python lines and allocates a lock every call: at 1000 Hz that is the sampler's
    fixed cost)."""

    def __init__(self) -> None:
        self._set = False
        self._lock = threading.Lock()
        self._lock.acquire()

    def set(self) -> None:
        self._set = True
        with contextlib.suppress(RuntimeError):  # released already
            self._lock.release()

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds or until set; True when set."""
        if self._lock.acquire(True, max(0.0, timeout)):
            self._lock.release()  # stays set for whoever waits next
        return self._set


class _Run:
    """One profile: its interned frames and counted rows; written by the sampler thread
    only, read under the profiler's lock."""

    def __init__(self, serial: int, seconds: float, rate: float, owner: str, session: int):
        self.serial = serial
        self.seconds = seconds
        self.rate = rate
        self.owner = owner
        self.session = session
        self.started = time.time()
        self.started_mono = time.monotonic()
        self.ended_mono: float | None = None
        self.state = "running"
        self.ticks = 0
        self.dropped = 0
        self.errors = 0
        self.frame_index: dict[types.CodeType, int] = {}
        self.frames: list[ProfileFrame] = []
        self.idle: list[bool] = []
        # (stack, thread, task) -> [samples, on-CPU samples]
        self.rows: dict[tuple[tuple[int, ...], str, str], list[int]] = {}

    def frame(self, code: types.CodeType) -> int:
        index = self.frame_index.get(code)
        if index is None:
            if len(self.frames) >= MAX_FRAMES:
                return special_frame(self, _OVERFLOW_CODE, "(more frames than the cap)")
            index = len(self.frames)
            self.frame_index[code] = index
            self.frames.append(ProfileFrame(code_name(code), code.co_filename, code.co_firstlineno))
            note_reported(code.co_filename, code.co_firstlineno)  # a viewer may read it
            self.idle.append(is_idle_code(code))
        return index

    def row(self, key: tuple[tuple[int, ...], str, str]) -> list[int] | None:
        """The [samples, on-CPU samples] counts of a (stack, thread, task) row, made at
        its first sample; None (the sample dropped) once MAX_ROWS rows exist."""
        row = self.rows.get(key)
        if row is None:
            if len(self.rows) >= MAX_ROWS:
                return None
            row = self.rows[key] = [0, 0]
        return row

    def tally(self, row: list[int] | None, on_cpu: bool) -> None:
        """One sample in ``row`` (from row()), or one dropped when it is None."""
        if row is None:
            self.dropped += 1
            return
        row[0] += 1
        if on_cpu:
            row[1] += 1

    def elapsed(self) -> float:
        end = self.ended_mono if self.ended_mono is not None else time.monotonic()
        return max(0.0, end - self.started_mono)

    def result(self) -> Profile:
        frames = tuple(self.frames)
        stacks = tuple(
            ProfileStack(
                stack,
                thread,
                task,
                counts[0],
                counts[1],
                bool(stack) and self.idle[stack[-1]],
            )
            for (stack, thread, task), counts in self.rows.items()
        )
        return Profile(
            serial=self.serial,
            state=self.state,
            started=self.started,
            seconds=self.seconds,
            rate=self.rate,
            elapsed=self.elapsed(),
            ticks=self.ticks,
            dropped=self.dropped,
            owner=self.owner,
            cpu_known=compat.thread_cpu_time(threading.get_native_id()) is not None,
            frames=frames,
            stacks=stacks,
        )


class Profiler:
    """Starts, samples, stops and reads profiles; one at a time; thread-safe."""

    def __init__(
        self,
        loops: LoopsFn,
        *,
        agent_idents: Callable[[], set[int]] = set,
        on_thread: Callable[[int], None] = lambda _ident: None,
        loop_name: Callable[[Any], str] = lambda _loop: "",
    ) -> None:
        self._loops = loops
        self._agent_idents = agent_idents
        self._on_thread = on_thread
        self._lock = threading.Lock()
        self._run: _Run | None = None
        self._stop = _Stopper()
        self._thread: threading.Thread | None = None
        self._serial = 0

    # ------------------------------------------------------------ control

    def start(self, seconds: float, rate: float, owner: str = "", session: int = 0) -> Profile:
        """Start a profile of ``seconds`` at ``rate`` Hz (both clamped); Busy if one runs."""
        seconds, rate = clamp_seconds(float(seconds)), clamp_rate(float(rate))
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                run = self._run
                who = f" (started by {run.owner})" if run is not None and run.owner else ""
                raise Busy(f"a profile is already running{who}: one at a time")
            self._serial += 1
            run = _Run(self._serial, seconds, rate, owner, session)
            self._run = run
            self._stop = _Stopper()
            thread = threading.Thread(
                target=self._sample_loop,
                args=(run, self._stop),
                name="observer-agent-profiler",
                daemon=True,
            )
            self._thread = thread
            thread.start()
            return run.result()

    def stop(self, session: int = 0, operator: bool = True) -> Profile:
        """Stop the running profile early (its owner or an operator) and return it."""
        with self._lock:
            run, thread, stop = self._run, self._thread, self._stop
        if run is None:
            raise BadRequest("no profile was started on this node")
        if run.state == "running" and not operator and session != run.session:
            raise Busy(f"the running profile belongs to {run.owner or 'another session'}")
        stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2.0)
        return self.read()

    def shutdown(self) -> None:
        self._stop.set()

    def read(self) -> Profile:
        """The running or the latest profile as it stands (a partial one while running)."""
        with self._lock:
            run = self._run
            if run is None:
                raise BadRequest("no profile was started on this node")
            return run.result()

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    # ------------------------------------------------------------ the thread

    def _sample_loop(self, run: _Run, stop: _Stopper) -> None:
        with contextlib.suppress(Exception):
            self._on_thread(threading.get_ident())
        me = threading.get_ident()
        period = 1.0 / run.rate
        deadline = run.started_mono + run.seconds
        names: dict[int, tuple[str, int | None]] = {}
        cpu: dict[int, float] = {}
        skip: set[int] = set()
        loops: dict[int, Any] = {}
        seen: dict[int, _Seen] = {}
        refresh = 0.0
        due = time.monotonic()
        try:
            while True:
                now = time.monotonic()
                if now >= deadline:
                    break
                if now >= refresh:
                    known = names
                    names, skip, loops = self._refresh(me)
                    refresh = now + THREADS_REFRESH
                    if names != known:
                        seen = {}  # a renamed thread's next sample is counted under its name
                try:
                    with self._lock:
                        seen = self._tick(run, names, skip, loops, cpu, period, seen)
                except Exception:  # contained: an odd frame must not end the profile
                    run.errors += 1
                    if run.errors <= 3:
                        log.exception("runtime-observer agent: profiler tick failed")
                due += period
                wait = due - time.monotonic()
                if wait < 0:  # fell behind: skip the ticks missed, do not burst
                    due = time.monotonic()
                    wait = 0.0
                if stop.wait(min(wait, max(0.0, deadline - time.monotonic()))):
                    break
        finally:
            with self._lock:
                run.ended_mono = time.monotonic()
                run.state = "stopped" if stop.is_set() else "done"
                run.frame_index = {}  # let go of the host's code objects: no more interning
            seen = {}  # and of its frames

    def _refresh(self, me: int) -> tuple[dict[int, tuple[str, int | None]], set[int], dict]:
        """Threads' names and native ids, the agent's own threads, loops by thread."""
        names = {
            t.ident: (str(t.name), getattr(t, "native_id", None))
            for t in threading.enumerate()
            if t.ident is not None
        }
        skip = set(self._agent_idents()) | {me}
        loops: dict[int, Any] = {}
        with contextlib.suppress(Exception):
            for loop, ident in self._loops():
                if ident is not None:
                    loops[ident] = loop
        return names, skip, loops

    @staticmethod
    def _tick(
        run: _Run,
        names: dict[int, tuple[str, int | None]],
        skip: set[int],
        loops: dict[int, Any],
        cpu: dict[int, float],
        period: float,
        seen: dict[int, _Seen] | None = None,
    ) -> dict[int, _Seen]:
        """One sample of every thread but the agent's own. ``seen``: what the previous
        sample remembered of each thread (its innermost frame, stack and task); returns
        this sample's, for the next (the previous one's frames are let go of)."""
        frames = sys._current_frames()
        run.ticks += 1
        intern, idle = run.frame, run.idle
        before = seen or {}
        now_seen: dict[int, _Seen] = {}
        for ident, frame in frames.items():
            last = before.get(ident)  # never one of the skipped: they are not remembered
            if last is not None and last[5] and last[0] is frame:
                row = last[4]  # parked where it was: the same row, off the CPU
                if row is None:
                    run.dropped += 1
                else:
                    row[0] += 1
                now_seen[ident] = last
                continue
            if ident in skip:
                continue
            name, native = names.get(ident, (str(ident), None))
            moved = last is None or last[0] is not frame
            if moved:
                walked: list[int] = []
                f: types.FrameType | None = frame
                while f is not None and len(walked) < MAX_DEPTH:
                    walked.append(intern(f.f_code))
                    f = f.f_back
                if f is not None:
                    walked.append(special_frame(run, _TRUNCATED_CODE, TRUNCATED))
                walked.reverse()
                stack = tuple(walked)
            else:
                stack = last[1]  # the same running frame: the same callers, nothing to walk
            task = ""
            current = None
            loop = loops.get(ident)
            if loop is not None:
                current = compat.current_task(loop)
                if current is not None:
                    if last is not None and last[2] is current:
                        task = last[3]
                    else:
                        task = task_label(current)
            # the same stack, thread and task as the last sample: the same row, no hashing
            row = run.row((stack, name, task)) if moved or last[2] is not current else last[4]
            keep = None if frame.f_code.co_flags & _RESUMABLE else frame
            # parked in a known wait (a selector, a lock, a queue) with no loop to step:
            # while it stays in that very frame it is off the CPU, and its clock is not
            # read (a system call per thread per sample); the baseline read now tells the
            # CPU it uses once it leaves
            parked = keep is not None and loop is None and bool(stack) and idle[stack[-1]]
            now_seen[ident] = (keep, stack, current, task, row, parked)
            on_cpu = True
            if native is not None:
                now = compat.thread_cpu_time(native)
                if now is not None:
                    earlier = cpu.get(native)
                    cpu[native] = now
                    # a thread's first sample has no baseline: counted as waiting
                    on_cpu = earlier is not None and now - earlier > period * 0.1
            run.tally(row, on_cpu)
        del frames
        return now_seen


def special_frame(run: _Run, code: types.CodeType, name: str) -> int:
    """A frame standing for what the caps cut off (outer frames past MAX_DEPTH, frames
    past MAX_FRAMES); there are two such, so the table exceeds its cap by two at most."""
    index = run.frame_index.get(code)
    if index is None:
        index = len(run.frames)
        run.frame_index[code] = index
        run.frames.append(ProfileFrame(name, "", 0))
        run.idle.append(False)
    return index


_TRUNCATED_CODE = compile("0", "<truncated>", "eval")
_OVERFLOW_CODE = compile("0", "<overflow>", "eval")


def task_label(task: Any) -> str:
    """'name (coroutine)', as the stall catcher names a task."""
    try:
        return f"{task.get_name()} ({compat.coroutine_name(task.get_coro())})"
    except Exception:
        return "?"
