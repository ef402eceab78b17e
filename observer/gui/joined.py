"""A master's Processes tree followed part by part (in the link's worker): the master's
own rows and each worker's, each part followed from what changed in it
(observer.gui.follow on a shadow of its own, fed by Node.changes / Node.worker_changes),
then joined into the one Delta the tab's model takes.

A steady refresh thus copies and compares only the rows that changed in any process,
not the ~9k rows of a master with 8 workers x 1k tasks, and each worker sends only
its delta. A worker's ids are ``pid-N/ID`` in the joined tree (what stack and kill
take) and its rows hang under the master's row for it, as observer.tree.graft_workers
places them; a worker replaced by a new pid is a new part, started from nothing.

Qt-free.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from observer.client import SnapshotChanges
from observer.gui.delta import AGENT_THREADS, BULK, Delta, Record, Shadow, agent_now, tree_from
from observer.gui.follow import _compare, _finish, _parents_first, follow_of, tree_follow
from observer.gui.rows import STATE, TARGET

Cursor = tuple[int, int]


@dataclass
class Part:
    """One process's rows: its own shadow (ids as in that process) and the ids its rows
    have in the joined tree."""

    shadow: Shadow = field(default_factory=Shadow)
    shown: set[str] = field(default_factory=set)
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class Joined:
    """What a Processes tab keeps to follow a master and its workers (its Shadow.follow)."""

    master: Part = field(default_factory=Part)
    workers: dict[int, Part] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)  # worker rows showing why they failed
    pids: tuple[int, ...] = ()  # the workers of the last refresh (answered or not)

    def cursor(self, pid: int | None = None) -> Cursor:
        """Where the master's (``pid`` None) or a worker's part is in that node's tasks."""
        part = self.master if pid is None else self.workers.get(pid)
        if part is None or part.shadow.follow is None:
            return (0, 0)
        return follow_of(part.shadow).cursor


def joined_of(shadow: Shadow) -> Joined | None:
    """The shadow's Joined, or None while it follows a single process."""
    return shadow.follow if isinstance(shadow.follow, Joined) else None


def _mapper(pid: int | None):  # type: ignore[no-untyped-def]
    """(id, record) as in a worker -> as in the joined tree (None: not shown there)."""
    if pid is None:
        return lambda target, record: (target, record)
    root = f"pid-{pid}"
    prefix = f"{root}/"

    def mapped(target: str, record: Record) -> tuple[str, Record] | None:
        kind = record[1]
        if kind in ("process", "child"):  # its row is the master's; its children too
            return None
        parent = record[0]
        text = record[2]
        text = (*text[:TARGET], prefix + text[TARGET], *text[TARGET + 1 :])
        return prefix + target, (root if parent == root else prefix + parent, kind, text, record[3])

    return mapped


def _take(touched: dict[str, Record | None], sub: Delta, part: Part, pid: int | None) -> None:
    """What one part's refresh changed, as joined rows (None: gone) into ``touched``."""
    mapper = _mapper(pid)
    rows = part.shadow.rows
    if sub.full is not None:
        ids = rows.keys()
    else:
        ids = [t for t, _r in sub.new] + [t for t, _r in sub.changed] + [t for t, _p in sub.moved]
    if pid is not None:
        part.counts = {k: v for k, v in sub.counts.items() if k not in ("process", "child")}
    else:
        part.counts = dict(sub.counts)
    shown = set() if sub.full is not None else part.shown
    if sub.full is None:
        prefix = "" if pid is None else f"pid-{pid}/"
        for target in sub.gone:
            if prefix + target in shown:  # not a row the joined tree leaves out
                shown.discard(prefix + target)
                touched[prefix + target] = None
    for target in ids:
        record = rows.get(target)
        got = mapper(target, record) if record is not None else None
        if got is not None:
            shown.add(got[0])
            touched[got[0]] = got[1]
    if sub.full is not None:
        for target in part.shown - shown:
            touched[target] = None
        part.shown = shown


def _drop(touched: dict[str, Record | None], part: Part) -> None:
    for target in part.shown:
        touched[target] = None


def joined_delta(
    shadow: Shadow,
    master: SnapshotChanges,
    workers: Mapping[int, SnapshotChanges | str],
    task_cpu: Mapping[str, float] | None = None,
) -> Delta:
    """The Processes tab's refresh of a master (``master``: its changes) and its workers
    (each worker's changes, or why it gave none), as the rows that changed since
    ``shadow`` (the tab's) or, the first time or after a big change, the whole tree."""
    joined = joined_of(shadow)
    whole = joined is None or not shadow.rows
    if joined is None:
        joined = Joined()
        shadow.follow = joined
    touched: dict[str, Record | None] = {}
    _take(touched, tree_follow(master, joined.master.shadow, task_cpu), joined.master, None)
    for pid in [p for p in joined.workers if not isinstance(workers.get(p), SnapshotChanges)]:
        _drop(touched, joined.workers.pop(pid))  # gone, or no answer: its subtree goes
    agent_threads = joined.master.counts.get(AGENT_THREADS, 0)
    for pid, changes in workers.items():
        if isinstance(changes, SnapshotChanges):
            part = joined.workers.setdefault(pid, Part())
            _take(touched, tree_follow(changes, part.shadow), part, pid)
            agent_threads += part.counts.get(AGENT_THREADS, 0)
    # a worker that gave no answer says why as its row's state (as graft_workers does)
    master_rows = joined.master.shadow.rows
    failed = {f"pid-{pid}": why for pid, why in workers.items() if isinstance(why, str)}
    for target in joined.failed | failed.keys():
        record = master_rows.get(target)
        if record is not None:
            if target in failed:
                text = record[2]
                text = (*text[:STATE], failed[target], *text[STATE + 1 :])
                record = (record[0], record[1], text, record[3])
            touched[target] = record
    joined.failed = set(failed)
    joined.pids = tuple(workers)

    now = agent_now(master.process)
    counts: dict[str, int] = {}
    for part in (joined.master, *joined.workers.values()):
        for kind, count in part.counts.items():
            counts[kind] = counts.get(kind, 0) + count
    counts[AGENT_THREADS] = agent_threads
    counts["worker"] = len(workers)
    old = shadow.rows
    delta = Delta(shadow, shadow.seq + 1, now, counts)
    if not whole:
        store: list[tuple[str, Record]] = []
        for target, record in touched.items():
            if record is None:
                if target in old:
                    delta.gone.append(target)
            else:
                _compare(delta, old, target, record, store)
        if delta.size <= BULK:
            delta.new = _parents_first(delta.new)
            shadow.seq = delta.seq
            _finish(delta, shadow, store)
            return delta
    return _whole(shadow, joined, delta, failed)


def _whole(shadow: Shadow, joined: Joined, delta: Delta, failed: Mapping[str, str]) -> Delta:
    """Every joined row, parents first (a full Delta): the parts' rows mapped."""
    rows: list[tuple[str, Record]] = []
    for target, record in joined.master.shadow.rows.items():
        why = failed.get(target)
        if why is not None:
            text = (*record[2][:STATE], why, *record[2][STATE + 1 :])
            record = (record[0], record[1], text, record[3])
        rows.append((target, record))
    for pid, part in joined.workers.items():
        mapper = _mapper(pid)
        for target, record in part.shadow.rows.items():
            got = mapper(target, record)
            if got is not None:
                rows.append(got)
    full = Delta(shadow, delta.seq, delta.now, delta.counts)
    shadow.seq = full.seq
    shadow.rows = dict(_parents_first(rows))
    full.full = tree_from(shadow.rows)
    full.full.counts = dict(delta.counts)
    return full
