"""Event-loop lag, measured from outside: a no-op callback posted thread-safely.

Lag = time from ``call_soon_threadsafe`` to the callback running. At most one probe
per loop is outstanding, so a stuck loop cannot make probes pile up.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from typing import Any


class LagProbe:
    """Measures each loop's scheduling lag without touching the host's code."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
        self._last: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()

    def _arrived(self, loop: Any, sent: float) -> None:
        lag = time.monotonic() - sent
        with self._lock:
            self._pending.pop(loop, None)
            self._last[loop] = lag

    def probe(self, loops: list[asyncio.AbstractEventLoop]) -> None:
        """Post one probe to every running loop that has none outstanding."""
        now = time.monotonic()
        for loop in loops:
            try:
                if loop.is_closed() or not loop.is_running():
                    continue
                with self._lock:
                    if loop in self._pending:
                        continue
                    self._pending[loop] = now
                loop.call_soon_threadsafe(self._arrived, loop, now)
            except Exception:
                with self._lock:
                    self._pending.pop(loop, None)

    def lag(self, loop: Any) -> float | None:
        """Last measured lag, raised to the age of a probe still waiting to run."""
        with self._lock:
            last = self._last.get(loop)
            sent = self._pending.get(loop)
        if sent is None:
            return last
        waiting = time.monotonic() - sent
        return waiting if last is None else max(last, waiting)

    def worst(self, loops: list[Any]) -> float | None:
        """The largest lag among loops, None when nothing was measured."""
        values = [v for v in (self.lag(loop) for loop in loops) if v is not None]
        return max(values) if values else None
