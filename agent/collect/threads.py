"""Python threads with their current location and OS CPU time (matched by native id).

A thread's id is ``thread-<ident>-<serial>``: CPython reuses an ended thread's ident for
the next thread at once, so the serial (one per threading.Thread object, never reused in
this process) is what makes an id name one thread and go stale when it ends.
"""

from __future__ import annotations

import itertools
import re
import sys
import threading
import weakref
from collections.abc import Iterable

import psutil

from agent.collect import guarded
from agent.collect.frames import code_location
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


def _os_thread_state(native_id: int | None) -> str:
    """The scheduler state of one OS thread (Linux /proc), 'unknown' elsewhere."""
    if native_id is None or not sys.platform.startswith("linux"):
        return "unknown"
    try:
        with open(f"/proc/self/task/{native_id}/stat", "rb") as fh:
            raw = fh.read()
        state = raw[raw.rindex(b")") + 2 : raw.rindex(b")") + 3].decode()
    except (OSError, ValueError):
        return "unknown"
    return _LINUX_STATES.get(state, state)


def thread_cpu_times(process: psutil.Process) -> dict[int, float]:
    """user+system seconds per native thread id (empty when the OS will not say)."""
    threads = guarded(process.threads, [])
    return {t.id: t.user_time + t.system_time for t in threads}


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
) -> list[ThreadInfo]:
    """Describe every live Python thread."""
    # Where each thread is, read in one go. No frame is kept in a local: the dict holds this
    # very frame, and the cycle would pin every thread's stack (every local on it, a reply
    # being sent included) until the next full gc.
    where = {ident: code_location(frame) for ident, frame in sys._current_frames().items()}
    cpu = thread_cpu_times(process)
    agent_set = set(agent_idents)
    main_ident = threading.main_thread().ident
    out = []
    for thread in threading.enumerate():
        ident = thread.ident
        if ident is None:
            continue
        native_id = getattr(thread, "native_id", None)
        function, file, line = where.get(ident) or code_location(None)
        out.append(
            ThreadInfo(
                id=ids.id_of(thread),
                ident=ident,
                native_id=native_id,
                name=thread.name,
                daemon=thread.daemon,
                alive=thread.is_alive(),
                state=_os_thread_state(native_id),
                cpu_time=cpu.get(native_id) if native_id is not None else None,
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
