"""Find every asyncio event loop (in any thread) and describe its tasks.

Nothing here runs on the host's loops: tasks and loops are read from other threads
under the GIL, the same way ``asyncio.all_tasks`` and debuggers do.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import weakref
from collections.abc import Iterable
from typing import Any

from agent import compat
from agent.collect.births import Births
from agent.collect.inherited import any_dead, is_dead, live, loops_on_stacks
from agent.collect.tasktable import TaskTable, awaiting_map, walk_task


class TaskRegistry:
    """Finds loops and tasks, gives loops stable ids; task ids and rows live in its
    TaskTable (``table``): 'task-N', never reused, with the time each was first seen."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop_serial = itertools.count(1)
        self._loop_ids: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self._loops_by_id: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()
        self.births = Births()  # task factories stamping creation times on found loops
        self.table = TaskTable(self)

    # ------------------------------------------------------------ ids

    def task_id(self, task: Any, now: float = 0.0) -> tuple[str, float]:
        """The task's id and first-seen wall time, registering it if new."""
        return self.table.task_id(task)

    def find_task(self, task_id: str) -> Any | None:
        """The live task behind an id printed earlier, or None."""
        return self.table.find_task(task_id)

    def loop_serial(self, loop: Any) -> int:
        """The loop's stable number (its id is 'loop-N')."""
        serial = self._loop_ids.get(loop)
        if serial is None:
            with self._lock:
                serial = self._loop_ids.get(loop)
                if serial is None:
                    serial = next(self._loop_serial)
                    self._loop_ids[loop] = serial
                    self._loops_by_id[serial] = loop
        return serial

    def loop_id(self, loop: Any) -> str:
        """The loop's stable id."""
        return f"loop-{self.loop_serial(loop)}"

    # ------------------------------------------------------------ discovery

    def loops(
        self, tasks: list[Any] | None = None, serials: Iterable[int] = ()
    ) -> list[tuple[asyncio.AbstractEventLoop, int | None]]:
        """Event loops with the ident of the thread running each.

        Cheap by default: loops on thread stacks, loops mid-step, and loops seen before
        (every task's loop is registered when the task table first meets the task).
        ``tasks`` adds loops only their tasks reveal (e.g. uvloop's, which has no Python
        frame on any stack); ``serials`` adds the loops with these numbers even if closed
        (the loops of the tasks a listing holds).
        """
        found: dict[int, tuple[asyncio.AbstractEventLoop, int | None]] = {}
        for ident, loop in loops_on_stacks().items():
            found[id(loop)] = (loop, ident)
        for task in tasks or ():
            loop = compat.task_loop(task)
            if loop is not None and id(loop) not in found and not is_dead(loop):
                found[id(loop)] = (loop, compat.loop_thread_id(loop))
        with self._lock:
            candidates = list(self._loops_by_id.items())
        wanted = set(serials)
        for serial, loop in candidates:
            if is_dead(loop):
                continue
            if id(loop) not in found and (serial in wanted or not loop.is_closed()):
                found[id(loop)] = (loop, compat.loop_thread_id(loop))
        for loop, _ident in found.values():
            self.loop_serial(loop)
            self.births.hook(loop)
        return list(found.values())

    def all_tasks(self) -> list[Any]:
        """Every task of every loop (up to 3.13 done ones too, while something holds them).

        Up to 3.13 asyncio's registries hold them all, and their loops come with them.
        From 3.14 most live in per-thread lists that only ``all_tasks(loop)`` reads, so
        each loop found on a stack or seen before is asked in turn.
        """
        tasks = live(compat.registered_tasks())
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
        """Number of tasks, cheaply (no per-task Python work: from 3.14, ids counted in
        C-level set updates, as all_tasks would dedupe them)."""
        if compat.TASKS_PER_THREAD:
            tasks = live(compat.registered_tasks())
            ids = set(map(id, tasks))
            for loop, _ident in self.loops(tasks):
                ids.update(map(id, compat.loop_tasks(loop)))
            return len(ids)
        if any_dead():
            return len(live(compat.registered_tasks()))
        return compat.registered_count()


def task_state(task: Any) -> str:
    """pending / done / cancelled, read without retrieving (and so silencing) exceptions."""
    try:
        if not task.done():
            return "pending"
        return "cancelled" if task.cancelled() else "done"
    except Exception:
        return "unknown"


def awaited_tasks(task: Any) -> list[Any]:
    """Tasks this task is blocked on (see tasktable.walk_task); from 3.14, its loop's
    tasks that record it among their awaiters."""
    awaiting = None
    if compat.AWAITED_BY:
        loop = compat.task_loop(task)
        awaiting = awaiting_map(compat.loop_tasks(loop)) if loop is not None else {}
    return walk_task(task, compat.fut_waiter(task), awaiting)[1]
