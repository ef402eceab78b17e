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


def dispose(obj: Any) -> None:
    """Hand ``obj`` over to be freed; the caller must hold no other reference to it."""
    global _thread
    if obj is None:
        return
    with _lock:
        if _thread is None:
            _thread = threading.Thread(target=_run, name="observer-disposal", daemon=True)
            _thread.start()
    _trash.put(obj)


def _run() -> None:
    while True:
        obj = _trash.get()
        dismantle = getattr(obj, "dismantle", None)
        if dismantle is not None:
            dismantle()
        del obj, dismantle
