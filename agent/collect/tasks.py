"""Find every asyncio event loop (in any thread) and describe its tasks.

Nothing here runs on the host's loops: tasks and loops are read from other threads
under the GIL, the same way ``asyncio.all_tasks`` and debuggers do.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
import threading
import time
import types
import weakref
from dataclasses import dataclass
from typing import Any

from agent import compat
from agent.collect.frames import MAX_FRAMES as MAX_CHAIN
from agent.collect.frames import chain_step, code_location

_ASYNCIO_DIR = os.path.dirname(asyncio.__file__) + os.sep
_MAX_AWAITED = 64
_NO_TASKS: tuple[str, ...] = ()  # shared: most tasks await no task, allocate nothing for them
SLICE = 200  # tasks per slice: ~1 ms of work, and few live tuples when a GC runs
YIELD = 0.00005  # seconds; ~60 µs per slice on Linux


_RUN_FRAMES = frozenset({"run_forever", "run_until_complete"})


def _loops_on_stacks() -> dict[int, asyncio.AbstractEventLoop]:
    """Loops found running on thread stacks (run_forever frames), keyed by thread ident."""
    found: dict[int, asyncio.AbstractEventLoop] = {}
    for ident, frame in sys._current_frames().items():
        depth = 0
        while frame is not None and depth < 400:
            if frame.f_code.co_name in _RUN_FRAMES:
                candidate = compat.frame_self(frame)
                if compat.is_event_loop(candidate):
                    found[ident] = candidate
                    break
            frame = frame.f_back
            depth += 1
    return found


class TaskRegistry:
    """Gives tasks and loops stable, never-reused ids and remembers when each was first seen."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._serial = itertools.count(1)
        # id(task) -> (weak ref, serial, first seen). Plain refs without callbacks, so no
        # agent code ever runs in a host thread when a task is freed; pruned after scans.
        self._task_ids: dict[int, tuple[weakref.ref[Any], str, float]] = {}
        self._tasks_by_serial: dict[int, weakref.ref[Any]] = {}
        self._loop_serial = itertools.count(1)
        self._loop_ids: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self._loops_by_id: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()

    # ------------------------------------------------------------ ids

    def task_id(self, task: Any, now: float) -> tuple[str, float]:
        """The task's id and first-seen time, registering it if new."""
        entry = self._task_ids.get(id(task))
        if entry is None or entry[0]() is not task:
            with self._lock:
                entry = self._task_ids.get(id(task))
                if entry is None or entry[0]() is not task:
                    ref = weakref.ref(task)
                    serial = next(self._serial)
                    entry = (ref, f"task-{serial}", now)
                    self._task_ids[id(task)] = entry
                    self._tasks_by_serial[serial] = ref
        return entry[1], entry[2]

    def prune(self, live: int) -> None:
        """Forget tasks that no longer exist (bounded memory without weakref callbacks).

        Amortised: only sweeps once dead entries may outnumber the ``live`` tasks.
        """
        if len(self._task_ids) <= 2 * live + 1000:
            return
        with self._lock:
            dead = [key for key, entry in self._task_ids.items() if entry[0]() is None]
            for key in dead:
                del self._task_ids[key]
            dead_serials = [n for n, ref in self._tasks_by_serial.items() if ref() is None]
            for serial in dead_serials:
                del self._tasks_by_serial[serial]

    def loop_id(self, loop: Any) -> str:
        """The loop's stable id."""
        serial = self._loop_ids.get(loop)
        if serial is None:
            with self._lock:
                serial = self._loop_ids.get(loop)
                if serial is None:
                    serial = next(self._loop_serial)
                    self._loop_ids[loop] = serial
                    self._loops_by_id[serial] = loop
        return f"loop-{serial}"

    def find_task(self, task_id: str) -> Any | None:
        """The live task behind an id printed earlier, or None."""
        if not task_id.startswith("task-"):
            return None
        try:
            ref = self._tasks_by_serial.get(int(task_id[5:]))
        except ValueError:
            return None
        return ref() if ref is not None else None

    # ------------------------------------------------------------ discovery

    def loops(
        self, tasks: list[Any] | None = None
    ) -> list[tuple[asyncio.AbstractEventLoop, int | None]]:
        """Event loops with the ident of the thread running each.

        Cheap by default: loops on thread stacks, loops mid-step, and loops seen before.
        Pass the task list (as a full snapshot has it) to also find loops that only
        their tasks reveal, e.g. uvloop's, which has no Python frame on any stack.
        """
        found: dict[int, tuple[asyncio.AbstractEventLoop, int | None]] = {}
        for ident, loop in _loops_on_stacks().items():
            found[id(loop)] = (loop, ident)
        for task in tasks or ():
            loop = compat.task_loop(task)
            if loop is not None and id(loop) not in found:
                found[id(loop)] = (loop, compat.loop_thread_id(loop))
        with self._lock:
            candidates = list(self._loops_by_id.values())
        for loop in candidates:
            if id(loop) not in found and not loop.is_closed():
                found[id(loop)] = (loop, compat.loop_thread_id(loop))
        for loop, _ident in found.values():
            self.loop_id(loop)
        return list(found.values())

    def all_tasks(self) -> list[Any]:
        """Every task of every loop (up to 3.13 done ones too, while something holds them).

        Up to 3.13 asyncio's registries hold them all, and their loops come with them.
        From 3.14 most live in per-thread lists that only ``all_tasks(loop)`` reads, so
        each loop found on a stack or seen before is asked in turn.
        """
        tasks = compat.registered_tasks()
        if compat.TASKS_PER_THREAD:
            seen = {id(t) for t in tasks}
            for loop, _ident in self.loops(tasks):
                for task in compat.loop_tasks(loop):
                    if id(task) not in seen:
                        seen.add(id(task))
                        tasks.append(task)
            return tasks
        seen: set[int] = set()
        unique = []
        for task in tasks:  # a task moves between registries during an eager step
            if id(task) not in seen:
                seen.add(id(task))
                unique.append(task)
        return unique

    def count_tasks(self) -> int:
        """Number of tasks, cheaply (no per-task Python work up to 3.13)."""
        if compat.TASKS_PER_THREAD:
            return len(self.all_tasks())
        return compat.registered_count()


def task_state(task: Any) -> str:
    """pending / done / cancelled, read without retrieving (and so silencing) exceptions."""
    try:
        if not task.done():
            return "pending"
        return "cancelled" if task.cancelled() else "done"
    except Exception:
        return "unknown"


def _tasks_in(value: Any, out: list[Any]) -> None:
    """Collect tasks held directly, or in a small container, by a local variable."""
    if compat.is_task(value):
        out.append(value)
    elif type(value) in (set, frozenset, list, tuple):
        for item in list(value)[:_MAX_AWAITED]:
            if compat.is_task(item):
                out.append(item)


# asyncio frames whose locals name the tasks they wait on (wait_for's fut, wait's fs, ...)
_WAITING_FRAMES = frozenset({"wait", "_wait", "wait_for", "__aexit__", "shield", "_aexit"})
_LOCAL_NAMES = ("fut", "fs", "inner", "arg", "children", "aw")


def _awaited_from_frame(frame: types.FrameType, found: list[Any]) -> None:
    """Tasks that an asyncio-internal waiting frame holds in its locals (up to 3.13)."""
    try:
        local_vars = dict(frame.f_locals)
    except Exception:
        return
    if frame.f_code.co_name == "__aexit__":
        _tasks_in(compat.taskgroup_tasks(local_vars.get("self")), found)
    for name in _LOCAL_NAMES:
        _tasks_in(local_vars.get(name), found)


def _awaited_via_waiter(task: Any, found: list[Any]) -> None:
    """The task (or gather's children, or shield's inner task) a task is suspended on
    (up to 3.13)."""
    waiter = compat.fut_waiter(task)
    if waiter is None:
        return
    if compat.is_task(waiter):
        found.append(waiter)
        return
    _tasks_in(compat.gather_children(waiter), found)
    inner = compat.shielded(waiter)
    if inner is not None:
        _tasks_in(inner, found)


def awaiting_map(tasks: list[Any]) -> dict[int, list[Any]] | None:
    """3.14+: id(task) -> the tasks it awaits, inverted from each task's ``awaited_by``
    (plain awaits, gather, wait, shield and TaskGroup all record it). None before 3.14."""
    if not compat.AWAITED_BY:
        return None
    children: dict[int, list[Any]] = {}
    for task in tasks:
        for parent in compat.awaited_by(task):
            children.setdefault(id(parent), []).append(task)
    return children


def _walk_task(
    task: Any, awaiting: dict[int, list[Any]] | None = None
) -> tuple[types.FrameType | None, list[Any]]:
    """One pass over a task's await chain: its most telling frame and the tasks it awaits.

    The location is the innermost frame outside asyncio itself (``sleep`` or
    ``Queue.get`` say less than the caller awaiting them). From 3.14 the awaited tasks
    come from ``awaiting`` (see awaiting_map). Before, asyncio keeps no parent links, so
    they come from ``_fut_waiter`` (a task, or gather's children) and from asyncio's own
    waiting frames (wait_for, wait, TaskGroup).
    """
    found: list[Any] = []
    if awaiting is not None:
        found.extend(awaiting.get(id(task), ()))
    else:
        _awaited_via_waiter(task, found)
    try:
        coro = task.get_coro()
    except Exception:
        coro = None
    location = None
    depth = 0
    while coro is not None and depth < MAX_CHAIN:
        frame, coro = chain_step(coro)
        if frame is None:
            break
        depth += 1
        code = frame.f_code
        if code.co_filename.startswith(_ASYNCIO_DIR):
            if location is None:
                location = frame
            if awaiting is None and code.co_name in _WAITING_FRAMES:
                _awaited_from_frame(frame, found)
        else:
            location = frame
    if len(found) > 1:
        unique: dict[int, Any] = {}
        for child in found:
            unique.setdefault(id(child), child)
        found = list(unique.values())[:_MAX_AWAITED]
    return location, [t for t in found if t is not task]


def awaited_tasks(task: Any) -> list[Any]:
    """Tasks this task is blocked on (see _walk_task); from 3.14, its loop's tasks that
    record it among their awaiters."""
    awaiting = None
    if compat.AWAITED_BY:
        loop = compat.task_loop(task)
        awaiting = awaiting_map(compat.loop_tasks(loop)) if loop is not None else {}
    return _walk_task(task, awaiting)[1]


def task_row(
    task: Any,
    registry: TaskRegistry,
    now: float,
    current: set[int],
    loop_ids: dict[int, str],
    state: str | None = None,
    awaiting_of: dict[int, list[Any]] | None = None,
) -> tuple[Any, ...]:
    """One task as a TaskInfo-ordered tuple (the wire row), built in a single pass.

    ``loop_ids`` is a per-scan cache of loop ids, filled as loops are met;
    ``awaiting_of`` is the scan's awaiting_map (3.14+).
    """
    task_id, first_seen = registry.task_id(task, now)
    try:
        name = str(task.get_name())
    except Exception:
        name = "?"
    try:
        coroutine = compat.coroutine_name(task.get_coro())
    except Exception:
        coroutine = ""
    location, awaited = _walk_task(task, awaiting_of)
    function, file, line = code_location(location)
    loop = compat.task_loop(task)
    loop_id = loop_ids.get(id(loop))
    if loop_id is None:
        loop_id = loop_ids[id(loop)] = registry.loop_id(loop) if loop is not None else ""
    awaiting = [registry.task_id(t, now)[0] for t in awaited] if awaited else _NO_TASKS
    return (
        task_id,
        name,
        state or task_state(task),
        coroutine,
        function or coroutine,
        file,
        line,
        loop_id,
        round(max(0.0, now - first_seen), 3),
        awaiting,
        id(task) in current,
    )


def current_task_ids(loops: list[Any]) -> set[int]:
    """ids of the tasks that are executing a step right now, on any of ``loops``."""
    running = (compat.current_task(loop) for loop in loops)
    return {id(task) for task in running if task is not None}


@dataclass
class TaskScan:
    """The result of one pass over every task."""

    fragments: list[str]  # JSON text of wire rows, without the enclosing brackets
    total: int  # tasks that matched the filter (before the limit)
    per_loop: dict[int, int]  # id(loop) -> number of tasks, all tasks counted


def collect_task_rows(
    registry: TaskRegistry,
    *,
    limit: int,
    match: str = "",
    tasks: list[Any] | None = None,
    loops: list[Any] | None = None,
) -> TaskScan:
    """Tasks as JSON-encoded slices of wire rows (pending first), how many matched, and
    how many tasks each loop has (counted in the same pass over every task).

    Rows go straight to JSON text in slices of SLICE tasks with a GIL yield between
    slices, so the host's loops keep running and no 100k-object structure survives
    long enough to trigger a full garbage collection in the host.
    """
    now = time.monotonic()
    if tasks is None:
        tasks = registry.all_tasks()
    if loops is None:
        loops = [loop for loop, _ident in registry.loops(tasks)]
    current = current_task_ids(loops)
    awaiting_of = awaiting_map(tasks)
    loop_ids: dict[int, str] = {}
    needle = match.lower()
    pending: list[str] = []
    finished: list[str] = []
    rows_p: list[tuple[Any, ...]] = []
    rows_f: list[tuple[Any, ...]] = []
    per_loop: dict[int, int] = {}
    taken = 0
    total = 0
    for index, task in enumerate(tasks):
        loop_key = id(compat.task_loop(task))
        per_loop[loop_key] = per_loop.get(loop_key, 0) + 1
        if index % SLICE == SLICE - 1:
            _flush(rows_p, pending)
            _flush(rows_f, finished)
            time.sleep(YIELD)  # really hand the GIL over: sleep(0) rarely lets a waiter in
        state = task_state(task)
        if needle:
            try:
                hay = f"{task.get_name()} {compat.coroutine_name(task.get_coro())}".lower()
            except Exception:
                hay = ""
            if needle not in hay:
                continue
        total += 1
        if taken < limit:
            try:
                row = task_row(task, registry, now, current, loop_ids, state, awaiting_of)
            except Exception:
                continue
            (rows_p if state == "pending" else rows_f).append(row)
            taken += 1
    _flush(rows_p, pending)
    _flush(rows_f, finished)
    registry.prune(len(tasks))
    return TaskScan(pending + finished, total, per_loop)


def _flush(rows: list[tuple[Any, ...]], out: list[str]) -> None:
    """Encode buffered rows into one JSON fragment (without brackets) and clear the buffer."""
    if rows:
        out.append(json.dumps(rows, separators=(",", ":"), allow_nan=False)[1:-1])
        rows.clear()
