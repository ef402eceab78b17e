"""Which event loops run in this process: those on thread stacks, and those a forked
child inherited from its parent that never run again here.

After fork() only the forking thread lives on, and asyncio forgets the running loop in
the child (3.12+), which then usually starts a loop of its own (multiprocessing, gunicorn,
the demo's pool). The parent's loops, their tasks in the copied asyncio registries, and
even a new thread reusing an old ident would otherwise show up in the child as if they
ran there, with a loop lag as old as the fork. The fork handler (agent.forking) marks
every inherited loop dead once; a marked loop found running innermost on a thread's stack
(a child that went on with the very loop it forked from) is alive again.
"""

from __future__ import annotations

import asyncio
import sys
import weakref
from typing import Any

from agent import compat

_RUN_FRAMES = frozenset({"run_forever", "run_until_complete"})
_dead: weakref.WeakSet[Any] = weakref.WeakSet()


def loops_on_stacks() -> dict[int, asyncio.AbstractEventLoop]:
    """Loops found running on thread stacks (the innermost run_forever frame of each
    thread), keyed by thread ident. In a forked child, such a loop is alive again."""
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
    if _dead:
        for loop in found.values():
            _dead.discard(loop)
    return found


def forget_inherited_loops() -> None:
    """In a forked child, right after fork: every loop the parent's tasks belong to is
    dead here until it is seen running on a stack of the child."""
    for loop in {id(lp): lp for lp in map(compat.task_loop, compat.registered_tasks())}.values():
        if loop is not None:
            _dead.add(loop)


def any_dead() -> bool:
    """Whether this process holds loops inherited dead (only ever in a forked child);
    first revives those running on a stack now."""
    if _dead:
        loops_on_stacks()
    return bool(_dead)


def is_dead(loop: Any) -> bool:
    """Whether ``loop`` is one this process inherited dead from its parent."""
    return bool(_dead) and loop in _dead


def live(tasks: list[Any]) -> list[Any]:
    """``tasks`` without those of inherited dead loops (a no-op unless this is a child)."""
    if not any_dead():
        return tasks
    dead = _dead
    return [t for t in tasks if compat.task_loop(t) not in dead]


def live_refs(refs: list[Any]) -> list[Any]:
    """The same for weak references to tasks (gone ones are kept: the caller drops them)."""
    if not any_dead():
        return refs
    dead = _dead
    out = []
    for ref in refs:
        task = ref()
        if task is None or compat.task_loop(task) not in dead:
            out.append(ref)
    return out
