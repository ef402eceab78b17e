"""Log lines an attacker can trigger at will, at most once per interval per kind."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any


class RateLog:
    """Logs the first event of a kind at once, then at most one line per ``every`` seconds
    that also says how many were left unlogged since; memory is one counter per kind."""

    def __init__(self, logger: logging.Logger, every: float = 10.0) -> None:
        self._log = logger
        self._every = every
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def event(self, kind: str, msg: str, *args: Any, level: int = logging.WARNING) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self._every:
                self._skipped[kind] = self._skipped.get(kind, 0) + 1
                return
            self._last[kind] = now
            skipped = self._skipped.pop(kind, 0)
        if skipped:
            msg += f" (and {skipped} more like it in the last {self._every:g}s)"
        self._log.log(level, msg, *args)
