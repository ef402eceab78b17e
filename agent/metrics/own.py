"""A worker's own Python series, for its master's scrape (agent.metrics.workeragents).

A worker serves no metrics port of its own: its master asks the worker's agent (the
read-only exposed ``metric_families``) at each scrape, and labels what comes back with the
worker's slot. Built at the first ask, in the worker: GC counts per generation, threads,
tracemalloc while it traces, asyncio tasks per loop, loop lag (a histogram and the max
since the previous scrape, probed every second by a thread of its own, as the master's
endpoint thread probes the master's loops) and stalls per loop.

The reply is compact: per family its name, type, help and samples as plain lists. The
master takes only the families named in FAMILIES, with the type given there, and builds
them with the strict writer, so a worker cannot add a label the master would not.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterable
from typing import Any

from agent.metrics.exposition import Family
from agent.metrics.runtime import AsyncioCollector, PythonCollector, StallCollector

log = logging.getLogger("agent")

TICK_EVERY = 1.0  # seconds between loop-lag probes (as the endpoint thread's tick)
# what a worker may send its master: family name -> type
FAMILIES = {
    "python_gc_objects_collected": "counter",
    "python_gc_objects_uncollectable": "counter",
    "python_gc_collections": "counter",
    "python_threads": "gauge",
    "python_tracemalloc_traced_bytes": "gauge",
    "python_tracemalloc_peak_bytes": "gauge",
    "python_asyncio_loops": "gauge",
    "python_asyncio_tasks": "gauge",
    "python_asyncio_loop_lag_seconds": "histogram",
    "python_asyncio_loop_lag_max_seconds": "gauge",
    "python_asyncio_loop_stalls": "counter",
    "python_asyncio_loop_stall_seconds": "counter",
}
# labels a worker's samples may carry (the master adds ``worker`` in front)
LABELS = frozenset({"generation", "loop", "le"})

Compact = tuple[tuple[str, str, str, tuple[tuple[str, tuple[str, ...], float], ...]], ...]


class OwnSeries:
    """The worker's collectors and the thread that probes its loops' lag."""

    def __init__(self, core: Any, on_thread: Any = None) -> None:
        self.asyncio = AsyncioCollector(core.tasks)
        self._collectors = (PythonCollector(), self.asyncio, StallCollector(core.stall_watch))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._on_thread = on_thread or (lambda _ident: None)
        self._thread = threading.Thread(
            target=self._run, name="observer-agent-metrics-tick", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        with contextlib.suppress(Exception):
            self._on_thread(threading.get_ident())
        while not self._stop.wait(TICK_EVERY):
            try:
                self.asyncio.tick()
            except Exception:  # contained: the next tick tries again
                log.debug("runtime-observer agent: worker lag tick failed", exc_info=True)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)

    def families(self) -> list[Family]:
        out: list[Family] = []
        for collector in self._collectors:
            try:
                out.extend(f for f in collector.collect() if f.name in FAMILIES)
            except Exception:  # one probe's failure leaves its families out
                log.debug("runtime-observer agent: worker metrics probe failed", exc_info=True)
        return out

    def compact(self, keep_max: bool) -> Compact:
        """The families as plain tuples; ``keep_max``: a look, not a scrape (the lag
        maxima stay for the next scrape)."""
        with self._lock:  # two of the master's sessions may ask at once
            self.asyncio.keep_max = keep_max
            try:
                families = self.families()
            finally:
                self.asyncio.keep_max = False
        return tuple(
            (
                f.name,
                f.type,
                f.help,
                tuple((s.suffix, _flat(s.labels), s.value) for s in f.samples),
            )
            for f in families
        )


def _flat(labels: Iterable[tuple[str, str]]) -> tuple[str, ...]:
    return tuple(part for pair in labels for part in pair)


_own_lock = threading.Lock()


def own_series(core: Any) -> OwnSeries:
    """The core's OwnSeries, built (and its thread started) at the first ask."""
    series = getattr(core, "own_series", None)
    if series is None:
        with _own_lock:
            series = getattr(core, "own_series", None)
            if series is None:
                series = core.own_series = OwnSeries(core, core.add_agent_thread)
    return series
