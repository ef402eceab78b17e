"""Control actions: cancel a task, raise in a thread, signal a child process.

Each action touches the host only the way the host itself would: cancel runs on the
task's own loop via ``call_soon_threadsafe``; raising uses PyThreadState_SetAsyncExc;
signals go only to descendants of the host, identified by pid *and* start time.
"""

from __future__ import annotations

import builtins
import ctypes
import signal as signal_module
import threading
import time
from typing import Any

import psutil

from agent.collect.children import ChildTracker
from agent.collect.tasks import TaskRegistry, task_state
from agent.collect.threads import find_thread
from agent.errors import BadRequest, Gone, NotFound

CANCEL_SCHEDULE_TIMEOUT = 2.0
CANCEL_FINISH_TIMEOUT = 1.0
THREAD_EXIT_WAIT = 1.0
SIGNAL_EXIT_WAIT = 2.0
SIGNALS = {"TERM": signal_module.SIGTERM, "KILL": signal_module.SIGKILL}
if hasattr(signal_module, "SIGINT"):
    SIGNALS["INT"] = signal_module.SIGINT


def cancel_task(registry: TaskRegistry, task_id: str, message: str) -> str:
    """Cancel a task on its own loop and report what happened."""
    task = registry.find_task(task_id)
    if task is None:
        raise NotFound(f"no task {task_id} (it may have finished and been collected)")
    if task.done():
        raise Gone(f"task {task_id} already finished ({task_state(task)})")
    loop = task.get_loop()
    if loop.is_closed():
        raise Gone(f"task {task_id} belongs to a closed event loop")
    scheduled = threading.Event()
    finished = threading.Event()
    outcome: dict[str, Any] = {}

    def _cancel() -> None:
        try:
            outcome["requested"] = task.cancel(message or None)
            task.add_done_callback(lambda _t: finished.set())
        except Exception as exc:
            outcome["error"] = repr(exc)
        finally:
            scheduled.set()

    loop.call_soon_threadsafe(_cancel)
    if not scheduled.wait(CANCEL_SCHEDULE_TIMEOUT):
        return (
            f"cancel of {task_id} queued, but its event loop has not run it within "
            f"{CANCEL_SCHEDULE_TIMEOUT:.0f}s (the loop may be blocked); it will be cancelled "
            "when the loop runs again"
        )
    if "error" in outcome:
        raise Gone(f"cancel of {task_id} failed: {outcome['error']}")
    if not outcome.get("requested"):
        raise Gone(f"task {task_id} finished before the cancel reached it")
    if finished.wait(CANCEL_FINISH_TIMEOUT):
        return f"task {task_id} ({task.get_name()}) {task_state(task)}"
    return (
        f"cancel delivered to task {task_id} ({task.get_name()}); it is still running its "
        "cleanup or suppressing CancelledError"
    )


def exception_class(name: str) -> type[BaseException]:
    """A builtin exception class by name; anything else is refused."""
    cls = getattr(builtins, name, None)
    if not (isinstance(cls, type) and issubclass(cls, BaseException)):
        raise BadRequest(f"{name!r} is not a builtin exception name (e.g. SystemExit)")
    return cls


def raise_in_thread(
    thread: threading.Thread, target: str, exc_name: str, agent_idents: set[int]
) -> str:
    """Schedule a builtin exception in ``thread`` (named ``target``, already verified to be
    that very thread) and say honestly when it lands."""
    exc = exception_class(exc_name)
    ident = thread.ident
    if ident is None or ident in agent_idents:
        raise BadRequest("refusing to raise in one of the agent's own threads")
    # Checked again right before the call: the exception is aimed by ident, which the next
    # thread inherits as soon as this one ends.
    if not thread.is_alive() or find_thread(ident) is not thread:
        raise NotFound(f"no thread {target} (it has ended)")
    modified = ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(ident), ctypes.py_object(exc)
    )
    if modified == 0:
        raise Gone(f"thread {target} ended before the exception was set")
    if modified > 1:  # should never happen; undo as the CPython docs require
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), None)
        raise Gone("exception matched several thread states and was withdrawn")
    note = (
        f"{exc_name} set in thread {thread.name!r} ({target}): it is raised at the "
        "thread's next Python bytecode; it cannot interrupt C code (a sleep, lock wait or "
        "blocking I/O call) until that call returns"
    )
    thread.join(THREAD_EXIT_WAIT)
    if not thread.is_alive():
        return note + "; the thread has ended"
    return note + "; the thread is still alive (it may be blocked in C code or caught it)"


def signal_child(children: ChildTracker, pid: int, signame: str) -> str:
    """Send SIGTERM/SIGKILL/SIGINT to a descendant of the host, never to anything else."""
    sig = SIGNALS.get(signame.upper().removeprefix("SIG"))
    if sig is None:
        raise BadRequest(f"unsupported signal {signame!r}; use one of {', '.join(SIGNALS)}")
    proc = children.find(pid)
    if proc is None:
        raise NotFound(f"pid {pid} is not a live child process of this node")
    try:
        name = proc.name()
        proc.send_signal(sig)
    except psutil.NoSuchProcess as exc:
        raise Gone(f"pid {pid} exited before the signal was sent") from exc
    deadline = time.monotonic() + SIGNAL_EXIT_WAIT
    while time.monotonic() < deadline:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.02)  # the agent polls; the host's own wait() reaps the child
    else:
        return f"SIG{signame.upper().removeprefix('SIG')} sent to pid {pid} ({name}); still running"
    return f"SIG{signame.upper().removeprefix('SIG')} sent to pid {pid} ({name}); it exited"
