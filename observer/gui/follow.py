"""A rows view's refresh from what changed (Node.changes), in the link's worker.

Qt-free. ``delta.tree_delta`` and ``delta.table_delta`` walk every row of a snapshot and
compare it with the shadow: at 100k tasks that is ~0.8 s of CPU per refresh, whatever
changed. Here each tab keeps where it is in the node's tasks (a cursor Node.changes
takes) and an index of who awaits whom, and a refresh computes rows only for
the tasks new, changed or gone and the tasks they awaited (whose place in the tree can
move), plus the few process, thread, loop and child rows; the Delta it hands the model
is the one ``diff`` would make from a whole new tree.

A task sits under the first task that awaits it, in listing order (pending first, then
by serial), as ``observer.tree.build_tree`` places it; when that cannot be followed
cheaply (the first refresh, a complete listing, a loop that came or went, an await
cycle, more than ``delta.BULK`` rows touched) the refresh is the whole walk, and the
index is made again from it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from agent.schema import Snapshot, TaskInfo
from observer.client import Cursor, SnapshotChanges
from observer.format import task_finished
from observer.gui.delta import (
    AGENT_THREADS,
    BORN_SLACK,
    BULK,
    Delta,
    Record,
    Shadow,
    agent_now,
    table_delta,
    tree_delta,
    walk_records,
)
from observer.gui.rows import AGE, TABLE_KINDS, node_values, short_ids
from observer.tree import build_tree, task_node


@dataclass
class Follow:
    """What one tab keeps to follow a node's changes (read and written by the worker)."""

    cursor: Cursor = (0, 0)  # what the tab saw last of the node's tasks (Node.changes)
    valid: bool = False  # the fields below describe the shadow's rows
    infos: dict[str, TaskInfo] = field(default_factory=dict)  # task id -> its record
    awaiters: dict[str, set[str]] = field(default_factory=dict)  # id -> tasks awaiting it
    loops: frozenset[str] = frozenset()
    root: str = ""
    others: set[str] = field(default_factory=set)  # rows that are not tasks
    had_cpu: bool = False  # the shadow's task rows carry CPU cells (CPU per task was on)


def follow_of(shadow: Shadow) -> Follow:
    """The shadow's Follow (made on first use: a cleared tab starts a new shadow)."""
    if shadow.follow is None:
        shadow.follow = Follow()
    return shadow.follow


def _key(info: TaskInfo) -> tuple[bool, int]:
    """Where a task comes in a listing: pending first, then by serial."""
    return info.state != "pending", int(info.id[5:])


def _born(info: TaskInfo, now: float) -> float | None:
    return now - info.age if info.age is not None and not task_finished(info.state) else None


def _frame(changes: SnapshotChanges) -> Snapshot:
    """The snapshot without its tasks: process, threads, loops and children."""
    return Snapshot(
        changes.process,
        changes.threads,
        changes.loops,
        (),
        changes.children,
        changes.tasks_total,
        changes.truncated,
        changes.collect_seconds,
    )


def _index(follow: Follow, tasks: Iterable[TaskInfo], loops: frozenset[str], root: str) -> None:
    follow.infos = {t.id: t for t in tasks}
    awaiters: dict[str, set[str]] = {}
    for t in follow.infos.values():
        for child in t.awaiting:
            if child != t.id:
                awaiters.setdefault(child, set()).add(t.id)
    follow.awaiters, follow.loops, follow.root = awaiters, loops, root


def _parent(follow: Follow, target: str) -> str:
    """Where build_tree puts a task: under its first awaiter, else its loop, else the
    process."""
    infos = follow.infos
    best, best_key = "", (True, 0)
    for other in follow.awaiters.get(target, ()):
        info = infos.get(other)
        if info is not None and other != target:
            key = _key(info)
            if not best or key < best_key:
                best, best_key = other, key
    if best:
        return best
    loop = infos[target].loop
    return loop if loop in follow.loops else follow.root


def _update(follow: Follow, changes: SnapshotChanges) -> set[str]:
    """Take the changed and gone tasks into the index; the ids whose row or place may
    have moved."""
    infos, awaiters = follow.infos, follow.awaiters
    touched: set[str] = set()
    for target in changes.gone:
        info = infos.pop(target, None)
        awaiters.pop(target, None)
        if info is not None:
            for child in info.awaiting:
                awaiters.get(child, set()).discard(target)
                touched.add(child)
    for info in changes.tasks:
        target = info.id
        before = infos.get(target)
        if before is not None:
            for child in before.awaiting:
                awaiters.get(child, set()).discard(target)
                touched.add(child)
        infos[target] = info
        for child in info.awaiting:
            if child != target:
                awaiters.setdefault(child, set()).add(target)
                touched.add(child)
        touched.add(target)
    touched.intersection_update(infos)
    return touched


def _acyclic(follow: Follow, parents: dict[str, str], rows: dict[str, Record]) -> bool:
    """No touched task sits below itself (build_tree breaks such cycles its own way)."""
    infos = follow.infos
    limit = len(infos) + 1
    for start in parents:
        seen = 0
        up = parents[start]
        while up in infos:
            if up == start or seen > limit:
                return False
            seen += 1
            up = parents[up] if up in parents else rows[up][0] if up in rows else ""
    return True


def _compare(
    delta: Delta, old: dict[str, Record], target: str, record: Record, store: list
) -> None:
    """One row against the shadow, as delta.diff compares them."""
    before = old.get(target)
    if before is None:
        delta.new.append((target, record))
        store.append((target, record))
        return
    born = record[3]
    if before[3] is not None and born is not None and abs(born - before[3]) < BORN_SLACK:
        born = before[3]
    if before[0] != record[0]:
        delta.moved.append((target, record[0]))
    if before[1:3] != record[1:3] or born != before[3]:
        record = (record[0], record[1], record[2], born)
        delta.changed.append((target, record))
        store.append((target, record))
    elif before[0] != record[0]:
        store.append((target, (record[0], *before[1:])))


def _parents_first(new: list[tuple[str, Record]]) -> list[tuple[str, Record]]:
    """New rows ordered so that a new row's parent, when new too, comes before it."""
    pending = dict(new)
    out: list[tuple[str, Record]] = []
    for target in list(pending):
        chain = []
        while target in pending:
            chain.append(target)
            target = pending[target][0]
            if target in chain:
                break
        for item in reversed(chain):
            record = pending.pop(item, None)
            if record is not None:
                out.append((item, record))
    return out


def _finish(delta: Delta, shadow: Shadow, store: list) -> None:
    old = shadow.rows
    for target in delta.gone:
        old.pop(target, None)
    for target, record in store:
        old[target] = record


def tree_follow(
    changes: SnapshotChanges, shadow: Shadow, task_cpu: Mapping[str, float] | None = None
) -> Delta:
    """The Processes tree's refresh from ``changes`` (the tab ``shadow`` belongs to).
    While CPU per task is on (``task_cpu``: its cells) every task's cell may change, so
    the refresh is the whole walk, and once more after it went off to clear the cells."""
    follow = follow_of(shadow)
    follow.cursor = changes.cursor
    now = agent_now(changes.process)
    frame = _frame(changes)
    root = f"pid-{changes.process.pid}"
    loops = frozenset(lp.id for lp in changes.loops)
    cheap = (
        follow.valid
        and task_cpu is None
        and not follow.had_cpu
        and not changes.full
        and shadow.rows
        and loops == follow.loops
        and root == follow.root
    )
    if cheap:
        delta = _tree_changes(changes, shadow, follow, frame, now)
        if delta is not None:
            return delta
    return _tree_whole(changes, shadow, follow, loops, root, task_cpu)


def _tree_whole(
    changes: SnapshotChanges,
    shadow: Shadow,
    follow: Follow,
    loops: frozenset[str],
    root: str,
    task_cpu: Mapping[str, float] | None,
) -> Delta:
    """The whole walk (delta.tree_delta), and the index made again from it."""
    snap = changes.snapshot()
    delta = tree_delta(snap, shadow, build_tree(snap, task_cpu), short_ids(snap))
    follow.had_cpu = task_cpu is not None
    _index(follow, snap.tasks, loops, root)
    rows = shadow.rows
    follow.others = {target for target, record in rows.items() if record[1] != "task"}
    follow.valid = all(rows[t][0] == _parent(follow, t) for t in follow.infos if t in rows)
    return delta


def _tree_changes(
    changes: SnapshotChanges, shadow: Shadow, follow: Follow, frame: Snapshot, now: float
) -> Delta | None:
    """The rows touched by ``changes``, or None when the whole walk must be made."""
    old = shadow.rows
    touched = _update(follow, changes)
    parents = {target: _parent(follow, target) for target in touched}
    if not _acyclic(follow, parents, old):
        follow.valid = False
        return None
    delta = Delta(shadow, shadow.seq + 1, now, {})
    store: list[tuple[str, Record]] = []
    others: set[str] = set()
    counts: dict[str, int] = {}
    for target, record in walk_records(build_tree(frame), short_ids(frame), now):
        others.add(target)
        counts[record[1]] = counts.get(record[1], 0) + 1
        _compare(delta, old, target, record, store)
    fresh = {info.id for info in changes.tasks}
    short = short_ids(frame)
    for target in touched:
        if target in fresh:
            info = follow.infos[target]
            values = node_values(task_node(info), short)
            text = (*values[:AGE], "", *values[AGE + 1 :])  # the Age cell is drawn from born
            record = (parents[target], "task", text, _born(info, now))
            _compare(delta, old, target, record, store)
        else:
            before = old.get(target)
            if before is None:  # held but never shown: the whole walk puts it right
                follow.valid = False
                return None
            if before[0] != parents[target]:
                delta.moved.append((target, parents[target]))
                store.append((target, (parents[target], *before[1:])))
    delta.gone = [t for t in changes.gone if t in old]
    delta.gone += [t for t in follow.others - others if t in old]
    if delta.size > BULK:
        follow.valid = False
        return None
    delta.new = _parents_first(delta.new)
    shadow.seq = delta.seq
    follow.others = others
    _finish(delta, shadow, store)
    counts["task"] = len(follow.infos)
    if not counts["task"]:
        del counts["task"]
    counts[AGENT_THREADS] = sum(1 for t in changes.threads if t.is_agent)
    delta.counts = counts
    return delta


def table_follow(
    changes: SnapshotChanges, shadow: Shadow, task_cpu: Mapping[str, float] | None = None
) -> Delta:
    """The Tasks & threads table's refresh from ``changes`` (the tab ``shadow`` belongs to);
    the whole walk while CPU per task is on (``task_cpu``), as in tree_follow."""
    follow = follow_of(shadow)
    follow.cursor = changes.cursor
    now = agent_now(changes.process)
    cpu_cells = task_cpu is not None or follow.had_cpu
    if cpu_cells or not (follow.valid and not changes.full and shadow.rows):
        snap = changes.snapshot()
        delta = table_delta(snap, shadow, dict(task_cpu) if task_cpu is not None else None)
        follow.valid, follow.had_cpu = True, task_cpu is not None
        follow.others = {t for t, record in shadow.rows.items() if record[1] != "task"}
        return delta
    frame = _frame(changes)
    old = shadow.rows
    delta = Delta(shadow, shadow.seq + 1, now, {})
    store: list[tuple[str, Record]] = []
    others: set[str] = set()
    short = short_ids(frame)
    for target, record in walk_records(build_tree(frame), short, now):
        if record[1] in TABLE_KINDS:
            others.add(target)
            _compare(delta, old, target, ("", *record[1:]), store)  # type: ignore[arg-type]
    for info in changes.tasks:
        values = node_values(task_node(info), short)
        text = (*values[:AGE], "", *values[AGE + 1 :])
        _compare(delta, old, info.id, ("", "task", text, _born(info, now)), store)
    delta.gone = [t for t in changes.gone if t in old]
    delta.gone += [t for t in follow.others - others if t in old]
    if delta.size > BULK:
        follow.valid = False
        return table_follow(changes, shadow)
    shadow.seq = delta.seq
    follow.others = others
    _finish(delta, shadow, store)
    delta.counts = {
        "threads": len(changes.threads),
        "tasks": len(changes.cache.rows),
        "tasks_total": changes.tasks_total,
        "children": len(changes.children),
    }
    return delta
