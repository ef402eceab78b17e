"""Python threads with their current location and OS CPU time (matched by native id).

A thread's id is ``thread-<ident>-<serial>``: CPython reuses an ended thread's ident for
the next thread at once, so the serial (one per threading.Thread object, never reused in
this process) is what makes an id name one thread and go stale when it ends.
"""

from __future__ import annotations

import itertools
import os
import re
import sys
import threading
import weakref
from collections.abc import Collection, Iterable
from typing import Any

import psutil

from agent.collect import guarded
from agent.collect.frames import code_location
from agent.collect.pacing import pause_point
from agent.collect.procstat import cpu_seconds, read_proc, split_stat
from agent.errors import BadRequest, NotFound
from agent.schema import ThreadInfo

_THREAD_ID = re.compile(r"thread-(\d{1,20})-(\d{1,20})")

_LINUX_STATES = {
    "R": "running",
    "S": "sleeping",
    "D": "disk-wait",
    "T": "stopped",
    "t": "traced",
    "Z": "zombie",
    "X": "dead",
    "I": "idle",
}


_PROC_TASKS = sys.platform.startswith("linux") and os.path.isdir("/proc/self/task")


def _proc_thread(native_id: int) -> tuple[str, float | None]:
    """(scheduler state, user+system CPU seconds) of one of this process's OS threads,
    from one read of its /proc stat (Linux); ('unknown', None) when it cannot be read."""
    try:
        _comm, fields = split_stat(read_proc(f"/proc/self/task/{native_id}/stat"))
        state = fields[0].decode()
        cpu = cpu_seconds(fields)
    except (OSError, ValueError, IndexError, ZeroDivisionError):
        return "unknown", None
    return _LINUX_STATES.get(state, state), cpu


def thread_states(process: psutil.Process, native_ids: list[int]) -> dict[int, tuple[str, Any]]:
    """native id -> (scheduler state, CPU seconds or None) for these threads: one /proc
    read each on Linux, psutil's thread times elsewhere (state 'unknown')."""
    if _PROC_TASKS:
        states = {}
        for nid in native_ids:
            pause_point()  # ~20 us a thread: 50 threads would hold the GIL a millisecond
            states[nid] = _proc_thread(nid)
        return states
    threads = guarded(process.threads, [])
    cpu = {t.id: t.user_time + t.system_time for t in threads}
    return {nid: ("unknown", cpu.get(nid)) for nid in native_ids}


class ThreadIds:
    """Serials for threading.Thread objects (weakly held), and ids checked against them."""

    def __init__(self) -> None:
        self._serials: weakref.WeakKeyDictionary[threading.Thread, int] = (
            weakref.WeakKeyDictionary()
        )
        self._counter = itertools.count(1)
        self._lock = threading.Lock()

    def id_of(self, thread: threading.Thread) -> str:
        """The id of a live thread (its serial is given the first time it is seen)."""
        with self._lock:
            serial = self._serials.get(thread)
            if serial is None:
                serial = self._serials[thread] = next(self._counter)
        return f"thread-{thread.ident}-{serial}"

    def find(self, target: str) -> threading.Thread:
        """The live thread ``target`` names; NotFound if that thread has ended, even when
        its ident now belongs to another thread."""
        match = _THREAD_ID.fullmatch(target)
        if match is None:
            if re.fullmatch(r"thread-\d{1,20}", target):
                raise NotFound(
                    f"no thread {target}: thread ids are thread-IDENT-SERIAL as ps lists "
                    "them (an ident alone may name a later thread)"
                )
            raise BadRequest(f"{target!r} is not a thread id (thread-IDENT-SERIAL)")
        ident, serial = int(match.group(1)), int(match.group(2))
        thread = find_thread(ident)
        with self._lock:
            current = self._serials.get(thread) if thread is not None else None
        if thread is None or current != serial or not thread.is_alive():
            reused = f"; thread-{ident} now names another thread" if thread is not None else ""
            raise NotFound(f"no thread {target} (it has ended{reused})")
        return thread


THREAD_IDS = ThreadIds()  # one per process: ids stay valid across agent restarts


def collect_threads(
    process: psutil.Process,
    agent_idents: Iterable[int],
    loop_by_thread: dict[int, str],
    ids: ThreadIds = THREAD_IDS,
    hide: Collection[int] = (),
) -> list[ThreadInfo]:
    """Describe every live Python thread (but those in ``hide``: the threads of the
    very call that asks, which end with it)."""
    # Where each thread is, read in one go. No frame is kept in a local: the dict holds this
    # very frame, and the cycle would pin every thread's stack (every local on it, a reply
    # being sent included) until the next full gc.
    where = {ident: code_location(frame) for ident, frame in sys._current_frames().items()}
    agent_set = set(agent_idents)
    main_ident = threading.main_thread().ident
    threads = [t for t in threading.enumerate() if t.ident not in hide]
    native_ids = [getattr(thread, "native_id", None) for thread in threads]
    os_side = thread_states(process, [nid for nid in native_ids if nid is not None])
    out = []
    for thread, native_id in zip(threads, native_ids, strict=True):
        pause_point()
        ident = thread.ident
        if ident is None:
            continue
        state, cpu_time = os_side.get(native_id, ("unknown", None))  # type: ignore[arg-type]
        function, file, line = where.get(ident) or code_location(None)
        out.append(
            ThreadInfo(
                id=ids.id_of(thread),
                ident=ident,
                native_id=native_id,
                name=thread.name,
                daemon=thread.daemon,
                alive=thread.is_alive(),
                state=state,
                cpu_time=cpu_time,
                function=function,
                file=file,
                line=line,
                is_main=ident == main_ident,
                is_agent=ident in agent_set,
                loop=loop_by_thread.get(ident),
            )
        )
    return out


def find_thread(ident: int) -> threading.Thread | None:
    """The live threading.Thread with this ident, if any."""
    for thread in threading.enumerate():
        if thread.ident == ident:
            return thread
    return None
