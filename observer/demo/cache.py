"""The demo's in-memory cache: bounded, thread-safe, filled by workers and trimmed by a thread."""

from __future__ import annotations

import itertools
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any

DEFAULT_MAX_ENTRIES = 50_000


class DemoCache(Mapping[str, Any]):
    """A read-mostly LRU dict shared by the event loop and the janitor thread, under one lock."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        """Create an empty cache that the janitor trims back to ``max_entries``."""
        self.max_entries = max_entries
        self.lock = threading.Lock()
        # The storage itself, oldest first. Exposed to the observer as-is: the agent shows
        # sizes and contents of builtin containers only, never running our code. Mutate it
        # only under ``lock``.
        self.entries: OrderedDict[str, Any] = OrderedDict()
        self.puts = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.approx_bytes = 0

    def put(self, key: str, value: Any) -> None:
        """Insert or refresh ``key`` as the newest entry (trimming is the janitor's job)."""
        with self.lock:
            self.entries[key] = value
            self.entries.move_to_end(key)
            self.puts += 1

    def get(self, key: str, default: Any = None) -> Any:
        """Look ``key`` up, counting hits and misses and refreshing its recency."""
        with self.lock:
            try:
                value = self.entries[key]
            except KeyError:
                self.misses += 1
                return default
            self.entries.move_to_end(key)
            self.hits += 1
            return value

    def __getitem__(self, key: str) -> Any:
        """Read one entry without touching the statistics (used by observers)."""
        with self.lock:
            return self.entries[key]

    def __contains__(self, key: object) -> bool:
        """Tell whether ``key`` is cached, without touching the statistics."""
        with self.lock:
            return key in self.entries

    def __iter__(self) -> Iterator[str]:
        """Iterate over a snapshot of the keys, oldest first, so writers never break readers."""
        with self.lock:
            keys = list(self.entries)
        return iter(keys)

    def __len__(self) -> int:
        """Return the number of cached entries."""
        return len(self.entries)

    # Snapshots rather than live views: another thread may evict between two reads.
    def keys(self) -> list[str]:  # type: ignore[override]
        """Return a snapshot of the keys, oldest first."""
        with self.lock:
            return list(self.entries)

    def values(self) -> list[Any]:  # type: ignore[override]
        """Return a snapshot of the values, oldest first."""
        with self.lock:
            return list(self.entries.values())

    def items(self) -> list[tuple[str, Any]]:  # type: ignore[override]
        """Return a snapshot of the entries, oldest first."""
        with self.lock:
            return list(self.entries.items())

    def trim(self) -> int:
        """Evict the oldest entries beyond ``max_entries``; return how many were evicted."""
        with self.lock:
            excess = len(self.entries) - self.max_entries
            for _ in range(max(excess, 0)):
                self.entries.popitem(last=False)
            if excess > 0:
                self.evictions += excess
            return max(excess, 0)

    def recount(self, sample: int = 5000) -> int:
        """Estimate payload bytes from a sample of the newest entries; return the estimate."""
        with self.lock:
            size = len(self.entries)
            values = list(itertools.islice(reversed(self.entries.values()), sample))
        total = 0
        for value in values:
            total += sys.getsizeof(value)
            if isinstance(value, dict):
                total += sum(sys.getsizeof(v) for v in value.values())
        self.approx_bytes = total * size // len(values) if values else 0
        return self.approx_bytes

    def stats(self) -> dict[str, int]:
        """Return the counters shown by the service's status page and report job."""
        return {
            "size": len(self.entries),
            "max_entries": self.max_entries,
            "puts": self.puts,
            "hits": self.hits,
            "misses": self.misses,
            "evictions": self.evictions,
            "approx_bytes": self.approx_bytes,
        }

    def __repr__(self) -> str:
        """Summarise instead of dumping up to 50k entries."""
        return f"DemoCache(size={len(self.entries)}, max_entries={self.max_entries})"
