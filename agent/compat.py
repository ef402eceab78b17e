"""Every CPython version difference the agent depends on, one function each.

The rest of the agent calls these and never reads a private asyncio attribute or
branches on ``sys.version_info`` itself. Each function has a test in
``tests/test_compat.py`` that runs on every supported Python (3.10-3.15) and fails on
the version where the function's assumption breaks.

What changed where:
- 3.10/3.11: every task is in the ``asyncio.tasks._all_tasks`` WeakSet.
- 3.12/3.13: ``_scheduled_tasks`` (WeakSet) plus ``_eager_tasks`` (a set, eager steps).
- 3.14+: native tasks live in per-thread lists inside ``_asyncio``; only
  ``asyncio.all_tasks(loop)`` sees them, one loop at a time. Futures record who awaits
  them (``future_add_to_awaited_by``: plain awaits, gather, wait, shield, TaskGroup),
  which ``asyncio.capture_call_graph`` reads.
"""

from __future__ import annotations

import asyncio
import dis
import gc
import os
import sys
import time
import tracemalloc
import types
from typing import Any

try:
    import _tracemalloc  # CPython's C module: its _get_traces is the fast path
except ImportError:  # pragma: no cover - other implementations
    _tracemalloc = None  # type: ignore[assignment]

# 3.14+: the module-level registries hold only pure-Python and eager tasks.
TASKS_PER_THREAD = sys.version_info >= (3, 14)
# 3.14+: futures know the futures/tasks that await them.
AWAITED_BY = hasattr(asyncio, "capture_call_graph")
# 3.12+: asyncio.eager_task_factory exists.
EAGER_TASKS = hasattr(asyncio, "eager_task_factory")
# 3.11+: a coroutine's frame object is made on first access (``cr_frame``) and then lives
# as long as the coroutine; before, every coroutine has one from the start.
FRAMES_ON_DEMAND = sys.version_info >= (3, 11)
_YIELDS = frozenset({"YIELD_VALUE", "YIELD_FROM"})  # YIELD_FROM: up to 3.10

_REGISTRY_NAMES = ("_all_tasks", "_scheduled_tasks", "_eager_tasks")
_type_mro = type.__dict__["__mro__"].__get__  # C slot: a metaclass cannot intercept it
_LOOP_TYPE = asyncio.AbstractEventLoop
_C_TASK = asyncio.Task
_PY_TASK = getattr(asyncio.tasks, "_PyTask", asyncio.Task)
_TASKGROUP = getattr(asyncio, "TaskGroup", None)  # 3.11+


def _registries() -> list[Any]:
    """asyncio's module-level task registries present on this version (private)."""
    found = []
    for name in _REGISTRY_NAMES:
        value = getattr(asyncio.tasks, name, None)
        if value is not None and not callable(value) and hasattr(value, "__len__"):
            found.append(value)
    return found


def _copy_set(collection: Any) -> list[Any]:
    """Copy a (weak) set the host may be mutating, retrying like asyncio.all_tasks does."""
    refs = getattr(collection, "data", None)  # WeakSet: its set of refs, copied in one C call
    for _ in range(100):
        try:
            if type(refs) is set:
                return [t for t in [r() for r in list(refs)] if t is not None]
            return list(collection)
        except RuntimeError:  # changed size during iteration
            continue
    return []


def registered_tasks() -> list[Any]:
    """Tasks in asyncio's module-level registries, done ones included while referenced.

    Up to 3.13 that is every task of every loop; from 3.14 only pure-Python and eagerly
    running ones (see loop_tasks for the rest).
    """
    tasks: list[Any] = []
    for registry in _registries():
        tasks.extend(_copy_set(registry))
    return tasks


def registered_refs() -> tuple[list[Any], list[Any]]:
    """The registries' own weak references to their tasks, and the tasks a plain set holds.

    Up to 3.13 every task sits in a WeakSet whose ``data`` is a set of ``weakref.ref``
    objects that asyncio made: holding one of those tells a task apart from a later one at
    the same address (a dead ref answers None), without a weakref of the agent's own per
    task (each would be a GC-tracked object that survives, and enough of those trigger a
    full collection in the host). Tasks in plain sets (3.12+ ``_eager_tasks``, mid-step)
    come back as tasks. From 3.14 native tasks are in neither (see loop_tasks).
    """
    refs: list[Any] = []
    strong: list[Any] = []
    for registry in _registries():
        data = getattr(registry, "data", None)
        for _ in range(100):
            try:
                if type(data) is set:
                    refs.extend(list(data))
                else:
                    strong.extend(list(registry))
                break
            except RuntimeError:  # changed size during iteration
                continue
    return refs, strong


def registered_count() -> int:
    """len() of the registries: every task up to 3.13, without touching any task."""
    total = 0
    for registry in _registries():
        try:
            total += len(registry)
        except Exception:
            continue
    return total


def loop_tasks(loop: Any) -> list[Any]:
    """The loop's unfinished tasks through the public API (the only way on 3.14+)."""
    for _ in range(10):
        try:
            return list(asyncio.all_tasks(loop))
        except RuntimeError:  # a registry changed size while asyncio copied it
            continue
        except Exception:
            return []
    return []


def current_task(loop: Any) -> Any | None:
    """The task running a step on ``loop`` right now (public; works from any thread)."""
    try:
        return asyncio.current_task(loop)
    except Exception:
        return None


def task_loop(task: Any) -> Any | None:
    """The loop a task belongs to (``get_loop()`` is public since 3.7)."""
    try:
        return task.get_loop()
    except Exception:
        return getattr(task, "_loop", None)


def loop_thread_id(loop: Any) -> int | None:
    """Ident of the thread running ``loop`` (private ``_thread_id`` of BaseEventLoop)."""
    ident = getattr(loop, "_thread_id", None)
    return ident if type(ident) is int else None


FUT_WAITER = "_fut_waiter"  # getattr(task, FUT_WAITER, None) is fut_waiter(task), inlined


def fut_waiter(task: Any) -> Any | None:
    """The future a suspended task waits on (private ``_fut_waiter``; up to 3.13 the only
    link from a task to what it awaits). Hot loops read ``getattr(task, FUT_WAITER,
    None)`` themselves (a call less per task)."""
    return getattr(task, FUT_WAITER, None)


def local_values(coro: Any, frame: types.FrameType) -> list[Any]:
    """The values a suspended coroutine's frame holds (its locals and value stack), in no
    particular order, without ``f_locals``.

    ``f_locals`` on 3.10-3.12 builds a dict that stays attached to the frame (a GC-tracked
    survivor when it holds tasks); ``gc.get_referents`` returns a throwaway list instead.
    From 3.11 a coroutine's frame lives inside the coroutine, which visits the locals;
    on 3.10 the frame object does.
    """
    owner = frame if sys.version_info < (3, 11) else coro
    try:
        return [
            v for v in gc.get_referents(owner) if type(v) not in (types.CodeType, types.FrameType)
        ]
    except Exception:
        return []


def suspension_lines(code: types.CodeType) -> frozenset[int]:
    """The lines a coroutine of ``code`` can be suspended at: those of its yield points
    (every ``await``, ``async for``/``async with`` step and ``yield`` compiles to one).

    A suspended coroutine whose code has a single such line is at that line: its
    ``cr_frame`` need not be made (on 3.11+ a frame object per coroutine, counted by the
    GC as an allocation: enough of them start collections in the host).
    """
    try:
        offsets = [i.offset for i in dis.get_instructions(code) if i.opname in _YIELDS]
        lines = set()
        for start, end, line in code.co_lines():
            if line is not None and any(start <= offset < end for offset in offsets):
                lines.add(line)
        return frozenset(lines)
    except Exception:
        return frozenset()


def coroutine_suspended(coro: Any) -> bool:
    """True when a native coroutine is suspended at a yield point (3.11+ ``cr_suspended``);
    False when it is not, or the version cannot tell without its frame."""
    return getattr(coro, "cr_suspended", False) is True


def gather_children(future: Any) -> list[Any]:
    """The futures a gather() future waits for (private ``_children``)."""
    children = getattr(future, "_children", None)
    return list(children) if type(children) is list else []


_SHIELD_CALLBACK = "shield.<locals>._outer_done_callback"


def shielded(future: Any) -> Any | None:
    """The future a ``shield()`` outer future protects, or None (up to 3.13, where only
    the outer future's done callback, a closure over ``inner``, links them; private
    ``_callbacks``)."""
    callbacks = getattr(future, "_callbacks", None)
    if type(callbacks) is not list or len(callbacks) < 2:  # its own and the awaiting task's
        return None
    for entry in callbacks[:8]:
        callback = entry[0] if type(entry) is tuple and entry else entry
        if type(callback) is not types.FunctionType:
            continue
        if callback.__qualname__ != _SHIELD_CALLBACK:  # exact FunctionType: a C getset
            continue
        code = callback.__code__
        if "inner" in code.co_freevars and callback.__closure__:
            try:
                return callback.__closure__[code.co_freevars.index("inner")].cell_contents
            except (IndexError, ValueError):
                return None
    return None


def taskgroup_tasks(group: Any) -> list[Any]:
    """The tasks a TaskGroup (3.11+) still waits for (private ``_tasks``), [] for anything
    else."""
    try:
        if _TASKGROUP is None or _TASKGROUP not in _type_mro(type(group)):
            return []
    except Exception:
        return []
    tasks = getattr(group, "_tasks", None)
    return list(tasks) if type(tasks) is set else []


_task_types: dict[type, bool] = {}


def is_task(candidate: Any) -> bool:
    """True for an asyncio Task (C or Python), from C-level type slots only (the answer
    is kept per type: called for every task a snapshot walks)."""
    kind = type(candidate)
    known = _task_types.get(kind)
    if known is not None:
        return known
    try:
        mro = _type_mro(kind)
    except Exception:
        return False
    answer = _C_TASK in mro or _PY_TASK in mro
    if len(_task_types) > 1000:
        _task_types.clear()
    _task_types[kind] = answer
    return answer


def awaited_by(future: Any) -> frozenset[Any]:
    """Futures and tasks awaiting ``future`` (3.14+; empty before).

    Reads ``_asyncio_awaited_by``, the set that ``future_add_to_awaited_by`` fills and
    ``asyncio.capture_call_graph`` reads: the public function builds the whole ancestor
    graph (dataclasses per level) on every call, too heavy for 100k tasks per snapshot.
    A test checks both agree.
    """
    if not AWAITED_BY:
        return frozenset()
    try:
        parents = future._asyncio_awaited_by
    except Exception:
        return frozenset()
    return parents if type(parents) is frozenset else frozenset(parents or ())


def type_mro(kind: type) -> tuple[type, ...]:
    """A type's MRO read from its C slot (a metaclass cannot intercept it)."""
    return _type_mro(kind)  # type: ignore[no-any-return]


def task_error_type(task: Any) -> str:
    """The qualified name of the exception a finished task raised, '' if none.

    Reads the private ``_exception`` (C getset, or the pure-Python task's attribute):
    ``task.exception()`` would mark it retrieved and silence asyncio's "Task exception
    was never retrieved" report the host may rely on.
    """
    try:
        error = object.__getattribute__(task, "_exception")
    except Exception:
        return ""
    if error is None:
        return ""
    try:
        return str(type.__dict__["__qualname__"].__get__(type(error)))
    except Exception:
        return "?"


def trim_source_traceback(task: Any, frames: int) -> None:
    """Drop the innermost ``frames`` entries of a task's creation traceback (the private
    ``_source_traceback``, kept in debug mode), as ``create_task`` drops its own."""
    try:
        stack = object.__getattribute__(task, "_source_traceback")
        if isinstance(stack, list) and stack:  # a traceback.StackSummary, or None
            del stack[-frames:]
    except Exception:
        return


_names_kept: list[bool] = []


def factory_keeps_task_names() -> bool:
    """False where a loop with any task factory renames unnamed tasks: 3.13.0's
    ``create_task`` calls ``task.set_name(None)`` after the factory (they read "None").

    Probed once by running asyncio's own ``BaseEventLoop.create_task`` on a stand-in loop
    whose factory returns a stand-in task that records set_name calls.
    """
    if _names_kept:
        return _names_kept[0]
    names: list[Any] = []

    class _Task:
        def set_name(self, value: Any) -> None:
            names.append(value)

    class _Loop:
        def _check_closed(self) -> None:
            return None

        @staticmethod
        def _task_factory(loop: Any, coro: Any, **kwargs: Any) -> Any:
            return _Task()

    try:
        asyncio.BaseEventLoop.create_task(_Loop(), None)  # type: ignore[arg-type]
        kept = None not in names
    except Exception:
        kept = False
    _names_kept.append(kept)
    return kept


def is_event_loop(candidate: Any) -> bool:
    """True for an asyncio event loop, decided from C-level type slots (no host code runs:
    ``isinstance`` would consult a ``__class__`` property)."""
    try:
        return _LOOP_TYPE in _type_mro(type(candidate))
    except Exception:
        return False


def frame_self(frame: types.FrameType) -> Any | None:
    """The ``self`` argument of a method's frame, or None when the frame has none.

    Checked on the code object first (``co_varnames[0]``), so ``f_locals`` (a copy of
    every local up to 3.12, a proxy from 3.13) is read only for such frames.
    """
    code = frame.f_code
    if code.co_argcount < 1 or not code.co_varnames or code.co_varnames[0] != "self":
        return None
    try:
        return frame.f_locals.get("self")
    except Exception:
        return None


def code_name(code: types.CodeType) -> str:
    """A code object's qualified name (``co_qualname`` is 3.11+)."""
    return getattr(code, "co_qualname", None) or code.co_name


def coroutine_name(coro: Any) -> str:
    """The qualified name of a task's coroutine, read from C-level slots only.

    Native coroutines and generators carry ``__qualname__`` in a getset; anything else
    (a host's awaitable class) is named by its type, so no host ``__getattr__`` runs.
    """
    kind = type(coro)
    if kind in (types.CoroutineType, types.GeneratorType, types.AsyncGeneratorType):
        return str(coro.__qualname__)
    try:
        return str(type.__dict__["__qualname__"].__get__(kind))
    except Exception:
        return "?"


def tracemalloc_traces() -> list[tuple[Any, ...]]:
    """tracemalloc's traces as (domain, size, traceback innermost first, ...) tuples.

    The private ``_tracemalloc._get_traces`` is what ``take_snapshot`` wraps, without a
    Trace object per allocation (1M traces); the public API is the fallback.
    """
    get = getattr(_tracemalloc, "_get_traces", None)
    if get is not None:
        return get()
    return [
        (0, t.size, tuple((f.filename, f.lineno) for f in reversed(t.traceback)))
        for t in tracemalloc.take_snapshot().traces
    ]


def environ_state() -> tuple[Any, ...]:
    """What says whether the process's environment changed since it was last read: the
    raw (encoded) items os.environ keeps (private ``os.environ._data``, copied at C
    speed), else its decoded items (every item through os.environ's __getitem__,
    ~80 us for 35 variables: a third of a worker's process facts per refresh)."""
    raw = getattr(os.environ, "_data", None)
    if type(raw) is dict:
        return tuple(raw.items())
    return tuple(os.environ.items())


def multiprocessing_children() -> dict[int, str]:
    """pid -> name (``ForkPoolWorker-2``, ``SpawnProcess-1``) of the multiprocessing
    processes this process started and has not joined (private:
    ``multiprocessing.process._children``, read without the side effects of
    ``active_children()``, which reaps)."""
    module = sys.modules.get("multiprocessing.process")
    children = getattr(module, "_children", None) if module is not None else None
    out: dict[int, str] = {}
    for process in _copy_set(children) if children is not None else []:
        pid = getattr(getattr(process, "_popen", None), "pid", None)
        name = getattr(process, "_name", None)
        if type(pid) is int and type(name) is str:
            out[pid] = name
    return out


_HANDLE_RUN = getattr(getattr(asyncio.events.Handle, "_run", None), "__code__", None)


def running_handle(frame: types.FrameType) -> Any | None:
    """The asyncio Handle a frame of ``Handle._run`` is running (its ``self``), or None for
    any other frame. ``Handle._run`` is private but pure Python on every version: the one
    frame on a loop thread's stack that names the callback being run."""
    if _HANDLE_RUN is None or frame.f_code is not _HANDLE_RUN:
        return None
    return frame_self(frame)


def handle_callback(handle: Any) -> Any | None:
    """The callback a Handle runs (private ``_callback``; None once it was cancelled)."""
    try:
        return asyncio.events.Handle.__dict__["_callback"].__get__(handle)  # a slot
    except Exception:
        return None


_THREAD_CLOCKS = sys.platform.startswith("linux") and hasattr(time, "clock_gettime")
# Linux system call numbers of the epoll waits (epoll_wait, epoll_pwait, epoll_pwait2) on the
# machines whose tables are known; elsewhere a thread's wait cannot be told (None below)
_EPOLL_WAITS: frozenset[int] | None = {
    "x86_64": frozenset({232, 281, 441}),
    "aarch64": frozenset({22, 441}),
}.get(os.uname().machine if sys.platform.startswith("linux") else "")


def loop_selector_fd(loop: Any) -> int | None:
    """The descriptor a selector event loop waits on for I/O (its selector's: an epoll on
    Linux), or None for a loop with none (uvloop, the proactor). ``_selector`` is private
    to ``BaseSelectorEventLoop`` on every version; ``fileno()`` is the selector's public
    method."""
    selector = getattr(loop, "_selector", None)
    try:
        fd = selector.fileno() if selector is not None else -1
    except Exception:
        return None
    return fd if type(fd) is int and fd >= 0 else None


def thread_syscall_file(native_id: int | None) -> int | None:
    """An open descriptor of a thread's ``/proc/self/task/TID/syscall`` (what system call
    it stands in), for ``thread_waits_on``; None where that cannot be told (not Linux, an
    unknown machine, a thread gone). The caller closes it."""
    if _EPOLL_WAITS is None or type(native_id) is not int or native_id <= 0:
        return None
    try:
        return os.open(f"/proc/self/task/{native_id}/syscall", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


def thread_waits_on(syscall_fd: int, epfd: int) -> bool:
    """True while the thread whose syscall file ``syscall_fd`` is stands in an epoll wait
    on ``epfd`` (an idle selector loop's own wait for I/O), False when it runs or waits
    on anything else (a sleep, a lock, another selector), or when it cannot be read. One
    positional read of a few bytes: no frame of any thread is made or touched."""
    try:
        head = os.pread(syscall_fd, 64, 0).split(None, 2)
        return (
            _EPOLL_WAITS is not None
            and len(head) >= 2
            and int(head[0]) in _EPOLL_WAITS
            and int(head[1], 16) == epfd
        )
    except (OSError, ValueError):
        return False


def thread_cpu_time(native_id: int | None) -> float | None:
    """CPU seconds a thread of this process has used, by its native id; None when unknown.

    Linux: the thread's own CPU clock, whose id the kernel derives from the thread id
    (``MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED)``, what glibc's ``pthread_getcpuclockid``
    returns). Unlike ``pthread_getcpuclockid``, a thread that already ended gives EINVAL,
    never undefined behaviour. Elsewhere: None (callers then say they cannot tell).
    """
    if not _THREAD_CLOCKS or type(native_id) is not int or native_id <= 0:
        return None
    try:
        return time.clock_gettime((~native_id << 3) | 6)
    except (OSError, OverflowError, ValueError):
        return None


_MONITORING = getattr(sys, "monitoring", None)  # 3.12+ (PEP 669)
_FREE_TOOLS = (4, 3, 5, 2)  # ids no standard tool claims first; debugger/coverage last
_get_running_loop = asyncio._get_running_loop  # public since 3.7 (``asyncio._get_running_loop``)
_c_get_coro = getattr(_C_TASK, "get_coro", None)


def step_monitoring() -> Any | None:
    """``sys.monitoring`` where task steps can be watched per code object (3.12+, local
    events), else None: CPU per task then says it needs 3.12+."""
    return _MONITORING


def claim_tool_id(name: str) -> int | None:
    """A ``sys.monitoring`` tool id claimed as ``name``, or None when all are taken (3.12+).
    The ids coverage and debuggers use by convention are tried last."""
    monitoring = _MONITORING
    if monitoring is None:
        return None
    for tool in (*_FREE_TOOLS, 1, 0):
        try:
            if monitoring.get_tool(tool) is None:
                monitoring.use_tool_id(tool, name)
                return tool
        except ValueError:  # taken between the check and the claim
            continue
    return None


def release_tool_id(tool: int, events: tuple[int, ...]) -> None:
    """Unregister ``tool``'s callbacks and free its id (3.12+; 3.14+ ``clear_tool_id`` also
    drops any event left set). Never raises."""
    monitoring = _MONITORING
    if monitoring is None:
        return
    try:
        clear = getattr(monitoring, "clear_tool_id", None)
        if clear is not None:
            clear(tool)
        for event in events:
            monitoring.register_callback(tool, event, None)
        monitoring.free_tool_id(tool)
    except Exception:
        return


def coroutine_code(coro: Any) -> types.CodeType | None:
    """The code object of a native coroutine (its frames' code), None for anything else
    (a generator-based coroutine, a Cython or custom awaitable)."""
    return coro.cr_code if type(coro) is types.CoroutineType else None


def running_task() -> Any | None:
    """The task whose step runs on this thread's running loop, or None (no loop runs here,
    or it runs a plain callback); C calls only, for the step hooks of CPU per task."""
    loop = _get_running_loop()
    return None if loop is None else asyncio.current_task(loop)


def task_coro(task: Any) -> Any | None:
    """A task's coroutine without running a subclass's ``get_coro`` (C slot; the pure
    Python task's ``_coro``)."""
    try:
        return _c_get_coro(task) if _c_get_coro is not None else task._coro
    except TypeError:  # a pure-Python task (asyncio.tasks._PyTask)
        return getattr(task, "_coro", None)
    except Exception:
        return None
