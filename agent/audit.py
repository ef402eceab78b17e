"""The audit log of control actions: who (role, peer), what, when, result.

Control actions and denied attempts are kept apart, so that no peer without the operator
role can push an operator's record out:

- control actions (whatever their result) go to their own bounded ring;
- denied attempts are folded per peer and action kind into one record per window (the
  first attempt, with a count of the rest), in a second bounded ring, and logged at
  most a few lines per peer address and window.

Every record is also written to the ``agent.audit`` logger (peer text escaped, each
value quoted when it could pose as another field) and, when configured, appended to a
JSON-lines file (agent.auditfile).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from agent import logsafe
from agent.schema import AuditRecord

log = logging.getLogger("agent.audit")

CAPACITY = 1000
DENIAL_CAPACITY = 1000
DENIAL_WINDOW = 60.0  # seconds one folded denial record covers
ACTIVE_DENIALS = 256  # open windows at once (a new one closes the oldest)
DENIAL_LINES = 20  # log lines about denials per peer address per window
SWEEP_EVERY = 1.0
PEER_FAULTS = frozenset({"denied", "dropped"})  # what a peer did wrong, not an action taken
DURABLE_WAIT = 0.5  # seconds a control action waits for its record to reach the audit file
# what action_counts() counts by (the metrics' labels): a fixed vocabulary, never a peer's words
COUNTED_KINDS = frozenset(
    {"cancel", "raise", "signal", "chaos", "tracemalloc start", "tracemalloc stop",
     "tracemalloc baseline", "census baseline"}
)  # fmt: skip
COUNTED_RESULTS = frozenset({"ok", "denied", "dropped"})  # anything else counts as "error"


class AuditSink:
    """Where records go besides the rings (the audit file); the default keeps nothing."""

    def write(self, entry: dict[str, Any], wait: float = 0.0) -> None:
        """Take one record; wait at most ``wait`` seconds for it to be stored."""

    def close(self, timeout: float = 2.0) -> None:
        """Flush and release."""


@dataclass
class _Denial:
    """Denied attempts of one peer and action kind within one window."""

    first: float
    last: float
    count: int
    peer: str
    role: str
    action: str
    target: str
    detail: str
    run: str
    result: str = "denied"  # or "dropped": what the peer's attempts came to

    def as_record(self) -> AuditRecord:
        detail = self.detail
        if self.count > 1:
            detail += f" ({self.count} attempts in {self.last - self.first:.1f} s)"
        return AuditRecord(
            self.first,
            self.peer,
            self.role,
            self.action,
            self.target,
            self.result,
            detail,
            self.run,
        )


def peer_address(peer: str) -> str:
    """'127.0.0.1' from '127.0.0.1:4242' ('::1' from '::1:4242')."""
    return peer.rsplit(":", 1)[0] if ":" in peer else peer


def _entry(record: AuditRecord, **extra: Any) -> dict[str, Any]:
    entry = {
        "time": record.time,
        "peer": record.peer,
        "role": record.role,
        "action": record.action,
        "target": record.target,
        "result": record.result,
        "detail": record.detail,
        "run": record.run,
    }
    entry.update(extra)
    return entry


class AuditLog:
    """Bounded, thread-safe record of every control action and denied attempt."""

    def __init__(
        self,
        capacity: int = CAPACITY,
        *,
        denial_capacity: int = DENIAL_CAPACITY,
        window: float = DENIAL_WINDOW,
        sink: AuditSink | None = None,
    ) -> None:
        logsafe.install()
        self._records: collections.deque[AuditRecord] = collections.deque(maxlen=capacity)
        self._denials: collections.deque[_Denial] = collections.deque(maxlen=denial_capacity)
        self._open: collections.OrderedDict[tuple[str, str, str], _Denial] = (
            collections.OrderedDict()
        )
        self._lines: dict[str, list[float]] = {}  # peer address -> [window start, lines]
        self._window = window
        self._swept = 0.0
        self._lock = threading.Lock()
        self.sink = sink or AuditSink()
        self._counts: collections.Counter[tuple[str, str, bool]] = collections.Counter()

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
        kind: str = "",
    ) -> AuditRecord:
        """Record one action; ``kind`` (the action without peer-chosen words, e.g. 'raise')
        is what denied attempts are folded by."""
        now = time.time()
        entry = AuditRecord(now, peer, role, action, target, result, detail, run)
        self._count(kind or action, result, bool(run))
        if result in PEER_FAULTS:  # kept apart from control actions, folded per peer
            self._denied(entry, kind or action, now)
            return entry
        with self._lock:
            self._records.append(entry)
        self._log(logging.INFO if result == "ok" else logging.WARNING, entry)
        # A control action's reply should mean its record is stored: a host killed right
        # after would otherwise take the queued record with it. Bounded, never the host's
        # thread (actions run on the observer's session thread).
        self._write(_entry(entry), wait=DURABLE_WAIT)
        self.sweep(now)
        return entry

    def _count(self, kind: str, result: str, chaos: bool) -> None:
        kind = kind.replace(" ", "_") if kind in COUNTED_KINDS else "other"
        result = result if result in COUNTED_RESULTS else "error"
        with self._lock:
            self._counts[(kind, result, chaos)] += 1

    def action_counts(self) -> dict[tuple[str, str, bool], int]:
        """Records so far by (kind, result, part of a chaos run): bounded by the fixed
        kinds and results, for the metrics endpoint."""
        with self._lock:
            return dict(self._counts)

    def _denied(self, entry: AuditRecord, kind: str, now: float) -> None:
        key = (entry.peer, entry.role, kind, entry.result)
        closed: list[_Denial] = []
        with self._lock:
            denial = self._open.get(key)
            if denial is not None and now - denial.first < self._window:
                denial.count += 1
                denial.last = now
                first = False
            else:
                if denial is not None:
                    closed.append(self._open.pop(key))
                denial = _Denial(
                    now,
                    now,
                    1,
                    entry.peer,
                    entry.role,
                    entry.action,
                    entry.target,
                    entry.detail,
                    entry.run,
                    entry.result,
                )
                self._denials.append(denial)
                self._open[key] = denial
                while len(self._open) > ACTIVE_DENIALS:
                    closed.append(self._open.popitem(last=False)[1])
                first = True
            speak = first and self._may_log(entry.peer, now)
        if first:
            if speak:
                self._log(logging.WARNING, entry)
            self._write(_entry(entry, count=1))
        self._close(closed)
        self.sweep(now)

    def _may_log(self, peer: str, now: float) -> bool:
        """Whether a denial from ``peer``'s address may be logged (lock held)."""
        address = peer_address(peer)
        state = self._lines.get(address)
        if state is None or now - state[0] >= self._window:
            if len(self._lines) >= ACTIVE_DENIALS:
                self._lines.clear()
            state = self._lines[address] = [now, 0.0]
        state[1] += 1
        if state[1] == DENIAL_LINES + 1:
            log.warning(
                "audit: further denials from %s are not logged for %.0f s (they are counted)",
                address,
                self._window - (now - state[0]),
            )
        return state[1] <= DENIAL_LINES

    def sweep(self, now: float | None = None, *, everything: bool = False) -> None:
        """Close denial windows that have ended (all of them with ``everything``), logging
        and writing how many attempts each folded."""
        now = time.time() if now is None else now
        closed: list[_Denial] = []
        with self._lock:
            if not everything and now - self._swept < SWEEP_EVERY:
                return
            self._swept = now
            for key, denial in list(self._open.items()):
                if everything or now - denial.first >= self._window:
                    closed.append(self._open.pop(key))
        self._close(closed)

    def _close(self, closed: list[_Denial]) -> None:
        for denial in closed:
            if denial.count > 1:
                record = denial.as_record()
                self._log(logging.WARNING, record, f" attempts={denial.count}")
                self._write(_entry(record, count=denial.count, last=denial.last, summary=True))

    def _log(self, level: int, r: AuditRecord, extra: str = "") -> None:
        f = logsafe.field
        log.log(
            level,
            "audit: peer=%s role=%s action=%s target=%s result=%s%s%s detail=%s",
            f(r.peer),
            f(r.role),
            f(r.action),
            f(r.target),
            f(r.result),
            f" run={f(r.run)}" if r.run else "",
            extra,
            f(r.detail),
        )

    def _write(self, entry: dict[str, Any], wait: float = 0.0) -> None:
        try:
            self.sink.write(entry, wait)
        except Exception:  # contained: a sink must never break an action or the host
            log.debug("runtime-observer agent: audit sink failed", exc_info=True)

    def records(self, limit: int = CAPACITY) -> tuple[AuditRecord, ...]:
        """The newest ``limit`` control records and the newest ``limit`` folded denials,
        oldest first: denials never crowd control actions out of the answer either."""
        if limit <= 0:
            return ()
        self.sweep()
        with self._lock:
            control = list(self._records)[-limit:]
            denied = [d.as_record() for d in list(self._denials)[-limit:]]
        return tuple(sorted(control + denied, key=lambda r: r.time))

    def close(self) -> None:
        """Write the open denial windows' counts and release the sink."""
        self.sweep(everything=True)
        try:
            self.sink.close()
        except Exception:
            log.debug("runtime-observer agent: audit sink close failed", exc_info=True)
