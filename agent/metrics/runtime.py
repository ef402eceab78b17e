"""The agent's collectors: the standard ``process_*`` and ``python_*`` families (the names and
meanings prometheus_client's default collectors use, so existing dashboards work), asyncio
tasks and loop lag per loop, GC pauses, tracemalloc, and the agent's own sessions and
control actions. Every probe is guarded: a failing one leaves its family out.

Labels come only from the agent's own bounded vocabularies: a GC generation (0-2), a loop's
agent-given id (``loop-N``, at most MAX_LOOPS of them, the rest summed as ``other``), an
action kind and result from agent.audit's fixed lists. Task and thread names never
become labels.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import platform
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import psutil

from agent.metrics.exposition import Family, add_histogram, counter, gauge, info
from agent.version import AGENT_VERSION, PROTOCOL_VERSION

log = logging.getLogger("agent")

MAX_LOOPS = 32  # loops with a label of their own; the others are summed as loop="other"
# loop lag: 100 us (a loop at rest) .. 10 s (a loop stalled by blocking code)
LAG_BOUNDS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
              2.5, 5.0, 10.0)  # fmt: skip
# one collection: 10 us (a young generation) .. 1 s (a full one over a huge heap)
GC_BOUNDS = (0.00001, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0)


def _bucket(bounds: Sequence[float], value: float) -> int:
    for i, bound in enumerate(bounds):
        if value <= bound:
            return i
    return len(bounds)


class ProcessCollector:
    """``process_*`` as prometheus_client and the Go client name them, plus threads and USS."""

    def __init__(self, process: psutil.Process | None = None, uss: bool = True) -> None:
        self._process = process or psutil.Process()
        self._uss = uss
        try:
            self._start = self._process.create_time()
        except (psutil.Error, OSError):
            self._start = None

    def collect(self) -> Iterable[Family]:
        p = self._process
        out: list[Family] = []
        probes = (
            ("process_cpu_seconds", "Total user and system CPU time spent in seconds.",
             lambda: sum(p.cpu_times()[:2])),
            ("process_virtual_memory_bytes", "Virtual memory size in bytes.",
             lambda: p.memory_info().vms),
            ("process_resident_memory_bytes", "Resident memory size in bytes.",
             lambda: p.memory_info().rss),
            ("process_threads", "Number of OS threads in the process.", p.num_threads),
            ("process_start_time_seconds", "Start time of the process since unix epoch in seconds.",
             lambda: self._start),
            ("process_open_fds", "Number of open file descriptors.", p.num_fds),
        )  # fmt: skip
        with p.oneshot():
            for name, text, read in probes:
                try:
                    got = read()
                except (psutil.Error, OSError, AttributeError, NotImplementedError):
                    continue  # denied, gone, or not on this platform (fds on Windows)
                if got is not None:
                    make = counter if name == "process_cpu_seconds" else gauge
                    out.append(make(name, text, got))
        max_fds = _max_fds()
        if max_fds is not None:
            out.append(
                gauge("process_max_fds", "Maximum number of open file descriptors.", max_fds)
            )
        if self._uss:
            try:
                uss = p.memory_full_info().uss
                out.append(
                    gauge(
                        "process_unique_memory_bytes",
                        "Memory unique to the process (USS) in bytes: what its exit would free.",
                        uss,
                    )
                )
            except (psutil.Error, OSError, AttributeError, NotImplementedError):
                self._uss = False  # denied or unsupported: it will not change, stop asking
        return out


def _max_fds() -> int | None:
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        return None if soft == resource.RLIM_INFINITY else int(soft)
    except Exception:
        return None


class GcTimer:
    """Times every collection through ``gc.callbacks``: a histogram per generation.

    The callback takes no lock: it runs on whatever thread collects, and that may be the
    metrics thread itself in the middle of reading these counts (a lock there would
    deadlock). Collections never overlap, so only the reader can see a half-updated
    histogram, off by one observation at most.
    """

    def __init__(self) -> None:
        self._started = 0.0
        self._generation = 0
        self.counts = [[0] * (len(GC_BOUNDS) + 1) for _ in range(3)]
        self.sums = [0.0, 0.0, 0.0]
        self._installed = False

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        try:
            if phase == "start":
                self._generation = info.get("generation", 0)
                self._started = time.perf_counter()
            elif self._started:
                took = time.perf_counter() - self._started
                self._started = 0.0
                g = self._generation if 0 <= self._generation < 3 else 2
                self.counts[g][_bucket(GC_BOUNDS, took)] += 1
                self.sums[g] += took
        except Exception:  # never into the collector (it would print and go on anyway)
            pass

    def install(self) -> None:
        if not self._installed:
            gc.callbacks.append(self._callback)
            self._installed = True

    def uninstall(self) -> None:
        if self._installed:
            with contextlib.suppress(ValueError):
                gc.callbacks.remove(self._callback)
            self._installed = False

    def family(self) -> Family:
        family = Family(
            "python_gc_pause_seconds",
            "histogram",
            "Time the garbage collector paused the interpreter per collection, by generation.",
        )
        for g in range(3):
            add_histogram(
                family, GC_BOUNDS, list(self.counts[g]), self.sums[g], (("generation", str(g)),)
            )
        return family


_GC_FAMILIES = (  # prometheus_client's names and help texts
    ("python_gc_objects_collected", "collected", "Objects collected during gc"),
    ("python_gc_objects_uncollectable", "uncollectable", "Uncollectable objects found during GC"),
    ("python_gc_collections", "collections", "Number of times this generation was collected"),
)


class PythonCollector:
    """``python_info`` and ``python_gc_*`` as prometheus_client names them, GC pause
    histograms, Python-level threads and tracemalloc's figures while it traces."""

    def __init__(self, gc_timer: GcTimer | None = None) -> None:
        self._timer = gc_timer
        major, minor, patch = (*platform.python_version_tuple(), "", "", "")[:3]
        self._info = {
            "implementation": platform.python_implementation(),
            "major": major,
            "minor": minor,
            "patchlevel": patch,
            "version": platform.python_version(),
        }

    def collect(self) -> Iterable[Family]:
        out = [info("python", "Python platform information", self._info)]
        try:
            stats = gc.get_stats()
        except Exception:
            stats = []
        if stats:
            for name, key, text in _GC_FAMILIES:
                family = Family(name, "counter", text)
                for g, s in enumerate(stats):
                    family.add(int(s.get(key, 0)), (("generation", str(g)),), "_total")
                out.append(family)
        if self._timer is not None:
            out.append(self._timer.family())
        out.append(
            gauge("python_threads", "Python threads alive (threading).", threading.active_count())
        )
        if tracemalloc.is_tracing():
            current, peak = tracemalloc.get_traced_memory()
            out.append(
                gauge(
                    "python_tracemalloc_traced_bytes",
                    "Memory traced by tracemalloc now, in bytes (present only while it traces).",
                    current,
                )
            )
            out.append(
                gauge(
                    "python_tracemalloc_peak_bytes",
                    "Peak memory traced by tracemalloc since it started or was reset, in bytes.",
                    peak,
                )
            )
        return out


class _LoopLag:
    __slots__ = ("counts", "max", "pending", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(LAG_BOUNDS) + 1)
        self.sum = 0.0
        self.max = 0.0  # since the last scrape
        self.pending = 0.0  # monotonic time the outstanding probe was posted, 0 = none


class AsyncioCollector:
    """Tasks per loop, and loop lag: ``tick()`` (on the metrics thread, every second)
    posts one no-op callback to each running loop with none outstanding; the time it
    takes to run is observed into that loop's histogram and its max since the last
    scrape. A stuck loop's max is the age of its outstanding probe."""

    def __init__(self, registry: Any) -> None:
        self._tasks = registry  # agent.collect.tasks.TaskRegistry
        self._lock = threading.Lock()
        self._lags: dict[int, _LoopLag] = {}
        self.keep_max = False  # a look that is not a scrape (observer metrics) resets nothing

    def _loops(self) -> list[tuple[int, Any]]:
        loops = []
        for loop, _ident in self._tasks.loops():
            try:
                if not loop.is_closed():
                    loops.append((self._tasks.loop_serial(loop), loop))
            except Exception:
                continue
        loops.sort(key=lambda item: item[0])
        return loops

    def tick(self) -> None:
        loops = self._loops()
        now = time.monotonic()
        live = {serial for serial, _ in loops}
        with self._lock:
            for serial in [s for s in self._lags if s not in live]:
                del self._lags[serial]  # the loop is gone: bounded by the live ones
        for serial, loop in loops[:MAX_LOOPS]:
            try:
                if not loop.is_running():
                    continue
                with self._lock:
                    lag = self._lags.setdefault(serial, _LoopLag())
                    if lag.pending:
                        continue
                    lag.pending = now
                loop.call_soon_threadsafe(self._arrived, serial, now)
            except Exception:
                with self._lock:
                    if serial in self._lags:
                        self._lags[serial].pending = 0.0

    def _arrived(self, serial: int, sent: float) -> None:
        """On the host's loop: a few arithmetic operations under a lock held as briefly."""
        took = time.monotonic() - sent
        with self._lock:
            lag = self._lags.get(serial)
            if lag is None or lag.pending != sent:
                return
            lag.pending = 0.0
            lag.counts[_bucket(LAG_BOUNDS, took)] += 1
            lag.sum += took
            lag.max = max(lag.max, took)

    def collect(self) -> Iterable[Family]:
        loops = self._loops()
        if len(loops) == 1:  # the common case: the registry's own count, no walk over tasks
            counts = {id(loops[0][1]): self._tasks.count_tasks()}
        else:
            counts = _count_tasks(self._tasks)
        tasks = Family(
            "python_asyncio_tasks",
            "gauge",
            "asyncio tasks by event loop: unfinished ones, and finished ones not yet freed.",
        )
        other = 0
        for i, (serial, loop) in enumerate(loops):
            count = counts.get(id(loop), 0)
            if i < MAX_LOOPS:
                tasks.add(count, (("loop", f"loop-{serial}"),))
            else:
                other += count
        if len(loops) > MAX_LOOPS:
            tasks.add(other, (("loop", "other"),))
        loop_count = gauge("python_asyncio_loops", "Event loops found (open).", len(loops))
        lag_hist = Family(
            "python_asyncio_loop_lag_seconds",
            "histogram",
            "Time a callback posted to the loop waited to run (sampled every second).",
        )
        lag_max = Family(
            "python_asyncio_loop_lag_max_seconds",
            "gauge",
            "Largest loop lag since the previous scrape, including a probe still waiting.",
        )
        now = time.monotonic()
        with self._lock:
            rows = []
            for serial, _loop in loops[:MAX_LOOPS]:
                lag = self._lags.get(serial)
                if lag is None:
                    continue
                waiting = now - lag.pending if lag.pending else 0.0
                rows.append((serial, list(lag.counts), lag.sum, max(lag.max, waiting)))
                if not self.keep_max:
                    lag.max = 0.0
        for serial, counts, total, worst in rows:
            labels = (("loop", f"loop-{serial}"),)
            add_histogram(lag_hist, LAG_BOUNDS, counts, total, labels)
            lag_max.add(worst, labels)
        return [loop_count, tasks, lag_hist, lag_max]


class StallCollector:
    """Stalls the stall catcher (agent.collect.stalls) caught per loop, and their seconds:
    counters from the loop's first watch, zero until its first stall (so ``rate()`` sees
    the first one); nothing while the catcher is off."""

    def __init__(self, watch: Any) -> None:
        self._watch = watch  # agent.collect.stalls.StallWatch

    def collect(self) -> Iterable[Family]:
        if not self._watch.enabled:
            return []
        count = Family(
            "python_asyncio_loop_stalls",
            "counter",
            "Stalls the agent's stall catcher caught on the loop: its heartbeat waited past "
            "the stall threshold (counted when the loop runs again).",
        )
        seconds = Family(
            "python_asyncio_loop_stall_seconds",
            "counter",
            "Time the loop spent in the stalls counted by python_asyncio_loop_stalls_total.",
        )
        for loop, (n, took) in sorted(self._watch.totals().items(), key=_loop_order):
            count.add(n, (("loop", loop),), "_total")
            seconds.add(took, (("loop", loop),), "_total")
        return [count, seconds]


def _loop_order(item: tuple[str, Any]) -> tuple[int, str]:
    serial = item[0].rpartition("-")[2]
    return (int(serial) if serial.isdigit() else 1 << 62, item[0])


def _count_tasks(registry: Any) -> dict[int, int]:
    """Tasks by id() of their loop, in one pass over every task (asking each loop in turn
    would walk the whole registry once per loop up to 3.13); as with one loop's count
    (TaskRegistry.count_tasks), finished tasks count until they are freed."""
    from agent import compat

    counts: dict[int, int] = {}
    for task in registry.all_tasks():
        try:
            key = id(compat.task_loop(task))
        except Exception:
            continue
        counts[key] = counts.get(key, 0) + 1
    return counts


class AgentCollector:
    """Build info, observer sessions, control actions by kind, and the scrape's own cost."""

    def __init__(
        self,
        core: Any,
        scrape_stats: Callable[[], tuple[float, int, int, int]] | None = None,
        errors: Callable[[], int] | None = None,
    ) -> None:
        self._core = core
        self._stats = scrape_stats
        self._errors = errors

    def collect(self) -> Iterable[Family]:
        core = self._core
        out = [
            info(
                "observer_agent_build",
                "The runtime-observer agent's version and wire protocol.",
                {
                    "version": AGENT_VERSION,
                    "protocol": str(PROTOCOL_VERSION),
                    "pid": str(os.getpid()),
                },
            ),
            gauge(
                "observer_agent_sessions",
                "Observers connected to the agent now.",
                int(getattr(core, "_observers", 0)),
            ),
            counter(
                "observer_agent_sessions_opened",
                "Observer sessions opened since the agent started.",
                int(getattr(core, "_sessions", 0)),
            ),
        ]
        actions = Family(
            "observer_agent_control_actions",
            "counter",
            "Control actions and refused attempts, by kind, result and whether a chaos run "
            "made them.",
        )
        for (kind, result, chaos), n in sorted(core.audit.action_counts().items()):
            labels = (("kind", kind), ("result", result), ("chaos", "true" if chaos else "false"))
            actions.add(n, labels, "_total")
        out.append(actions)
        if self._stats is not None:
            seconds, size, series, dropped = self._stats()
            out.append(
                gauge(
                    "observer_agent_metrics_scrape_duration_seconds",
                    "Time the previous scrape took to collect and render.",
                    seconds,
                )
            )
            out.append(
                gauge(
                    "observer_agent_metrics_scrape_bytes",
                    "Size of the previous scrape's exposition.",
                    size,
                )
            )
            out.append(
                gauge(
                    "observer_agent_metrics_series",
                    "Samples in the previous scrape's exposition.",
                    series,
                )
            )
            out.append(
                gauge(
                    "observer_agent_metrics_dropped_families",
                    "Metric families the previous scrape left out to stay under the series cap.",
                    dropped,
                )
            )
        if self._errors is not None:
            out.append(
                counter(
                    "observer_agent_metrics_errors",
                    "Collectors or families left out of a scrape because they failed.",
                    self._errors(),
                )
            )
        return out
