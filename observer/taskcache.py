"""The observer's copy of one node's tasks: a complete listing replaces it, a delta (the
rows changed since the version it holds, the ids gone) updates it, and every refresh
hands out complete TaskInfo records, aged by the agent's clock.

Rows arrive as the agent's compact TaskRow lists (see agent.schema); they are checked
field by field here and turned straight into TaskInfo, without an intermediate record
per row (100k rows per refresh).
"""

from __future__ import annotations

import dataclasses
import operator
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
    "age_exact",
    "error",
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
        # serial -> (its TaskInfo, first seen, pending, the moment that record is aged for),
        # in serial order
        self.rows: dict[int, tuple[TaskInfo, float, bool, float]] = {}
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
            try:
                rows.sort(key=_serial_key)  # agent order is its own; ours is first seen first
            except (TypeError, IndexError, KeyError) as exc:
                raise WireError(f"bad task rows: {exc}") from exc
        else:
            if (
                listing.epoch != self.epoch
                or listing.base != self.version
                or listing.sites_from != len(self.sites)
            ):
                raise Resync(f"delta from {listing.base} does not follow {self.version}")
            self.sites.extend(listing.sites)
        sites = [(site.coroutine, site.function, site.file) for site in self.sites]
        count = len(sites)
        now = listing.time
        loop_ids = self._loop_ids
        target = self.rows
        for serial in listing.removed:
            target.pop(serial, None)
        for row in rows:  # inlined: 100k rows a listing
            if type(row) is not list or len(row) != _ROW_LEN or tuple(map(type, row)) != _ROW_TYPES:
                row = _checked(row)
            serial, name, state, site, line, loop, seen, awaiting, exact, error = row
            if not 0 <= site < count:
                raise WireError(f"task row {serial} names site {site} of {count}")
            where = sites[site]
            loop_id = loop_ids.get(loop)
            if loop_id is None:
                loop_id = loop_ids[loop] = f"loop-{loop}"
            fields = {
                "id": f"task-{serial}",
                "name": name,
                "state": state,
                "coroutine": where[0],
                "function": where[1],
                "file": where[2],
                "line": line,
                "loop": loop_id,
                "age": _age(now - seen),
                "awaiting": _awaiting(serial, awaiting) if awaiting else _NO_AWAITING,
                "current": False,
                "age_exact": exact,
                "error": error,
            }
            target[serial] = (_make(fields), seen, state == "pending", now)
        self.epoch, self.version = listing.epoch, listing.version

    def tasks(self, now: float, current: Iterable[int] = ()) -> tuple[TaskInfo, ...]:
        """Every task held, pending first (each part in serial order), aged as of the
        agent's ``now`` (records made for another moment are copied with their new age);
        ``current`` are the serials running a step."""
        pending: list[TaskInfo] = []
        others: list[TaskInfo] = []
        rows = self.rows
        for serial, (info, seen, waiting, made) in rows.items():
            if made != now:
                if _FAST:
                    fields = info.__dict__.copy()
                    fields["age"] = _age(now - seen)
                    info = _new(TaskInfo)
                    _set_dict(info, "__dict__", fields)
                else:
                    info = dataclasses.replace(info, age=_age(now - seen))
                rows[serial] = (info, seen, waiting, now)  # the same key: no resize
            (pending if waiting else others).append(info)
        if others:
            pending.extend(others)
        running = set(current)
        if running:
            for index, info in enumerate(pending):
                if int(info.id[5:]) in running:
                    pending[index] = dataclasses.replace(info, current=True)
        return tuple(pending)


def _age(seconds: float) -> float:
    """An age in seconds to the millisecond, as the agent's clocks are."""
    return int(seconds * 1000.0 + 0.5) / 1000.0 if seconds > 0.0 else 0.0


_ROW_TYPES = (int, str, str, int, int, int, float, list, bool, str)
_ROW_LEN = len(_ROW_TYPES)


def _awaiting(serial: int, awaiting: list[Any]) -> tuple[str, ...]:
    """Task ids from a row's awaiting serials."""
    for other in awaiting:
        if type(other) is not int:
            raise WireError(f"bad awaiting in task row {serial}")
    return tuple([f"task-{other}" for other in awaiting])


def _checked(row: Any) -> list[Any]:
    """A row that is not the plain shape (say, a first_seen sent as an int), checked field
    by field; its fields (trailing extras dropped), first_seen as a float."""
    if type(row) is not list or len(row) < _ROW_LEN:
        raise WireError(f"bad task row {row!r:.60}")
    fields = row[:_ROW_LEN]
    for index, kind in enumerate(_ROW_TYPES):
        value = fields[index]
        if type(value) is not kind:
            if kind is float and type(value) is int:
                fields[index] = float(value)
            else:
                raise WireError(f"bad task row {row!r:.60}")
    return fields


_serial_key = operator.itemgetter(0)  # rows are checked when decoded
