"""Python threads with their current location and OS CPU time (matched by native id)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable

import psutil

from agent.collect import guarded
from agent.collect.frames import code_location
from agent.schema import ThreadInfo

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


def collect_threads(
    process: psutil.Process,
    agent_idents: Iterable[int],
    loop_by_thread: dict[int, str],
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
                id=f"thread-{ident}",
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
