"""Load-history ring buffer and the sampler thread that fills it.

Samples every ``interval`` seconds while an observer is connected and every
``idle_interval`` seconds otherwise (0 = not at all), so a freshly opened chart has
the last minutes at once while an unobserved host pays next to nothing.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable

from agent.schema import History, HistorySample

log = logging.getLogger("agent")


class HistoryBuffer:
    """A bounded ring of HistorySample, safe to read from any thread."""

    def __init__(self, capacity: int, interval: float) -> None:
        self.capacity = capacity
        self.interval = interval
        self._samples: collections.deque[HistorySample] = collections.deque(maxlen=capacity)
        self._lock = threading.Lock()

    def add(self, sample: HistorySample) -> None:
        with self._lock:
            self._samples.append(sample)

    def newest(self) -> HistorySample | None:
        """The latest sample, or None before the first."""
        with self._lock:
            return self._samples[-1] if self._samples else None

    def snapshot(self, since: float = 0.0) -> History:
        """Samples newer than ``since`` (wall-clock seconds), oldest first."""
        with self._lock:
            samples = tuple(s for s in self._samples if s.time > since)
        return History(self.interval, self.capacity, samples)


class Sampler:
    """Daemon thread calling ``take`` on a schedule; errors are logged, never raised."""

    def __init__(
        self,
        take: Callable[[], HistorySample],
        buffer: HistoryBuffer,
        *,
        interval: float,
        idle_interval: float,
        observers: Callable[[], int],
        on_thread: Callable[[int], None],
        between: Callable[[], None] | None = None,
    ) -> None:
        self._take = take
        self._between = between  # called every ``interval`` s between idle samples
        self._buffer = buffer
        self._interval = interval
        self._idle_interval = idle_interval
        self._observers = observers
        self._on_thread = on_thread
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name="observer-agent-sampler", daemon=True
        )
        self._thread.start()

    def wake(self) -> None:
        """Re-evaluate the schedule now (an observer connected)."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)

    def _run(self) -> None:
        with contextlib.suppress(Exception):
            self._on_thread(threading.get_ident())
        errors = 0
        while not self._stop.is_set():
            busy = self._observers() > 0
            if busy or self._idle_interval > 0:
                try:
                    self._buffer.add(self._take())
                except Exception:
                    errors += 1
                    if errors <= 3:
                        log.exception("runtime-observer agent: history sample failed")
            delay = self._interval if busy else (self._idle_interval or 3600.0)
            next_at = time.monotonic() + delay
            while not self._stop.is_set():
                remaining = next_at - time.monotonic()
                if remaining <= 0:
                    break
                step = min(remaining, self._interval) if self._between else remaining
                if self._wake.wait(step):
                    self._wake.clear()
                    if self._observers() > 0 and not busy:
                        break
                elif self._between is not None and next_at - time.monotonic() > 0:
                    try:
                        self._between()
                    except Exception:
                        errors += 1
                        if errors <= 3:
                            log.exception("runtime-observer agent: looking for loops failed")
