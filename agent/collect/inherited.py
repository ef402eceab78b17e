"""Loops a forked child inherited from its parent's other threads: dead in the child.

After fork() only the forking thread lives on. A loop that was running in any other
thread of the parent never runs again in the child, yet its tasks sit in the copied
asyncio registries, and a new thread of the child may even reuse the old thread's ident
(so the loop would seem to run there, with a lag as old as the fork). The fork handler
(agent.forking) marks them once; listings leave them and their tasks out.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from agent import compat

_dead: weakref.WeakSet[Any] = weakref.WeakSet()


def forget_inherited_loops() -> None:
    """In a forked child, right after fork: every loop that was running in another thread
    of the parent is dead here. The forking thread's own loop (a fork from inside a
    callback) runs on in the child, so it is kept."""
    me = threading.get_ident()
    for loop in {id(lp): lp for lp in map(compat.task_loop, compat.registered_tasks())}.values():
        ident = compat.loop_thread_id(loop) if loop is not None else None
        if ident is not None and ident != me:
            _dead.add(loop)


def any_dead() -> bool:
    """Whether this process inherited any dead loop (only ever in a forked child)."""
    return bool(_dead)


def is_dead(loop: Any) -> bool:
    """Whether ``loop`` is one this process inherited dead from its parent."""
    return bool(_dead) and loop in _dead


def live(tasks: list[Any]) -> list[Any]:
    """``tasks`` without those of inherited dead loops (a no-op unless this is a child)."""
    if not _dead:
        return tasks
    dead = _dead
    return [t for t in tasks if compat.task_loop(t) not in dead]


def live_refs(refs: list[Any]) -> list[Any]:
    """The same for weak references to tasks (gone ones are kept: the caller drops them)."""
    if not _dead:
        return refs
    dead = _dead
    out = []
    for ref in refs:
        task = ref()
        if task is None or compat.task_loop(task) not in dead:
            out.append(ref)
    return out
