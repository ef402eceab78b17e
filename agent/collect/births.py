"""When each asyncio task was created: a task factory chained in front of a loop's own.

asyncio records no creation time, and the agent only sees a task when it first looks,
so without help an age is "time since the agent first saw it". On every loop the agent
finds (``Births.hook``), a ``TaskFactory`` is put in front of the loop's factory (the
app's own, an eager one, or none): it calls that factory exactly as the loop would and
stamps the task it returns with the wall time (an attribute of the task: no table of
ours to keep in step, gone with the task). Tasks made before the hook, or without the
loop's ``create_task``, carry no stamp: their age is only known as a lower bound.

Never breaks the host: the factory passes every argument and exception through and
swallows only its own stamping failure; loops whose factory methods or attribute hooks
are the host's own Python code are left alone (hooking would run host code); on agent
stop each factory is taken back out where it is still the loop's, and otherwise turned
into a pass-through. Caveat: while hooked, ``loop.get_task_factory()`` returns the
agent's factory, not the app's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import types
import weakref
from typing import Any

from agent import compat

log = logging.getLogger("agent")

STAMP = "_runtime_observer_created"  # the task attribute holding its creation wall time
MAX_LOOPS = 256  # loops remembered before the dead ones are forgotten
MAX_REHOOKS = 3  # times a loop is hooked again after the app replaced the factory
_BASE = asyncio.BaseEventLoop
_HOOKS = ("__getattribute__", "__getattr__", "__setattr__", "_task_factory", "create_task")
_getattribute = object.__getattribute__  # no subclass __getattr__/__getattribute__ runs
_setattr = object.__setattr__
_now = time.time
_tasks = asyncio.tasks  # its Task is looked up per task, as create_task does
_type_dict = type.__dict__["__dict__"].__get__  # C slots: a metaclass cannot intercept them
_module_of = type.__dict__["__module__"].__get__


_PLAIN = frozenset({asyncio.Task, getattr(asyncio.tasks, "_PyTask", asyncio.Task)})
_stamping = [False]  # True once any loop was hooked: until then no task has a stamp
# called with each new task's coroutine before the task is made (its first step may be
# eager): CPU per task watches its code (agent.collect.taskcpu); never raises
on_create: list[Any] = [None]


def created(task: Any) -> float | None:
    """The wall time a task was created, when a factory of the agent stamped it.

    asyncio's own task types are read with getattr's default (0.2 us where the raised and
    caught AttributeError of the safe path costs 2.7 us, on every first sight of a task
    made before the hook); other types without running a ``__getattr__`` of theirs.
    """
    if not _stamping[0]:
        return None
    if type(task) in _PLAIN:
        value = getattr(task, STAMP, None)
    else:
        try:
            value = _getattribute(task, STAMP)
        except Exception:
            return None
    return value if type(value) is float else None


class TaskFactory:
    """Makes tasks as the loop's previous factory would (``previous`` None: as the loop
    itself would), then stamps them with their creation time while ``active``."""

    __slots__ = ("__weakref__", "active", "previous")

    def __init__(self, previous: Any) -> None:
        self.previous = previous
        self.active = True

    def __call__(self, loop: Any, coro: Any, **kwargs: Any) -> Any:
        born = _now()
        watch = on_create[0]
        if watch is not None:
            watch(coro)
        previous = self.previous
        if previous is None:
            task = _tasks.Task(coro, loop=loop, **kwargs)  # what create_task does
            if loop.get_debug():  # a creation traceback was kept: end it where create_task
                compat.trim_source_traceback(task, 2)  # would (without this frame and its)
        else:
            task = previous(loop, coro, **kwargs)
        if self.active:
            try:  # noqa: SIM105 (the host's hot path: no context manager per task)
                _setattr(task, STAMP, born)
            except Exception:  # a factory of the app's returning something unstampable
                pass
        return task

    def __repr__(self) -> str:
        return f"<runtime-observer TaskFactory in front of {self.previous!r}>"


def _methods(loop: Any) -> tuple[Any, Any] | None:
    """The loop type's get/set_task_factory when calling them runs no host code: asyncio's
    own or C ones (uvloop), on a type defining none of _HOOKS in Python; else None."""
    try:
        mro = compat.type_mro(type(loop))
    except Exception:
        return None
    modules = [str(_module_of(c)) for c in mro]
    if _BASE not in mro and not any(m.startswith("uvloop") for m in modules):
        return None
    found: dict[str, Any] = {}
    for cls, module in zip(mro, modules, strict=True):
        namespace = _type_dict(cls)
        own = module.startswith(("asyncio.", "uvloop")) or cls is object
        for name in ("get_task_factory", "set_task_factory", *_HOOKS):
            if name in namespace and name not in found:
                value = namespace[name]
                if not own and (name in _HOOKS or type(value) is types.FunctionType):
                    return None  # the host's own code would run
                found[name] = value
    getter, setter = found.get("get_task_factory"), found.get("set_task_factory")
    if getter is None or setter is None:
        return None
    return getter, setter


class Births:
    """The loops the agent hooked, and when; thread-safe; see the module."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loops: dict[int, tuple[Any, TaskFactory, float, int]] = {}  # id -> ref, ...
        self._refused: dict[int, Any] = {}  # id(loop) -> weak ref, loops left alone
        self.closed = not compat.factory_keeps_task_names()
        self.fresh = False  # a loop was hooked since the last take_fresh()

    def hook(self, loop: Any) -> None:
        """Chain a TaskFactory in front of ``loop``'s factory, unless it already is there
        or the loop's type cannot be hooked without running host code."""
        if self.closed:
            return
        key = id(loop)
        entry = self._loops.get(key)
        try:
            if entry is not None and entry[0]() is loop:
                methods = _methods(loop)
                if methods is None or methods[0](loop) is entry[1]:
                    return  # still in place
                if entry[3] >= MAX_REHOOKS:
                    return
                rehooks = entry[3] + 1  # the app set a factory of its own since: go first
            else:
                refused = self._refused.get(key)
                if refused is not None and refused() is loop:
                    return
                methods = _methods(loop)
                rehooks = 0
            if methods is None:
                if len(self._refused) >= MAX_LOOPS:
                    self._prune()
                self._refused[key] = weakref.ref(loop)
                return
            getter, setter = methods
            with self._lock:
                if self.closed:
                    return
                factory = TaskFactory(getter(loop))
                setter(loop, factory)
                if entry is not None:
                    entry[1].active = False  # a pass-through wherever the app still calls it
                if len(self._loops) >= MAX_LOOPS:  # loops come and go (asyncio.run per job)
                    self._prune()
                self._loops[key] = (weakref.ref(loop), factory, time.time(), rehooks)
                self.fresh = True
                _stamping[0] = True
        except Exception:
            log.debug("runtime-observer agent: cannot hook a task factory", exc_info=True)
            with contextlib.suppress(Exception):  # not even weakly referable: tried again
                self._refused[key] = weakref.ref(loop)

    def _prune(self) -> None:
        """Forget loops that are gone (their weak reference is dead)."""
        for table in (self._loops, self._refused):
            for key, value in list(table.items()):
                ref = value[0] if type(value) is tuple else value
                if ref() is None:
                    del table[key]

    def hooked(self, loop: Any) -> bool:
        """True while the agent's factory stamps this loop's new tasks."""
        entry = self._loops.get(id(loop))
        return entry is not None and entry[0]() is loop

    def take_fresh(self) -> bool:
        """True once after a loop was newly hooked (its older tasks should be seen now)."""
        fresh, self.fresh = self.fresh, False
        return fresh

    def close(self) -> None:
        """Take every factory back out (or make it a pass-through where the app has put
        one of its own in front since); hook nothing more. Never raises."""
        with self._lock:
            self.closed = True
            entries, self._loops = list(self._loops.values()), {}
            self._refused.clear()
        for ref, factory, _at, _rehooks in entries:
            factory.active = False
            loop = ref()
            methods = _methods(loop) if loop is not None else None
            if methods is None:
                continue
            try:
                if methods[0](loop) is factory:
                    methods[1](loop, factory.previous)
            except Exception:
                log.debug("runtime-observer agent: cannot unhook a task factory", exc_info=True)
