"""Process memory from the OS (RSS/VMS, and USS/PSS/swap where allowed) and the GC's counters."""

from __future__ import annotations

import gc
import sys
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class OsMemory:
    rss: int
    vms: int
    uss: int | None
    pss: int | None
    swap: int | None
    note: str


def os_memory(process: psutil.Process) -> OsMemory:
    """memory_full_info (USS, PSS, swap) when the OS lets us, memory_info otherwise, saying why."""
    try:
        full = process.memory_full_info()
        return OsMemory(
            full.rss,
            full.vms,
            getattr(full, "uss", None),
            getattr(full, "pss", None),
            getattr(full, "swap", None),
            "",
        )
    except psutil.AccessDenied:
        note = "USS/PSS/swap unavailable: the OS denied reading this process's memory maps"
    except (psutil.Error, OSError, NotImplementedError, AttributeError) as exc:
        note = f"USS/PSS/swap unavailable on this platform ({type(exc).__name__})"
    try:
        basic = process.memory_info()
        return OsMemory(basic.rss, basic.vms, None, None, None, note)
    except (psutil.Error, OSError) as exc:
        return OsMemory(0, 0, None, None, None, f"memory unreadable: {type(exc).__name__}")


@dataclass(frozen=True)
class GcState:
    enabled: bool
    counts: tuple[int, ...]
    thresholds: tuple[int, ...]
    collections: tuple[int, ...]
    collected: tuple[int, ...]
    uncollectable: tuple[int, ...]
    garbage: int
    allocated_blocks: int


def gc_state() -> GcState:
    """The collector's counters per generation; each read guarded (all are cheap C calls)."""
    try:
        stats = gc.get_stats()
    except Exception:
        stats = []

    def column(name: str) -> tuple[int, ...]:
        return tuple(int(s.get(name, 0)) for s in stats)

    try:
        garbage = len(gc.garbage)
    except Exception:
        garbage = 0
    return GcState(
        enabled=gc.isenabled(),
        counts=tuple(gc.get_count()),
        thresholds=tuple(gc.get_threshold()),
        collections=column("collections"),
        collected=column("collected"),
        uncollectable=column("uncollectable"),
        garbage=garbage,
        allocated_blocks=sys.getallocatedblocks(),
    )
