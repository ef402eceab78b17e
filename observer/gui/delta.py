"""What changed between two refreshes of a rows view, worked out in the link's worker.

Qt-free. Each rows tab owns a ``Shadow``: the rows the worker last handed it (id ->
parent, kind, text, birth time). A refresh walks the new snapshot's tree once, compares
it with the shadow and hands the GUI a ``Delta`` (rows new, gone, moved to another
parent, changed), so the Qt model signals only those rows; the first refresh, or one that
changed more than ``BULK`` rows, carries the whole picture instead (a model reset is then
cheaper than thousands of row signals). The Age column is not compared: it is drawn
from each row's birth time and the clock, so ageing does not make every row "changed".
Every other cell is, the hidden ones too (a task's own name, why its age is a lower
bound, whether it has finished): a task that ends is a changed row.

The shadow is read and written only by the worker (jobs of one node run one at a time,
in order) and the GUI applies deltas in the order they were made (``seq``); a delta
that does not follow the model's sequence makes the tab start over with a full one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from agent.schema import Snapshot
from observer.gui.rows import (
    AGE,
    CPU,
    ID,
    NAME,
    TABLE_KINDS,
    WIDTH,
    Item,
    TableData,
    TreeData,
    id_key,
    node_values,
    search_text,
    search_texts,
    short_ids,
)
from observer.tree import TreeNode, build_tree

BULK = 2000  # rows new, gone, moved or changed beyond which a refresh replaces everything
BORN_SLACK = 0.5  # s: a birth time that moved less than this is clock jitter, not a change
TASK_LIMIT = 250_000  # tasks a GUI refresh asks for (the agent truncates beyond and says so)

AGENT_THREADS = "agent threads"  # counts' key: the agent's own threads (among "thread")

# A row as the worker keeps and sends it: (parent id, kind, text without age, born); the
# text is node_values' (WIDTH cells), born is None where no age is shown (a finished task)
Record = tuple[str, str, tuple[str, ...], float | None]


@dataclass
class Shadow:
    """The rows a view was last sent, by id, in the order they were first sent."""

    rows: dict[str, Record] = field(default_factory=dict)
    seq: int = 0
    follow: Any = None  # what observer.gui.follow keeps to update ``rows`` from changes


@dataclass
class Delta:
    """One refresh for a rows model: ``full`` (the whole picture) or the rows that changed."""

    shadow: Shadow
    seq: int
    now: float  # the agent's clock at the snapshot: ages are drawn against it
    counts: dict[str, int]
    full: TreeData | TableData | None = None
    new: list[tuple[str, Record]] = field(default_factory=list)  # in tree order
    moved: list[tuple[str, str]] = field(default_factory=list)  # (id, new parent id)
    changed: list[tuple[str, Record]] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.new) + len(self.moved) + len(self.changed) + len(self.gone)


def walk_records(top: TreeNode, short: dict[str, str], now: float) -> Iterator[tuple[str, Record]]:
    """(id, record) for every row, parents before children, taking the tree apart as it
    goes: each node is freed as soon as it is done, never 100k at once in one call that
    holds the GIL (the GUI thread would stall behind it)."""
    stack: list[tuple[TreeNode, str]] = [(top, "")]
    while stack:
        node, parent = stack.pop()
        values = node_values(node, short)
        text = (*values[:AGE], "", *values[AGE + 1 :])
        # no age, no birth: none known, or a task that has ended (its age says nothing live)
        born = now - node.age if node.age is not None and not node.finished else None
        children = node.children
        node.children = []
        stack.extend((child, node.id) for child in reversed(children))
        yield node.id, (parent, node.kind, text, born)


def diff(shadow: Shadow, records: Iterator[tuple[str, Record]]) -> tuple[Delta, bool]:
    """Compare ``records`` with the shadow and bring the shadow up to date; the delta and
    whether it must be a full one (the first refresh, or more than ``BULK`` rows changed):
    then ``shadow.rows`` holds every record in tree order, to build the full data from."""
    old = shadow.rows
    delta = Delta(shadow, shadow.seq + 1, 0.0, {})
    shadow.seq = delta.seq
    if not old:
        shadow.rows = dict(records)
        return delta, True
    fresh: list[tuple[str, Record]] = []  # every row in tree order, unchanged ones as held
    new, moved, changed = delta.new, delta.moved, delta.changed
    for target, record in records:
        before = old.get(target)
        if before is None:
            new.append((target, record))
            fresh.append((target, record))
            continue
        born = record[3]
        if before[3] is not None and born is not None and abs(born - before[3]) < BORN_SLACK:
            born = before[3]  # keep the first: ages then never jitter
        if before[0] != record[0]:
            moved.append((target, record[0]))
        if before[1:3] != record[1:3] or born != before[3]:
            record = (record[0], record[1], record[2], born)
            changed.append((target, record))
        elif before[0] == record[0]:
            record = before
        else:
            record = (record[0], *before[1:])
        fresh.append((target, record))
    if len(fresh) != len(old) or new:
        seen = {target for target, _record in fresh}
        delta.gone = [target for target in old if target not in seen]
    if delta.size > BULK:
        shadow.rows = dict(fresh)
        return Delta(shadow, delta.seq, 0.0, {}), True
    for target in delta.gone:
        del old[target]
    for target, record in moved_or_changed(delta, fresh):
        old[target] = record
    return delta, False


def moved_or_changed(delta: Delta, fresh: list[tuple[str, Record]]) -> Iterator[tuple[str, Record]]:
    """The fresh records of the rows new, moved or changed (to store in the shadow)."""
    touched = {target for target, _ in delta.new}
    touched.update(target for target, _ in delta.moved)
    touched.update(target for target, _ in delta.changed)
    if touched:
        for target, record in fresh:
            if target in touched:
                yield target, record


def counts_of(rows: dict[str, Record]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in rows.values():
        counts[record[1]] = counts.get(record[1], 0) + 1
    return counts


# ------------------------------------------------------------------ tree


def new_item(target: str, record: Record, parent: Item | None) -> Item:
    """A tree row made from a record (not yet placed among its parent's children)."""
    item = Item(target, record[1], parent, -1)
    item.values = record[2]
    item.search = search_text(record[2])
    item.born = record[3]
    return item


def tree_from(rows: dict[str, Record]) -> TreeData:
    """The whole tree from records in tree order (parents first)."""
    root = Item("", "", None, -1)
    by_id: dict[str, Item] = {"": root}
    for target, record in rows.items():
        parent = by_id.get(record[0], root)
        item = new_item(target, record, parent)
        item.row = len(parent.children)
        parent.children.append(item)
        by_id[target] = item
    del by_id[""]
    return TreeData(root, by_id, counts=counts_of(rows))


def agent_now(process: Any) -> float:
    """The agent's clock when it collected a snapshot (its ``process``: start time plus
    uptime): ages are counted against it, so a row's birth time does not move with
    transfer time or the two machines' clocks."""
    return float(process.start_time) + float(process.uptime)


def tree_delta(
    snap: Snapshot,
    shadow: Shadow,
    top: TreeNode | None = None,
    short: dict[str, str] | None = None,
    agent_threads: int | None = None,
) -> Delta:
    """The Processes tree's refresh (worker thread): of ``snap``'s own tree, or of ``top``
    built from it (a master's with its workers grafted, ``short`` ids and ``agent_threads``
    covering them too)."""
    now = agent_now(snap.process)
    if top is None:
        top, short = build_tree(snap), short_ids(snap)
    records = walk_records(top, short if short is not None else short_ids(snap), now)
    delta, full = diff(shadow, records)
    delta.now = now
    if full:
        delta.full = tree_from(shadow.rows)
        delta.counts = delta.full.counts
    else:
        delta.counts = counts_of(shadow.rows)
    if agent_threads is None:
        agent_threads = sum(1 for t in snap.threads if t.is_agent)
    delta.counts[AGENT_THREADS] = agent_threads
    return delta


# ------------------------------------------------------------------ table


def table_counts(snap: Snapshot) -> dict[str, int]:
    return {
        "threads": len(snap.threads),
        "tasks": len(snap.tasks),
        "tasks_total": snap.tasks_total,
        "children": len(snap.children),
    }


def age_key(born: float | None) -> float:
    """What the Age column sorts by: older first when descending, no age (a finished task)
    lowest; a lower bound sorts by its value, the oldest the agent can vouch for."""
    return -born if born is not None else float("-inf")


def cpu_key(text: str) -> float:
    """'1.25s' or '3.0%' as a number to sort by (-1: none)."""
    try:
        return float(text.rstrip("s%")) if text else -1.0
    except ValueError:
        return -1.0


def sort_keys(values: tuple[str, ...], born: float | None) -> list[object]:
    """One row's sort key per column (COLUMNS order, then TARGET and the hidden cells);
    text columns (Kind, State, Coroutine, Function, Location) sort by their text."""
    keys: list[object] = list(values)
    keys[NAME] = values[NAME].lower()
    keys[ID] = id_key(values[ID])
    keys[CPU] = cpu_key(values[CPU])
    keys[AGE] = age_key(born)
    return keys


def table_from(rows: dict[str, Record], counts: dict[str, int]) -> TableData:
    """The whole table from records (threads, tasks, children in tree order)."""
    texts = [record[2] for record in rows.values()]
    text: list[list[str]] = [list(column) for column in zip(*texts, strict=True)] or [
        [] for _ in range(WIDTH)
    ]
    keys: list[list[object]] = list(text)
    keys[NAME] = [name.lower() for name in text[NAME]]
    keys[ID] = [id_key(target) for target in text[ID]]
    keys[CPU] = [cpu_key(value) for value in text[CPU]]
    born = [record[3] for record in rows.values()]
    keys[AGE] = [age_key(b) for b in born]
    data = TableData(text, keys, search_texts(texts), counts)
    data.born = born
    data.slots = {target: slot for slot, target in enumerate(rows)}
    return data


def table_records(top: TreeNode, short: dict[str, str], now: float) -> Iterator[tuple[str, Record]]:
    for target, record in walk_records(top, short, now):
        if record[1] in TABLE_KINDS:
            yield target, ("", record[1], record[2], record[3])


def table_delta(snap: Snapshot, shadow: Shadow, task_cpu: dict[str, float] | None = None) -> Delta:
    """The Tasks & threads table's refresh (worker thread); ``task_cpu`` fills the tasks'
    CPU cells (observer.gui.taskcpu)."""
    now = agent_now(snap.process)
    counts = table_counts(snap)
    records = table_records(build_tree(snap, task_cpu), short_ids(snap), now)
    delta, full = diff(shadow, records)
    delta.now, delta.counts = now, counts
    if full:
        delta.full = table_from(shadow.rows, counts)
    return delta
