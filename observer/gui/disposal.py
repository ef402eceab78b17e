"""Free big replaced data (100k rows) on a background thread, not the GUI thread.

Dropping the last reference to a large structure frees it on the spot; doing that in a
thread of its own keeps the GUI thread responsive while it happens.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

_trash: queue.SimpleQueue[Any] = queue.SimpleQueue()
_lock = threading.Lock()
_thread: threading.Thread | None = None
_pending = 0  # objects handed over and not yet freed
_idle = threading.Condition(_lock)


def dispose(obj: Any) -> None:
    """Hand ``obj`` over to be freed; the caller must hold no other reference to it."""
    global _thread, _pending
    if obj is None:
        return
    with _lock:
        if _thread is None:
            _thread = threading.Thread(target=_run, name="observer-disposal", daemon=True)
            _thread.start()
        _pending += 1
    _trash.put(obj)


def drain(timeout: float = 5.0) -> bool:
    """Wait until everything handed over is freed (before the program exits: PyQt's exit
    cleanup walks every Qt wrapper, and a garbage collection started meanwhile by this
    thread's frees can pull wrappers out from under it: a crash at exit)."""
    with _idle:
        return _idle.wait_for(lambda: _pending == 0, timeout)


def _run() -> None:
    global _pending
    while True:
        obj = _trash.get()
        dismantle = getattr(obj, "dismantle", None)
        if dismantle is not None:
            dismantle()
        del obj, dismantle
        with _idle:
            _pending -= 1
            _idle.notify_all()
