"""CPU per asyncio task (3.12+): each task step's thread CPU time, credited to its task, and
the busiest tasks over the last N seconds (like Erlang's ``recon:proc_window``).

How a step is seen: ``sys.monitoring`` local events on the code objects of tasks'
OUTERMOST coroutines only (PY_START/PY_RESUME: a step begins; PY_YIELD/PY_RETURN: it
ends), so no other code of the host pays anything. At a step's first event the hook
reads ``time.thread_time()`` (the thread's own CPU clock) and the wall clock, at its end
again, and credits the difference to the task running on this thread's loop
(``asyncio.current_task``). A per-thread stack of open steps handles eager tasks (an
eager task's first step runs inside its creator's step: the creator is credited its own
time only) and a task's outer code met again deeper in an await chain (ignored: the
step is already open). A step is opened only by the task's own outer coroutine and
closed only by that code's exit on the same task, so a step whose end is not seen (the
coroutine raised: PY_UNWIND is not a local event; a step entered by ``throw()``, as a
cancellation is) is dropped, never stretched over the time between steps.

Credits go to a dict of the tasks that ran this second (holding them for at most two
ticks); an agent thread turns it into a per-second record of task serials every TICK,
keeps MAX_WINDOW of those (TICK_TASKS busiest per second; the rest summed as
untracked), and drops every task reference. Off costs nothing: every code object's
events are cleared, the callbacks unregistered and the tool id freed.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import threading
import time
import types
from array import array
from collections import deque
from collections.abc import Callable
from typing import Any

from agent import compat
from agent.collect import births
from agent.errors import AgentError, BadRequest
from agent.schema import TaskCpu, TaskCpuRow

log = logging.getLogger("agent")

TOOL_NAME = "runtime-observer task cpu"
TICK = 1.0  # seconds per window record
MAX_WINDOW = 120.0  # seconds of records kept
TICK_TASKS = 1000  # tasks itemised per record (the busiest); the rest are summed
MAX_PENDING = 100_000  # tasks credited within one tick before the rest go untracked
MAX_CODES = 10_000  # coroutine code objects watched at most
MAX_TOP = 1000  # rows with name and coroutine in one reply
MAX_ROWS = 20_000  # rows in one reply
SWEEP_EVERY = 5.0  # seconds between looks for tasks no hooked factory made
SWEEP_SLICE = 0.003  # seconds of a sweep between GIL hand-overs
DEFAULT_WINDOW = 10.0
_NEEDS = "CPU per task needs Python 3.12+ (sys.monitoring); this host runs Python {}"


def unsupported() -> str:
    """Why CPU per task cannot run on this interpreter, or ''."""
    if compat.step_monitoring() is None:
        import platform

        return _NEEDS.format(platform.python_version())
    return ""


class _Open(threading.local):
    """The steps open on this thread, innermost last: [task, coro, code, cpu, wall,
    nested cpu, nested wall]."""

    def __init__(self) -> None:
        self.stack: list[list[Any]] = []


def step_hooks(
    pending: list[dict[int, list[Any]]], lost: list[float]
) -> tuple[Callable[..., None], Callable[..., None]]:
    """The (enter, leave) callbacks for one session of accounting; they credit
    ``pending[0]`` (id(task) -> [task, cpu, wall, steps]) and never raise or return
    ``sys.monitoring.DISABLE`` (they return None)."""
    local = _Open()
    # public C callables, called directly (each Python call saved is ~50 ns a step):
    # current_task() raises without a running loop (caught: no step to count then);
    # Task.get_coro, unbound, runs no subclass override (TypeError: a pure-Python task)
    current, get_coro, task_coro = asyncio.current_task, asyncio.Task.get_coro, compat.task_coro
    cpu_clock, wall_clock, coroutine = time.thread_time, time.perf_counter, types.CoroutineType

    def enter(code: Any, _offset: int) -> None:
        try:
            task = current()
            if task is None:
                return
            stack = local.stack
            if stack:
                if stack[-1][0] is task:
                    return  # its outer code again, deeper in its own chain: already open
                while stack and not stack[-1][1].cr_running:
                    stack.pop()  # a step whose end was not seen (it raised): dropped
            try:
                coro = get_coro(task)
            except TypeError:
                coro = task_coro(task)
            if type(coro) is not coroutine or coro.cr_code is not code:
                return  # this code is the outer one of other tasks, awaited inside this one
            stack.append([task, coro, code, cpu_clock(), wall_clock(), 0.0, 0.0])
        except Exception:
            return

    def leave(code: Any, _offset: int, _value: Any) -> None:
        try:
            stack = local.stack
            if not stack:
                return
            top = stack[-1]
            if top[2] is not code or top[0] is not current():
                return
            cpu, wall = cpu_clock() - top[3], wall_clock() - top[4]
            stack.pop()
            if stack:  # an eager task's first step inside its creator's: not the creator's
                stack[-1][5] += cpu
                stack[-1][6] += wall
            cpu, wall = cpu - top[5], wall - top[6]
            task = top[0]
            credits = pending[0]
            entry = credits.get(id(task))
            if entry is not None:
                entry[1] += cpu
                entry[2] += wall
                entry[3] += 1
            elif len(credits) < MAX_PENDING:
                credits[id(task)] = [task, cpu, wall, 1]
            else:
                lost[0] += cpu
        except Exception:
            return

    return enter, leave


class _Tick:
    """One second of credits: task serials and their CPU, wall time and steps."""

    __slots__ = ("cpu", "end", "other_cpu", "other_steps", "other_wall", "serials", "steps", "wall")

    def __init__(self, end: float) -> None:
        self.end = end
        self.serials = array("q")
        self.cpu = array("d")
        self.wall = array("d")
        self.steps = array("q")
        self.other_cpu = self.other_wall = 0.0
        self.other_steps = 0


class TaskCpuMeter:
    """Turns CPU per task on and off and answers windows; thread-safe; see the module.

    ``task_id(task)`` gives a task's ``task-N`` (the task table's), ``find(task_id)`` the
    live task or None, ``all_tasks()`` every task (for the first sweep), ``unhooked()``
    whether some loop makes tasks the agent's factory does not see.
    """

    def __init__(
        self,
        task_id: Callable[[Any], str],
        find: Callable[[str], Any],
        all_tasks: Callable[[], list[Any]],
        unhooked: Callable[[], bool],
        on_thread: Callable[[int], None] = lambda _ident: None,
    ) -> None:
        self._task_id, self._find, self._all_tasks = task_id, find, all_tasks
        self._unhooked, self._on_thread = unhooked, on_thread
        self._lock = threading.RLock()  # on/off, ticks, reads (never taken by a host thread)
        self._codes_lock = threading.Lock()  # codes watched: held for one set_local_events
        self.tool: int | None = None
        self.since: float | None = None
        self.by = ""
        self.session = 0
        self.keep = False
        self._started = 0.0  # monotonic
        self._codes: dict[int, Any] = {}  # id(code) -> code whose events are set
        self._pending: list[dict[int, list[Any]]] = [{}]
        self._previous: dict[int, list[Any]] = {}  # swapped out at the last tick
        self._lost = [0.0]
        self._ticks: deque[_Tick] = deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._hooks: tuple[Callable[..., None], Callable[..., None]] | None = None
        self.events: tuple[int, ...] = ()

    # ------------------------------------------------------------ on and off

    @property
    def enabled(self) -> bool:
        return self.tool is not None

    def start(self, by: str, *, session: int = 0, keep: bool = False) -> str:
        """Turn it on (idempotent: a second start keeps the first's window); what it
        costs and when it stops, in words."""
        note = unsupported()
        if note:
            raise AgentError(note)
        with self._lock:
            if self.tool is not None:
                return f"CPU per task is already on (since {time.ctime(self.since or 0)})"
            monitoring = compat.step_monitoring()
            tool = compat.claim_tool_id(TOOL_NAME)
            if tool is None:
                raise AgentError("every sys.monitoring tool id is taken: CPU per task cannot run")
            ev = monitoring.events
            self.events = (ev.PY_START, ev.PY_RESUME, ev.PY_YIELD, ev.PY_RETURN)
            self._pending, self._previous, self._lost = [{}], {}, [0.0]
            self._ticks.clear()
            enter, leave = step_hooks(self._pending, self._lost)
            self._hooks = (enter, leave)
            try:
                for event in (ev.PY_START, ev.PY_RESUME):
                    monitoring.register_callback(tool, event, enter)
                for event in (ev.PY_YIELD, ev.PY_RETURN):
                    monitoring.register_callback(tool, event, leave)
            except Exception:
                compat.release_tool_id(tool, self.events)
                raise
            self.tool = tool
            self.since, self.by, self.session, self.keep = time.time(), by, session, keep
            self._started = time.monotonic()
            births.on_create[0] = self.watch_coro  # new tasks' code, before their first step
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=self._run, name="runtime-observer-taskcpu", daemon=True
            )
            self._thread.start()
        self.sweep()
        until = (
            "it stays on until stopped or the agent stops"
            if keep or not session
            else "it stops when this session ends (start it with keep to leave it on)"
        )
        return (
            f"CPU per task on (sys.monitoring tool {tool}, {len(self._codes)} coroutine "
            f"codes watched): each task step costs two reads of its thread's CPU clock; {until}"
        )

    def stop(self) -> str:
        with self._lock:
            if self.tool is None:
                raise AgentError("CPU per task is not on")
            return self._off()

    def stop_started_by(self, session: int | None) -> str | None:
        """Turn it off if ``session`` (None: any, the agent stops) turned it on without
        keep; returns what stop says, or None when it stayed as it was."""
        with self._lock:
            if self.tool is None:
                return None
            if session is not None and (session != self.session or self.keep):
                return None
            return self._off()

    def _off(self) -> str:
        """Clear every code's events, unregister, free the tool id, forget (lock held)."""
        tool = self.tool
        assert tool is not None
        births.on_create[0] = None
        monitoring = compat.step_monitoring()
        with self._codes_lock:
            self.tool = None
            codes, self._codes = list(self._codes.values()), {}
        for code in codes:
            try:
                monitoring.set_local_events(tool, code, 0)
            except Exception:
                continue
        compat.release_tool_id(tool, self.events)
        self._hooks = None
        self._stop.set()
        self._pending[0], self._previous = {}, {}
        self._ticks.clear()
        seconds = time.monotonic() - self._started
        self.since, self.by, self.session, self.keep = None, "", 0, False
        return f"CPU per task off after {seconds:.0f} s; {len(codes)} coroutine codes unwatched"

    def forget_after_fork(self) -> None:
        """In a forked child: the parent's accounting (its thread did not come along) is
        turned off, so nothing piles up; never raises."""
        try:  # the lock may have been held by a parent thread at the fork: not waited for
            if self.tool is not None:
                self._off()
        except Exception:
            log.debug("runtime-observer agent: task cpu after fork", exc_info=True)

    # ------------------------------------------------------------ what is watched

    def watch_coro(self, coro: Any) -> None:
        """Watch the steps of tasks running ``coro``'s code (from the task factory, before
        the task's first step, eager or not). Never raises."""
        try:
            code = compat.coroutine_code(coro)
            if code is None or id(code) in self._codes:
                return
            with self._codes_lock:  # not the meter's lock: a host thread may be here
                tool = self.tool
                if tool is None or id(code) in self._codes or len(self._codes) >= MAX_CODES:
                    return
                compat.step_monitoring().set_local_events(tool, code, _mask(self.events))
                self._codes[id(code)] = code
        except Exception:
            log.debug("runtime-observer agent: cannot watch a coroutine", exc_info=True)

    def sweep(self) -> None:
        """Watch the outer coroutine of every task that exists now, in slices."""
        try:
            tasks = self._all_tasks()
        except Exception:
            log.debug("runtime-observer agent: task cpu sweep", exc_info=True)
            return
        held = time.perf_counter()
        for index, task in enumerate(tasks):
            if index & 255 == 0 and time.perf_counter() - held > SWEEP_SLICE:
                time.sleep(0.0001)
                held = time.perf_counter()
            if not self.enabled:
                return
            self.watch_coro(compat.task_coro(task))

    # ------------------------------------------------------------ the agent thread

    def _run(self) -> None:
        self._on_thread(threading.get_ident())
        stop = self._stop
        next_sweep = time.monotonic() + SWEEP_EVERY
        while not stop.wait(TICK):
            try:
                with self._lock:
                    if stop.is_set():
                        return
                    self._tick()
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + SWEEP_EVERY
                    if self._unhooked():
                        self.sweep()
            except Exception:
                log.exception("runtime-observer agent: task cpu tick failed")

    def _tick(self) -> None:
        """Swap in an empty credit dict, and file the one swapped out a tick ago (no hook
        still writes to it) as the newest record (lock held)."""
        done = self._previous
        self._previous = self._pending[0]
        self._pending[0] = {}
        record = _Tick(time.monotonic() - TICK)  # its credits came in a tick ago
        entries = list(done.values())
        if len(entries) > TICK_TASKS:
            kept = heapq.nlargest(TICK_TASKS, entries, key=lambda e: e[1])
            chosen = {id(e) for e in kept}
            for entry in entries:
                if id(entry) not in chosen:
                    record.other_cpu += entry[1]
                    record.other_wall += entry[2]
                    record.other_steps += entry[3]
            entries = kept
        for entry in entries:
            serial = _serial(self._task_id(entry[0]))
            if serial <= 0:
                continue
            record.serials.append(serial)
            record.cpu.append(entry[1])
            record.wall.append(entry[2])
            record.steps.append(entry[3])
        lost, self._lost[0] = self._lost[0], 0.0
        record.other_cpu += lost
        del entries, done
        ticks = self._ticks
        ticks.append(record)
        while ticks and ticks[0].end < record.end - MAX_WINDOW:
            ticks.popleft()

    # ------------------------------------------------------------ reads

    def window(self, seconds: float, top: int, limit: int = MAX_ROWS) -> TaskCpu:
        """The tasks' CPU over the last ``seconds``, busiest first: every task that ran
        (up to ``limit`` rows), the first ``top`` with name and coroutine."""
        if seconds != seconds or seconds <= 0 or seconds == float("inf"):
            raise BadRequest("window must be a positive number of seconds")
        seconds = min(seconds, MAX_WINDOW)
        top = max(0, min(top, MAX_TOP))
        limit = max(top, min(limit, MAX_ROWS))
        totals: dict[int, list[float]] = {}
        cpu_all = wall_all = untracked = 0.0
        steps_all = 0
        with self._lock:
            if self.tool is None:
                return self._report(False, seconds, 0.0, 0.0, 0.0, 0, 0.0, ())
            now = time.monotonic()
            covered = min(seconds, now - self._started)
            live = [*self._previous.values(), *list(self._pending[0].values())]
            for record in self._ticks:
                if record.end <= now - seconds:
                    continue
                for serial, cpu, wall, steps in zip(
                    record.serials, record.cpu, record.wall, record.steps, strict=True
                ):
                    acc = totals.get(serial)
                    if acc is None:
                        totals[serial] = [cpu, wall, steps]
                    else:
                        acc[0] += cpu
                        acc[1] += wall
                        acc[2] += steps
                untracked += record.other_cpu
                cpu_all += record.other_cpu
                wall_all += record.other_wall
                steps_all += record.other_steps
            for entry in live:
                serial = _serial(self._task_id(entry[0]))
                acc = totals.get(serial)
                if acc is None:
                    totals[serial] = [entry[1], entry[2], entry[3]]
                else:
                    acc[0] += entry[1]
                    acc[1] += entry[2]
                    acc[2] += entry[3]
            del live
        for cpu, wall, steps in totals.values():
            cpu_all += cpu
            wall_all += wall
            steps_all += int(steps)
        ranked = sorted(totals.items(), key=lambda kv: -kv[1][0])[:limit]
        rows = []
        for index, (serial, (cpu, wall, steps)) in enumerate(ranked):
            task_id = f"task-{serial}"
            name = coroutine = ""
            alive = True
            if index < top:
                task = self._find(task_id)
                alive = task is not None and not task.done()
                if task is not None:
                    name, coroutine = _describe(task)
            rows.append(TaskCpuRow(task_id, cpu, wall, int(steps), name, coroutine, alive))
        return self._report(
            True, seconds, covered, cpu_all, wall_all, steps_all, untracked, tuple(rows)
        )

    def _report(
        self,
        enabled: bool,
        window: float,
        covered: float,
        cpu: float,
        wall: float,
        steps: int,
        untracked: float,
        rows: tuple[TaskCpuRow, ...],
    ) -> TaskCpu:
        return TaskCpu(
            enabled=enabled,
            note=unsupported(),
            since=self.since,
            by=self.by,
            keep=self.keep,
            window=window,
            covered=covered,
            cpu=cpu,
            wall=wall,
            steps=steps,
            untracked=untracked,
            codes=len(self._codes),
            rows=rows,
        )


def _mask(events: tuple[int, ...]) -> int:
    mask = 0
    for event in events:
        mask |= event
    return mask


def _serial(task_id: str) -> int:
    try:
        return int(task_id[5:]) if task_id.startswith("task-") else 0
    except ValueError:
        return 0


def _describe(task: Any) -> tuple[str, str]:
    """A task's name and coroutine, for the top rows (never raising)."""
    try:
        name = str(task.get_name())[:200]
    except Exception:
        name = "?"
    return name, compat.coroutine_name(compat.task_coro(task))


_meters: list[TaskCpuMeter] = []  # every meter made in this process (one per agent core)


def register(meter: TaskCpuMeter) -> None:
    """Remember a meter so a forked child can turn it off (agent.forking)."""
    if len(_meters) > 16:
        del _meters[:-16]
    _meters.append(meter)


def after_fork_in_child() -> None:
    """Turn off every meter the parent had on: its tick thread is not in the child."""
    for meter in list(_meters):
        meter.forget_after_fork()
