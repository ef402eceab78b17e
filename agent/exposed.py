"""Objects the host chooses to show the observer (``agent.expose``), read-only."""

from __future__ import annotations

import threading
from typing import Any

from agent.saferepr import safe_len, safe_repr, safe_type_name
from agent.schema import ExposedInfo

MAX_EXPOSED = 256


class ExposedRegistry:
    """Name -> object map the host fills; the observer sees safe, redacted views only."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._objects: dict[str, Any] = {}

    def expose(self, name: str, obj: Any) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError("expose() needs a non-empty name")
        with self._lock:
            if name not in self._objects and len(self._objects) >= MAX_EXPOSED:
                raise ValueError(f"at most {MAX_EXPOSED} exposed objects")
            self._objects[name] = obj

    def unexpose(self, name: str) -> None:
        with self._lock:
            self._objects.pop(name, None)

    def get(self, name: str) -> Any:
        with self._lock:
            return self._objects[name]

    def items(self) -> list[tuple[str, Any]]:
        """(name, object) pairs sorted by name, copied under the lock."""
        with self._lock:
            return sorted(self._objects.items())

    def abandon(self) -> dict[str, Any]:
        """In a forked child: what was exposed, read without the lock (a thread of the
        parent may have held it at the fork), which is replaced by a fresh one."""
        self._lock = threading.Lock()
        return dict(self._objects)

    def describe(self, *, max_len: int = 240) -> tuple[ExposedInfo, ...]:
        """One ExposedInfo per object: type, size (len/qsize when safe) and safe repr."""
        items = self.items()
        return tuple(
            ExposedInfo(name, safe_type_name(obj), safe_len(obj), safe_repr(obj, max_len=max_len))
            for name, obj in items
        )
