"""The observer's copy of one node's tasks: a complete listing replaces it, a delta (the
rows changed since the version it holds, the ids gone) updates it, and every refresh
hands out complete TaskInfo records, aged by the agent's clock.

Rows arrive as the agent's compact TaskRow lists (see agent.schema); they are checked
field by field here and turned straight into TaskInfo, without an intermediate record
per row (100k rows per refresh).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from agent.schema import TaskInfo, TaskListing, TaskSite, WireError

_NO_AWAITING: tuple[str, ...] = ()
# TaskInfo records are made by filling their __dict__ (frozen dataclasses without slots):
# several times faster than their __init__ for the 100k records of each refresh.
_FIELDS = (
    "id",
    "name",
    "state",
    "coroutine",
    "function",
    "file",
    "line",
    "loop",
    "age",
    "awaiting",
    "current",
)
_FAST = (
    "__slots__" not in TaskInfo.__dict__
    and tuple(f.name for f in dataclasses.fields(TaskInfo)) == _FIELDS
)
_new = object.__new__
_set_dict = object.__setattr__


class Resync(Exception):
    """A delta that does not follow what the cache holds: ask for a complete listing."""


@dataclass(frozen=True)
class ListingStats:
    """What the last task listing carried (how much a refresh cost on the wire)."""

    base: int  # 0: complete listing; else the version the delta followed
    version: int
    rows: int  # rows received (new and changed ones for a delta)
    removed: int  # ids of tasks gone
    chunks: int  # round trips the rows took
    size: int  # bytes received, all chunks


def _make(fields: dict[str, Any]) -> TaskInfo:
    if _FAST:
        info = _new(TaskInfo)
        _set_dict(info, "__dict__", fields)
        return info
    return TaskInfo(**fields)


class TaskCache:
    """Tasks of one node by serial, in serial order (first seen first), with the table
    epoch and version they are as of."""

    def __init__(self) -> None:
        self.epoch = 0
        self.version = 0
        self.sites: list[TaskSite] = []
        self.rows: dict[int, dict[str, Any]] = {}  # serial -> TaskInfo fields
        self.first_seen: dict[int, float] = {}
        self._loop_ids: dict[int, str] = {0: ""}

    def since(self) -> tuple[int, int]:
        """(version, epoch) to ask a delta from; (0, 0) when holding nothing."""
        return (self.version, self.epoch) if self.epoch else (0, 0)

    def apply(self, listing: TaskListing, rows: list[Any]) -> None:
        """Take a listing in: a complete one replaces everything, a delta must follow the
        version held (else Resync). Malformed rows raise WireError."""
        if listing.base == 0:
            if listing.sites_from != 0:
                raise WireError("a complete listing must carry every site")
            self.sites = list(listing.sites)
            self.rows = {}
            self.first_seen = {}
        else:
            if (
                listing.epoch != self.epoch
                or listing.base != self.version
                or listing.sites_from != len(self.sites)
            ):
                raise Resync(f"delta from {listing.base} does not follow {self.version}")
            self.sites.extend(listing.sites)
        decoded = [self._decode(row) for row in rows]
        if listing.base == 0:
            decoded.sort(key=_serial_key)
        target, first = self.rows, self.first_seen
        for serial in listing.removed:
            target.pop(serial, None)
            first.pop(serial, None)
        for serial, fields, seen in decoded:
            target[serial] = fields
            first[serial] = seen
        self.epoch, self.version = listing.epoch, listing.version

    def tasks(self, now: float, current: Iterable[int] = ()) -> tuple[TaskInfo, ...]:
        """Every task held, pending first (each part in serial order), aged as of the
        agent's ``now``; ``current`` are the serials running a step."""
        running = set(current)
        first = self.first_seen
        pending: list[TaskInfo] = []
        others: list[TaskInfo] = []
        for serial, fields in self.rows.items():
            copy = dict(fields)
            copy["age"] = round(max(0.0, now - first[serial]), 3)
            if running and serial in running:
                copy["current"] = True
            (pending if fields["state"] == "pending" else others).append(_make(copy))
        if others:
            pending.extend(others)
        return tuple(pending)

    def _decode(self, row: Any) -> tuple[int, dict[str, Any], float]:
        """One wire row (TaskRow order), checked, as (serial, TaskInfo fields, first seen)."""
        if type(row) is not list or len(row) < 8:
            raise WireError(f"bad task row {row!r:.60}")
        serial, name, state, site, line, loop, seen, awaiting = row[:8]
        if (
            type(serial) is not int
            or type(name) is not str
            or type(state) is not str
            or type(site) is not int
            or type(line) is not int
            or type(loop) is not int
            or type(awaiting) is not list
        ):
            raise WireError(f"bad task row {row!r:.60}")
        if type(seen) is not float:
            if type(seen) is not int:
                raise WireError(f"bad first_seen in task row {serial}")
            seen = float(seen)
        if not 0 <= site < len(self.sites):
            raise WireError(f"task row {serial} names site {site} of {len(self.sites)}")
        where = self.sites[site]
        loop_id = self._loop_ids.get(loop)
        if loop_id is None:
            loop_id = self._loop_ids[loop] = f"loop-{loop}"
        if awaiting:
            for other in awaiting:
                if type(other) is not int:
                    raise WireError(f"bad awaiting in task row {serial}")
            waits = tuple([f"task-{other}" for other in awaiting])
        else:
            waits = _NO_AWAITING
        fields = {
            "id": f"task-{serial}",
            "name": name,
            "state": state,
            "coroutine": where.coroutine,
            "function": where.function,
            "file": where.file,
            "line": line,
            "loop": loop_id,
            "age": None,
            "awaiting": waits,
            "current": False,
        }
        return serial, fields, seen


def _serial_key(item: tuple[int, dict[str, Any], float]) -> int:
    return item[0]
