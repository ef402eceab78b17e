"""Object census: live gc-tracked objects counted by type, and their growth since a baseline.

The host's event loop must not stall while the agent counts, so the work is cut into
slices of C calls (``map(type, ...)``, ``Counter.update``) with Python bytecode between
them, where the interpreter hands the GIL to waiting host threads. The one step that
cannot be sliced is ``gc.get_objects()`` itself (about 15 ms per million objects); its
duration is reported as ``hold_seconds``. No host code runs: type names come from
C-level slots, and a class that defines ``__sizeof__`` in Python gets ``object.__sizeof__``
(its instance layout) instead of a call into its method.
"""

from __future__ import annotations

import gc
import math
import sys
import threading
import time
import types
from collections import Counter
from dataclasses import dataclass

from agent.errors import AgentError
from agent.saferepr import safe_class_name
from agent.schema import Census, TypeCount, TypeGrowth

SLICE = 20_000  # objects per C-call slice: about 1-3 ms of GIL each
MAX_EXACT = 2_000_000  # above this many objects the census samples every k-th one
TIME_BUDGET = 2.0  # seconds of agent time before the census stops and extrapolates
MAX_TOP = 1000
MAX_BASELINE_TYPES = 100_000
_GC_HEADER = sys.getsizeof([]) - [].__sizeof__()  # what getsizeof adds for tracked objects
_C_METHODS = (
    types.MethodDescriptorType,
    types.WrapperDescriptorType,
    types.BuiltinFunctionType,
    types.BuiltinMethodType,
)
_type_mro = type.__dict__["__mro__"].__get__
_type_ns = type.__dict__["__dict__"].__get__
_object_sizeof = object.__sizeof__


class Busy(AgentError):
    """Another census is running; one at a time keeps the host's cost bounded."""

    kind = "busy"


def c_sizeof(tp: type) -> bool:
    """Whether ``tp``'s __sizeof__ is implemented in C (safe to call; no host code runs)."""
    try:
        for klass in _type_mro(tp):
            method = _type_ns(klass).get("__sizeof__")
            if method is not None:
                return type(method) in _C_METHODS
    except Exception:
        pass
    return False


def layout_size(obj: object) -> int:
    """Size from the instance layout alone (what object.__sizeof__ says, plus the GC header)."""
    try:
        return _object_sizeof(obj) + _GC_HEADER
    except Exception:
        return 0


@dataclass
class _Tally:
    """Counts and shallow sizes by id(type) while the census runs (ints hash safely)."""

    counts: Counter[int]
    sizes: dict[int, int]
    types: dict[int, type]
    safe: dict[int, bool]


def _count_slice(tally: _Tally, chunk: list[object]) -> None:
    kinds = list(map(type, chunk))
    ids = list(map(id, kinds))
    tally.counts.update(ids)
    new = set(ids).difference(tally.types)
    if new:
        tally.types.update(zip(ids, kinds, strict=True))
        for i in new:
            tally.safe[i] = c_sizeof(tally.types[i])
    sizes = tally.sizes
    if all(tally.safe[i] for i in set(ids)):
        for i, size in zip(ids, map(sys.getsizeof, chunk), strict=True):
            sizes[i] = sizes.get(i, 0) + size
        return
    safe = tally.safe
    for i, obj in zip(ids, chunk, strict=True):
        size = sys.getsizeof(obj) if safe[i] else layout_size(obj)
        sizes[i] = sizes.get(i, 0) + size


class CensusTaker:
    """Runs censuses (one at a time) and keeps the baseline that growth compares against."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._baseline: dict[str, int] = {}
        self._baseline_sizes: dict[str, int] = {}
        self.baseline_time: float | None = None
        self.baseline_by = ""
        self.last_objects: int | None = None
        self.last_time: float | None = None

    def take(
        self,
        top: int = 50,
        *,
        baseline: bool = False,
        growth: bool = False,
        by: str = "",
        max_exact: int = MAX_EXACT,
        budget: float = TIME_BUDGET,
    ) -> Census:
        """Count live objects by type; optionally record a baseline or compare with it."""
        if not self._lock.acquire(blocking=False):
            raise Busy("a census is already running on this node; try again in a moment")
        try:
            return self._take(max(0, min(top, MAX_TOP)), baseline, growth, by, max_exact, budget)
        finally:
            self._lock.release()

    def _take(
        self, top: int, baseline: bool, growth: bool, by: str, max_exact: int, budget: float
    ) -> Census:
        started = time.perf_counter()
        now = time.time()
        every = gc.get_objects()
        hold = time.perf_counter() - started
        total = len(every)
        stride = max(1, math.ceil(total / max_exact)) if max_exact > 0 else 1
        objects = every[::stride] if stride > 1 else every
        tally = _Tally(Counter(), {}, {}, {})
        scanned, complete = 0, True
        deadline = started + budget
        for start in range(0, len(objects), SLICE):
            chunk = objects[start : start + SLICE]
            _count_slice(tally, chunk)
            scanned += len(chunk)
            del chunk
            if time.perf_counter() > deadline and scanned < len(objects):
                complete = False
                break
        _release(objects)
        _release(every)
        scale = total / scanned if scanned else 0.0
        counts, sizes = _by_name(tally, scale)
        del tally
        self.last_objects, self.last_time = total, now
        growth_rows: tuple[TypeGrowth, ...] = ()
        if growth:
            if self.baseline_time is None:
                raise AgentError("no census baseline yet: take one first (observer mem --baseline)")
            growth_rows = self._growth(counts, sizes, top)
        if baseline:
            self._set_baseline(counts, sizes, now, by)
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
        notes = []
        if stride > 1:
            notes.append(f"sampled every {stride}th of {total:,} objects; counts are estimates")
        if not complete:
            notes.append(
                f"stopped after {budget:g} s with {scanned:,} objects scanned; "
                "counts are extrapolated"
            )
        return Census(
            time=now,
            objects=total,
            scanned=scanned,
            stride=stride,
            sampled=stride > 1 or not complete,
            complete=complete,
            types_total=len(counts),
            types=tuple(TypeCount(name, n, sizes[name]) for name, n in ranked),
            growth=growth_rows,
            baseline=self.baseline_time,
            baseline_by=self.baseline_by,
            seconds=time.perf_counter() - started,
            hold_seconds=hold,
            note="; ".join(notes),
        )

    def _set_baseline(self, counts: dict[str, int], sizes: dict[str, int], now: float, by: str):
        if len(counts) > MAX_BASELINE_TYPES:
            keep = sorted(counts, key=counts.__getitem__, reverse=True)[:MAX_BASELINE_TYPES]
            counts = {k: counts[k] for k in keep}
        self._baseline = counts
        self._baseline_sizes = {k: sizes.get(k, 0) for k in counts}
        self.baseline_time, self.baseline_by = now, by

    def _growth(self, counts: dict[str, int], sizes: dict[str, int], top: int):
        """Types whose count grew since the baseline, largest increase first."""
        rows = []
        for name, count in counts.items():
            delta = count - self._baseline.get(name, 0)
            if delta > 0:
                size = sizes.get(name, 0)
                rows.append(
                    TypeGrowth(name, count, delta, size, size - self._baseline_sizes.get(name, 0))
                )
        rows.sort(key=lambda g: (-g.delta, g.type))
        return tuple(rows[:top])


def _release(objects: list[object]) -> None:
    """Drop the census's references slice by slice, so freeing them never stalls the host."""
    while objects:
        del objects[-SLICE:]


def _by_name(tally: _Tally, scale: float) -> tuple[dict[str, int], dict[str, int]]:
    """Merge the per-type tallies by type name (scaled when sampled)."""
    counts: dict[str, int] = {}
    sizes: dict[str, int] = {}
    for tid, count in tally.counts.items():
        name = safe_class_name(tally.types[tid])
        counts[name] = counts.get(name, 0) + round(count * scale)
        sizes[name] = sizes.get(name, 0) + round(tally.sizes.get(tid, 0) * scale)
    return counts, sizes
