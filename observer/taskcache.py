"""The observer's copy of one node's tasks: a complete listing replaces it, a delta (the
rows changed since the version it holds, the ids gone) updates it, and every refresh
hands out complete TaskInfo records, aged by the agent's clock.

Rows arrive as the agent's compact TaskRow lists (see agent.schema); they are checked
and turned straight into TaskInfo a column at a time, without an intermediate record per
row (100k rows per refresh).
"""

from __future__ import annotations

import dataclasses
import itertools
import operator
from collections import Counter, deque
from collections.abc import Callable, Iterable
from itertools import repeat
from typing import Any

from agent.codec import WireError
from agent.record import record
from agent.schema import TaskInfo, TaskListing, TaskSite

_NO_AWAITING: tuple[str, ...] = ()
LOG_VERSIONS = 64  # deltas a cache remembers for consumers that saw an older version
LOG_SERIALS = 200_000  # and at most this many serials in them
_caches = itertools.count(1)
_ROW_TYPES = (int, str, str, int, int, int, float, list, bool, str)
_ROW_LEN = len(_ROW_TYPES)
_FIELDS = tuple(f.name for f in dataclasses.fields(TaskInfo))


def _record_maker() -> Callable[..., TaskInfo]:
    """``TaskInfo(*values)`` for 100k rows a listing, without the frozen ``__init__``'s
    ``object.__setattr__`` per field: a plain twin class stores the fields with ordinary
    attribute writes and becomes a TaskInfo by ``__class__`` assignment, as
    agent.schema's row decoder does (a third of the time). Probed once; TaskInfo itself
    where that is refused or would stop the world per row (free-threaded builds)."""
    import sysconfig  # here: only a long listing needs it (~0.5 ms to import)

    if sysconfig.get_config_var("Py_GIL_DISABLED") or "__slots__" in TaskInfo.__dict__:
        return TaskInfo
    params = ", ".join(_FIELDS)  # keywords work too: TaskInfo's own field names
    body = [f"    self.{name} = {name}" for name in _FIELDS]
    env: dict[str, Any] = {"cls": TaskInfo}
    exec(  # generated from TaskInfo's own field names only
        "\n".join([f"def __init__(self, {params}):", *body, "    self.__class__ = cls"]), env
    )
    twin = type("TaskInfoTwin", (), {"__init__": env["__init__"], "__module__": __name__})
    sample = tuple(range(len(_FIELDS)))
    try:
        probe = twin(*sample)
        same = type(probe) is TaskInfo and vars(probe) == vars(TaskInfo(*sample))
    except TypeError:
        same = False
    return twin if same else TaskInfo


_TWIN_ROWS = 32  # fewer rows are made by TaskInfo itself: no probe, no sysconfig import
_makers: list[Callable[..., TaskInfo]] = []


def _maker(rows: int) -> Callable[..., TaskInfo]:
    """What makes ``rows`` TaskInfo records: the twin (probed on first need) for many."""
    if rows < _TWIN_ROWS:
        return TaskInfo
    if not _makers:
        _makers.append(_record_maker())
    return _makers[0]


_PLAIN_DICT = "__slots__" not in TaskInfo.__dict__
_new = object.__new__
_set_dict = object.__setattr__


class Resync(Exception):
    """A delta that does not follow what the cache holds: ask for a complete listing."""


@record
class ListingStats:
    """What the last task listing carried (how much a refresh cost on the wire)."""

    base: int  # 0: complete listing; else the version the delta followed
    version: int
    rows: int  # rows received (new and changed ones for a delta)
    removed: int  # ids of tasks gone
    chunks: int  # round trips the rows took
    size: int  # bytes received, all chunks


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
        self.serial = next(_caches)  # tells this cache from any other (see changes_since)
        # (version before, version after, serials new or changed, serials gone) per delta
        # applied, oldest first: what consumers that saw an older version need (bounded)
        self.log: deque[tuple[int, int, list[int], list[int]]] = deque()
        self._logged = 0

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
        target = self.rows
        pop = target.pop
        gone = [serial for serial in listing.removed if pop(serial, None) is not None]
        if rows:
            target.update(self._records(listing.time, rows))
        if listing.base == 0:
            self.log.clear()
            self._logged = 0
        elif listing.version != self.version:
            changed = list(map(_serial_key, rows))  # checked by _records
            self.log.append((self.version, listing.version, changed, gone))
            self._logged += len(changed) + len(gone)
            while len(self.log) > LOG_VERSIONS or self._logged > LOG_SERIALS:
                _before, _after, dropped, left = self.log.popleft()
                self._logged -= len(dropped) + len(left)
        self.epoch, self.version = listing.epoch, listing.version

    def changes_since(self, version: int) -> tuple[list[int], list[int]] | None:
        """(serials new or changed, serials gone) since ``version`` of this cache, or None
        when the log no longer reaches back that far (or never held it)."""
        if version == self.version and self.epoch:
            return [], []
        entries = []
        for entry in reversed(self.log):
            entries.append(entry)
            if entry[0] == version:
                break
        else:
            return None
        changed: dict[int, None] = {}
        gone: dict[int, None] = {}
        for _before, _after, brought, dropped in reversed(entries):
            changed.update(dict.fromkeys(brought))
            gone.update(dict.fromkeys(dropped))
        rows = self.rows
        return [s for s in changed if s in rows], [s for s in gone if s not in rows]

    def _records(self, now: float, rows: list[Any]) -> Iterable[tuple[int, Any]]:
        """(serial, (TaskInfo, first seen, pending, ``now``)) of every row, checked.

        Column by column: the rows are transposed and each column is checked, looked up
        and converted by one C-level pass (``map``, ``zip``, set checks) instead of some
        thirty Python operations per row; a column that is not the plain shape sends the
        rows through :func:`_checked`, which says which row is wrong (or mends an int
        time)."""
        columns = _columns(rows) if _plain(rows) else None
        if columns is None:
            rows = [_checked(row) for row in rows]
            columns = _columns(rows)
            assert columns is not None
        serials, names, states, site_ix, lines, loops, seen, awaiting, exact, errors = columns
        if len(set(serials)) != len(serials):  # a task has one row, or the answer lies
            twice = next(s for s, times in Counter(serials).items() if times > 1)
            raise WireError(f"task row {twice} comes twice in one listing")
        count = len(self.sites)
        if min(site_ix) < 0 or max(site_ix) >= count:
            bad = next(r for r in rows if not 0 <= r[3] < count)
            raise WireError(f"task row {bad[0]} names site {bad[3]} of {count}")
        loop_ids = self._loop_ids
        for loop in set(loops).difference(loop_ids):
            loop_ids[loop] = f"loop-{loop}"
        fields = {
            "id": [f"task-{serial}" for serial in serials],
            "name": names,
            "state": states,
            "coroutine": map([s.coroutine for s in self.sites].__getitem__, site_ix),
            "function": map([s.function for s in self.sites].__getitem__, site_ix),
            "file": map([s.file for s in self.sites].__getitem__, site_ix),
            "line": lines,
            "loop": map(loop_ids.__getitem__, loops),
            "age": [int((now - s) * 1000.0 + 0.5) / 1000.0 if s < now else 0.0 for s in seen],
            "awaiting": [
                _awaiting(serial, waits) if waits else _NO_AWAITING
                for serial, waits in zip(serials, awaiting, strict=True)
            ],
            "current": repeat(False),
            "age_exact": exact,
            "error": errors,
        }
        infos = map(_maker(len(serials)), *[fields[name] for name in _FIELDS])
        pending = map(operator.eq, states, repeat("pending"))
        return zip(serials, zip(infos, seen, pending, repeat(now)), strict=False)

    def tasks(self, now: float, current: Iterable[int] = ()) -> tuple[TaskInfo, ...]:
        """Every task held, pending first (each part in serial order), aged as of the
        agent's ``now`` (records made for another moment are copied with their new age);
        ``current`` are the serials running a step."""
        rows = self.rows
        stale = [serial for serial, row in rows.items() if row[3] != now]
        for serial in stale:  # the same keys: no resize
            info, seen, waiting, _made = rows[serial]
            rows[serial] = (_aged(info, _age(now - seen)), seen, waiting, now)
        held = rows.values()
        pending = [row[0] for row in held if row[2]]
        if len(pending) < len(rows):
            pending += [row[0] for row in held if not row[2]]
        running = set(current)
        if running:
            for index, info in enumerate(pending):
                if int(info.id[5:]) in running:
                    pending[index] = dataclasses.replace(info, current=True)
        return tuple(pending)

    def infos(
        self, serials: Iterable[int], now: float, current: Iterable[int] = ()
    ) -> list[TaskInfo]:
        """The records of the tasks held among ``serials`` (in that order), aged as of the
        agent's ``now``; only these are copied, not every task held."""
        rows = self.rows
        running = set(current)
        out = []
        for serial in serials:
            row = rows.get(serial)
            if row is None:
                continue
            info = row[0] if row[3] == now else _aged(row[0], _age(now - row[1]))
            if serial in running:
                info = dataclasses.replace(info, current=True)
            out.append(info)
        return out


def _aged(info: TaskInfo, age: float) -> TaskInfo:
    """``info`` with another age: its fields copied straight into a new record where
    records keep them in a plain ``__dict__`` (several times faster than ``replace``)."""
    if _PLAIN_DICT:
        fields = info.__dict__.copy()
        fields["age"] = age
        aged = _new(TaskInfo)
        _set_dict(aged, "__dict__", fields)
        return aged
    return dataclasses.replace(info, age=age)


def _age(seconds: float) -> float:
    """An age in seconds to the millisecond, as the agent's clocks are."""
    return int(seconds * 1000.0 + 0.5) / 1000.0 if seconds > 0.0 else 0.0


def _plain(rows: list[Any]) -> bool:
    """Every row a list of exactly the fields the agent sends."""
    return set(map(type, rows)) == {list} and set(map(len, rows)) == {_ROW_LEN}


def _columns(rows: list[Any]) -> list[tuple[Any, ...]] | None:
    """The columns of rows of _ROW_LEN fields, or None unless every field of every row is
    of its plain type (checked a column at a time)."""
    columns = list(zip(*rows))  # noqa: B905 (every row has _ROW_LEN fields)
    plain = all(
        {kind}.issuperset(map(type, column))
        for kind, column in zip(_ROW_TYPES, columns, strict=True)
    )
    return columns if plain else None


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
