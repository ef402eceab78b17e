"""The audit log of control actions: who (role, peer), what, when, result.

Kept in a bounded ring (queryable over RPC) and written to the ``agent.audit`` logger.
"""

from __future__ import annotations

import collections
import logging
import threading
import time

from agent.schema import AuditRecord

log = logging.getLogger("agent.audit")


class AuditLog:
    """Bounded, thread-safe record of every control action and denied attempt."""

    def __init__(self, capacity: int = 1000) -> None:
        self._records: collections.deque[AuditRecord] = collections.deque(maxlen=capacity)
        self._lock = threading.Lock()

    def record(
        self,
        *,
        peer: str,
        role: str,
        action: str,
        target: str,
        result: str,
        detail: str = "",
        run: str = "",
    ) -> AuditRecord:
        entry = AuditRecord(time.time(), peer, role, action, target, result, detail, run)
        with self._lock:
            self._records.append(entry)
        log.log(
            logging.INFO if result == "ok" else logging.WARNING,
            "audit: peer=%s role=%s action=%s target=%s result=%s%s %s",
            peer,
            role,
            action,
            target,
            result,
            f" run={run}" if run else "",
            detail,
        )
        return entry

    def records(self, limit: int = 1000) -> tuple[AuditRecord, ...]:
        """The newest ``limit`` records, oldest first."""
        with self._lock:
            items = list(self._records)
        return tuple(items[-limit:]) if limit > 0 else ()
