"""tracemalloc under the observer's control: start/stop, top allocation sites, diff vs a baseline.

The baseline is kept as grouped totals (per line and per traceback, capped), not as a
tracemalloc Snapshot: a snapshot of a million traces would cost the host ~100 MB for as
long as the baseline lives. The agent's own allocations (and rpyc's, which serves the
observer) are filtered out so they never pose as the host's leak.
"""

from __future__ import annotations

import fnmatch
import os
import threading
import time
import tracemalloc
from collections.abc import Iterable
from dataclasses import dataclass

from agent import compat
from agent.collect.source import source_line
from agent.errors import AgentError, BadRequest
from agent.schema import AllocationSite, TracemallocStatus, TraceStats

MAX_FRAMES = 100
MAX_TOP = 1000
MAX_BASELINE_KEYS = 200_000
MAX_SITE_FILES = 10_000
GROUPS = ("lineno", "traceback", "filename")
HINT = (
    "tracemalloc is not running: start it with `observer mem NODE tracemalloc start "
    "[--frames N]` (operator role) or the Memory tab's Start button, or start the host "
    "with PYTHONTRACEMALLOC=N"
)
_AGENT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _excluded_patterns() -> tuple[str, ...]:
    patterns = [tracemalloc.__file__, "<frozen importlib._bootstrap>"]
    patterns.append("<frozen importlib._bootstrap_external>")
    patterns.append(os.path.join(_AGENT_DIR, "*"))
    try:
        import rpyc

        patterns.append(os.path.join(os.path.dirname(os.path.abspath(rpyc.__file__)), "*"))
    except Exception:
        pass
    return tuple(patterns)


Key = tuple[tuple[str, int], ...]  # frames (file, line), innermost first


@dataclass
class _Grouped:
    """Traced totals by traceback (innermost first), from one pass over a snapshot."""

    by_traceback: dict[Key, list[int]]  # key -> [size, count]
    traces: int
    seconds: float
    hold: float  # copying the traces out: one C call holding the GIL


def _allocation_rate(n: int = 5_000) -> float:
    """CPU seconds for a small allocation-heavy loop (tuples, str, lists; min of three runs).

    Measured just before and just after tracemalloc starts, at the agent's stack depth
    (deeper than the frame limit, so every frame is captured), the ratio is the worst
    case: host code that also computes or waits slows down less.
    """
    best = float("inf")
    for _ in range(3):
        started = time.thread_time()  # this thread's CPU: waiting for the GIL is not counted
        out = []
        for i in range(n):
            out.append((i, str(i) * 3, [i]))
        del out
        best = min(best, time.thread_time() - started)
    return best


def _regroup(by_traceback: dict[Key, list[int]], group: str) -> dict[Key, list[int]]:
    """Totals by line (innermost frame) or by file, from totals by traceback."""
    if group == "traceback":
        return by_traceback
    out: dict[Key, list[int]] = {}
    for key, (size, count) in by_traceback.items():
        file, line = key[0] if key else ("?", 0)
        short = ((file, line),) if group == "lineno" else ((file, 0),)
        _add(out, short, size, count)
    return out


def _add(totals: dict[Key, list[int]], key: Key, size: int, count: int) -> None:
    acc = totals.get(key)
    if acc is None:
        totals[key] = [size, count]
    else:
        acc[0] += size
        acc[1] += count


class Tracer:
    """The agent's handle on tracemalloc; thread-safe; all state bounded."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started: float | None = None  # set only while the agent's own start is tracing
        self.started_by = ""
        self.session = 0  # the session that started it; 0 = none
        self.keep = False  # whether it outlives that session
        self.slowdown: float | None = None
        self._baseline: dict[Key, list[int]] | None = None
        self.baseline_time: float | None = None
        self.site_files: set[str] = set()
        self.excluded = _excluded_patterns()

    # ------------------------------------------------------------ control

    def start(self, frames: int, by: str, *, session: int = 0, keep: bool = False) -> str:
        """Start tracing; what the agent starts it stops again when the starting session
        ends (unless ``keep``) and when the agent stops (see stop_started_by)."""
        if not 1 <= frames <= MAX_FRAMES:
            raise BadRequest(f"frames must be between 1 and {MAX_FRAMES}")
        with self._lock:
            if tracemalloc.is_tracing():
                raise AgentError(
                    f"tracemalloc is already running ({tracemalloc.get_traceback_limit()} "
                    "frames); stop it first to change the depth"
                )
            before = _allocation_rate()
            tracemalloc.start(frames)
            after = _allocation_rate()
            self.started, self.started_by = time.time(), by
            self.session, self.keep = session, keep
            self.slowdown = after / before if before > 0 else None
            self._baseline, self.baseline_time = None, None
        self.set_baseline()
        slow = (
            f"; an allocation-only loop runs {self.slowdown:.0f}x slower "
            "(the worst case: code that also computes or waits slows less)"
            if self.slowdown
            else ""
        )
        until = (
            "it keeps running after this session, until stopped or the agent stops"
            if keep or not session
            else "it stops when this session ends (start it with keep to leave it running)"
        )
        return f"tracemalloc started with {frames} frames per traceback{slow}; {until}"

    def stop(self) -> str:
        with self._lock:
            if not tracemalloc.is_tracing():
                raise AgentError("tracemalloc is not running")
            return self._stop()

    def stop_started_by(self, session: int | None) -> str | None:
        """Stop tracemalloc if the agent started it and ``session`` (None: any, the agent is
        stopping) started it without keep; what the host started itself is left alone.
        Returns what stop says, or None when nothing was stopped."""
        with self._lock:
            if self.started is None or not tracemalloc.is_tracing():
                return None
            if session is not None and (session != self.session or self.keep):
                return None
            return self._stop()

    def _stop(self) -> str:
        """Stop tracing and forget the agent's state (lock held)."""
        overhead = tracemalloc.get_tracemalloc_memory()
        tracemalloc.stop()
        self.started, self.started_by, self.slowdown = None, "", None
        self.session, self.keep = 0, False
        self._baseline, self.baseline_time = None, None
        return f"tracemalloc stopped; {overhead / 1e6:.1f} MB of traces freed"

    # ------------------------------------------------------------ reads

    def status(self) -> TracemallocStatus:
        tracing = tracemalloc.is_tracing()
        current, peak = tracemalloc.get_traced_memory() if tracing else (0, 0)
        return TracemallocStatus(
            tracing=tracing,
            frames=tracemalloc.get_traceback_limit() if tracing else 0,
            current=current,
            peak=peak,
            overhead=tracemalloc.get_tracemalloc_memory() if tracing else 0,
            started=self.started if tracing else None,
            started_by=self.started_by if tracing else "",
            slowdown=self.slowdown if tracing else None,
            baseline=self.baseline_time if tracing else None,
            hint="" if tracing else HINT,
        )

    def traced(self) -> int | None:
        """Bytes traced now, None when tracemalloc is off (for the history ring)."""
        return tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else None

    def set_baseline(self) -> float:
        """Remember the current totals; later diffs compare against them."""
        grouped = self._snapshot()
        if grouped is None:
            raise AgentError(HINT)
        baseline = grouped.by_traceback
        if len(baseline) > MAX_BASELINE_KEYS:
            ranked = sorted(baseline.items(), key=lambda kv: -kv[1][0])[:MAX_BASELINE_KEYS]
            baseline = dict(ranked)
        with self._lock:
            self._baseline, self.baseline_time = baseline, time.time()
        return self.baseline_time

    def stats(self, limit: int, group: str, diff: bool) -> TraceStats:
        """Top sites by size now, or by growth since the baseline (``diff``)."""
        if group not in GROUPS:
            raise BadRequest(f"group must be one of {', '.join(GROUPS)}")
        limit = max(0, min(limit, MAX_TOP))
        started = time.perf_counter()
        grouped = self._snapshot()
        if grouped is None:
            return TraceStats(self.status(), group, diff, (), 0, 0, 0, 0, 0.0, 0.0, self.excluded)
        current = _regroup(grouped.by_traceback, group)
        total_size = sum(v[0] for v in current.values())
        total_count = sum(v[1] for v in current.values())
        with self._lock:
            base = _regroup(self._baseline, group) if diff and self._baseline else {}
        rows = self._rank(current, base, diff)
        sites = tuple(self._site(key, *row) for key, row in rows[:limit])
        self._remember_files(site.file for site in sites)
        return TraceStats(
            status=self.status(),
            group=group,
            diff=diff,
            sites=sites,
            sites_total=len(rows),
            size=total_size,
            count=total_count,
            traces=grouped.traces,
            seconds=time.perf_counter() - started,
            hold_seconds=grouped.hold,
            excluded=self.excluded,
        )

    # ------------------------------------------------------------ helpers

    def _snapshot(self) -> _Grouped | None:
        """Totals by traceback of what is traced now, the agent's own frames left out.

        Reads tracemalloc's raw traces and groups them by the identity of their traceback
        tuples (tracemalloc shares one tuple per distinct traceback): about 2.5x faster
        than Snapshot.statistics, which builds an object per trace. Copying the traces
        out is one C call holding the GIL; its time is reported as ``hold``.
        """
        if not tracemalloc.is_tracing():
            return None
        started = time.perf_counter()
        raw = compat.tracemalloc_traces()
        hold = time.perf_counter() - started
        sums: dict[int, list[int]] = {}
        tracebacks: dict[int, Key] = {}
        for trace in raw:
            traceback = trace[2]
            acc = sums.get(id(traceback))
            if acc is None:
                sums[id(traceback)] = [trace[1], 1]
                tracebacks[id(traceback)] = traceback
            else:
                acc[0] += trace[1]
                acc[1] += 1
        traces = len(raw)
        del raw
        excluded: dict[str, bool] = {}
        by_traceback: dict[Key, list[int]] = {}
        for ident, (size, count) in sums.items():
            key = tracebacks[ident]
            file = key[0][0] if key else ""
            skip = excluded.get(file)
            if skip is None:
                skip = excluded[file] = self._excluded(file)
            if not skip:
                _add(by_traceback, key, size, count)
        return _Grouped(by_traceback, traces, time.perf_counter() - started, hold)

    def _excluded(self, file: str) -> bool:
        name = os.path.normcase(file)
        return any(fnmatch.fnmatch(name, os.path.normcase(p)) for p in self.excluded)

    @staticmethod
    def _rank(
        current: dict[Key, list[int]], base: dict[Key, list[int]], diff: bool
    ) -> list[tuple[Key, tuple[int, int, int, int]]]:
        """(key, (size, count, size_diff, count_diff)), largest size or growth first."""
        rows = []
        for key, (size, count) in current.items():
            if diff:
                old = base.get(key, (0, 0))
                rows.append((key, (size, count, size - old[0], count - old[1])))
            else:
                rows.append((key, (size, count, 0, 0)))
        if diff:
            for key, (size, count) in base.items():
                if key not in current:
                    rows.append((key, (0, 0, -size, -count)))
            rows.sort(key=lambda r: (-r[1][2], -r[1][0]))
        else:
            rows.sort(key=lambda r: (-r[1][0], -r[1][1]))
        return rows

    @staticmethod
    def _site(key: Key, size: int, count: int, size_diff: int, count_diff: int):
        file, line = key[0] if key else ("?", 0)
        traceback = tuple(f"{f}:{n}" for f, n in key)
        source = source_line(file, line) if line else ""
        return AllocationSite(file, line, source, traceback, size, count, size_diff, count_diff)

    def _remember_files(self, files: Iterable[str]) -> None:
        with self._lock:
            for file in files:
                if len(self.site_files) >= MAX_SITE_FILES:
                    break
                self.site_files.add(file)
