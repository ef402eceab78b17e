"""Collectors and the registry that merges their families, each collector guarded.

The seam for pre-fork workers: a master registers, for each worker slot, a collector
that yields that worker's families, with ``labels={"worker": "<slot>"}``. The registry
prefixes those labels to every sample and merges families of the same name, so the
master's one exposition carries ``process_cpu_seconds_total{worker="0"}`` ... next to its
own unlabelled series; unregistering the collector (the worker died) drops its series
from the next scrape. Label values come from the code that registers (a slot number),
never from a request.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from typing import Protocol

from agent.metrics.exposition import ExpositionError, Family, Labels, check_labels
from agent.ratelog import RateLog

log = logging.getLogger("agent")
WORKER_LABEL = "worker"
MAX_COLLECTORS = 256  # a master with 255 workers and itself


class Collector(Protocol):
    """Anything that yields metric families when asked (called on the metrics thread)."""

    def collect(self) -> Iterable[Family]: ...


class Registry:
    """Thread-safe list of (collector, extra labels); ``collect`` never raises."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[tuple[Collector, Labels]] = []
        self._events = RateLog(log, every=60.0)
        self.errors = 0  # collectors or families that failed, since start

    def register(self, collector: Collector, labels: Mapping[str, str] | None = None) -> None:
        """Add ``collector``; every sample it yields gets ``labels`` first (bounded values
        chosen by the caller, e.g. ``{"worker": "3"}``)."""
        extra = check_labels(labels or {})
        with self._lock:
            if len(self._entries) >= MAX_COLLECTORS:
                raise ValueError(f"at most {MAX_COLLECTORS} collectors")
            self._entries.append((collector, extra))

    def unregister(self, collector: Collector) -> None:
        with self._lock:
            self._entries = [e for e in self._entries if e[0] is not collector]

    def collect(self) -> list[Family]:
        """Every collector's families, merged by name (first registered first); a
        collector that raises, or a family whose type differs from the one already
        merged under its name, is left out and logged (rate-limited)."""
        with self._lock:
            entries = list(self._entries)
        merged: dict[str, Family] = {}
        for collector, extra in entries:
            try:
                families = list(collector.collect())
            except Exception as exc:
                self._failed("collector", type(collector).__name__, exc)
                continue
            for family in families:
                try:
                    if extra:
                        family = family.relabelled(extra)
                    into = merged.get(family.name)
                    if into is None:
                        merged[family.name] = family
                    elif into.type != family.type:
                        raise ExpositionError(f"{family.name}: {family.type} vs {into.type}")
                    else:
                        _own(merged, into).take(family)
                except Exception as exc:
                    self._failed("family", getattr(family, "name", "?"), exc)
        return list(merged.values())

    def _failed(self, what: str, name: str, exc: BaseException) -> None:
        self.errors += 1
        self._events.event(
            f"{what}:{name}",
            "runtime-observer agent: metrics %s %s left out: %r",
            what,
            name,
            exc,
        )


def _own(merged: dict[str, Family], family: Family) -> Family:
    """A family the registry may add to: the collector's own object is copied once, so a
    collector that keeps and returns the same Family is never changed by the merge."""
    if getattr(family, "_merged", False):
        return family
    copy = Family(family.name, family.type, family.help)
    copy.take(family)
    copy._merged = True  # type: ignore[attr-defined]
    merged[family.name] = copy
    return copy
