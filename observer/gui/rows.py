"""Display rows for the Processes tree and the Tasks & threads table, built off the GUI thread.

Qt-free: the worker thread turns a Snapshot into these plain structures, and the Qt
models only index into them, so ``data()`` never computes or does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.schema import Snapshot
from observer.format import human_seconds, short_path
from observer.tree import TreeNode, build_tree

COLUMNS = ("Name", "Kind", "ID", "State", "CPU", "Age", "Function", "Location")
NAME, KIND, ID, STATE, CPU, AGE, FUNCTION, LOCATION = range(len(COLUMNS))
TARGET = len(COLUMNS)  # not shown: the full target id, what tooltips show and actions use
TABLE_KINDS = ("thread", "task", "child")  # what the flat table lists


def id_key(target: str) -> tuple[str, int]:
    """Sort ``task-9`` before ``task-10``."""
    prefix, _, number = target.rpartition("-")
    return (prefix, int(number)) if number.isdigit() else (target, -1)


class Item:
    """One row of the Processes tree; ``shown`` are the children the current filter keeps.

    Its text lives in ``TreeData.values[pos]``, not here: a refresh that changes only
    values then replaces one list instead of touching 100k rows on the GUI thread.
    """

    __slots__ = ("children", "id", "kind", "parent", "pos", "row", "shown")

    def __init__(self, target: str, kind: str, parent: Item | None, pos: int) -> None:
        self.id = target
        self.kind = kind
        self.parent = parent
        self.pos = pos
        self.row = 0
        self.children: list[Item] = []
        self.shown: list[Item] = self.children


@dataclass
class TreeData:
    """The tree to show: a root whose children are top-level rows, and an id index.

    ``shape`` (every row's id and its parent's id, in order) tells whether a refresh
    changed the structure or only the values; ``counts`` are rows per kind.
    """

    root: Item
    by_id: dict[str, Item]
    values: list[tuple[str, ...]] = field(default_factory=list)  # by Item.pos
    search: list[str] = field(default_factory=list)  # lowercased name + function, by pos
    shape: tuple[tuple[str, str], ...] = ()
    counts: dict[str, int] = field(default_factory=dict)
    filtered: bool = False  # some rows' ``shown`` differ from their children
    same_shape_as: tuple[tuple[str, str], ...] | None = None  # set by the worker

    def row_values(self, item: Item) -> tuple[str, ...]:
        return self.values[item.pos]

    def dismantle(self) -> None:
        """Break the parent <-> child cycles so reference counting frees the rows at once
        (without it, only a full GC pass over every object in the process could)."""
        for item in self.by_id.values():
            item.parent = None
            item.children = item.shown = []
        self.root.children = self.root.shown = []
        self.by_id = {}


def empty_tree() -> TreeData:
    """A tree with no rows (nothing received yet)."""
    return TreeData(Item("", "", None, -1), {})


def same_shape(old: TreeData, new: TreeData) -> bool:
    """True when only values changed: the same rows under the same parents, in order.

    The worker compared the shapes (see ``tree_items``); the GUI thread only checks that
    it still shows the very tree the worker compared against.
    """
    return new.same_shape_as is not None and new.same_shape_as is old.shape


def copy_values(old: TreeData, new: TreeData) -> None:
    """Move a same-shaped refresh's values into the tree the view already holds."""
    old.values, old.search, old.counts = new.values, new.search, new.counts


def tree_items(snap: Snapshot, shown_shape: tuple[tuple[str, str], ...] | None = None) -> TreeData:
    """Turn a snapshot into Items (iteratively: await chains can be deep).

    ``shown_shape`` is the shape of the tree on screen: when equal, the result says so.
    """
    return tree_items_of(build_tree(snap), short_ids(snap), shown_shape)


def tree_items_of(
    top: TreeNode,
    short: dict[str, str],
    shown_shape: tuple[tuple[str, str], ...] | None = None,
) -> TreeData:
    """Items of an already built tree (a master's with its workers grafted, see
    observer.gui.workers); ``short`` is what the ID column shows for long ids."""
    root = Item("", "", None, -1)
    by_id: dict[str, Item] = {}
    values: list[tuple[str, ...]] = []
    shape: list[tuple[str, str]] = []
    counts: dict[str, int] = {}
    stack: list[tuple[TreeNode, Item]] = [(top, root)]
    while stack:
        node, parent = stack.pop()
        item = Item(node.id, node.kind, parent, len(values))
        values.append(node_values(node, short))
        item.row = len(parent.children)
        parent.children.append(item)
        by_id[item.id] = item
        shape.append((item.id, parent.id))
        counts[item.kind] = counts.get(item.kind, 0) + 1
        stack.extend((child, item) for child in reversed(node.children))
    data = TreeData(root, by_id, values, search_texts(values), tuple(shape), counts)
    if shown_shape and data.shape == shown_shape:
        data.same_shape_as = shown_shape
    return data


def node_values(node: TreeNode, short: dict[str, str] | None = None) -> tuple[str, ...]:
    """A tree node as the text of one row, in COLUMNS order (both views draw this), then
    its full id (TARGET); the ID column shows ``short[id]`` where there is one."""
    return (
        node.name,
        node.kind,
        short.get(node.id, node.id) if short else node.id,
        node.state,
        node.cpu,
        human_seconds(node.age),
        node.function,
        short_location(node.location),
        node.id,
    )


def short_ids(snap: Snapshot) -> dict[str, str]:
    """What the ID column shows for ids too long to mean anything to a person: a thread
    as ``tid-<native id>`` (what top -H and py-spy print), not its 15-digit ident."""
    return {t.id: f"tid-{t.native_id}" for t in snap.threads if t.native_id is not None}


def search_texts(rows: list[tuple[str, ...]]) -> list[str]:
    """What the filter matches per row: name and function, lowercased."""
    return [f"{row[NAME]}\n{row[FUNCTION]}".lower() for row in rows]


def short_location(location: str) -> str:
    """'/a/b/c/d.py:12' -> 'c/d.py:12'."""
    file, sep, line = location.rpartition(":")
    return f"{short_path(file)}:{line}" if sep and file else location


def apply_filter(data: TreeData, text: str) -> int:
    """Keep rows whose name or function contains ``text`` (and their ancestors); count hits."""
    needle = text.strip().lower()
    items = list(data.by_id.values())
    if not needle:
        if data.filtered:  # rows were built unfiltered: only undo an earlier filter
            for item in [data.root, *items]:
                item.shown = item.children
            _renumber(data.root)
            data.filtered = False
        return len(items)
    data.filtered = True
    keep: set[int] = set()
    hits = 0
    search = data.search
    for item in items:
        if needle in search[item.pos]:
            hits += 1
            node: Item | None = item
            while node is not None and id(node) not in keep:
                keep.add(id(node))
                node = node.parent
    for item in [data.root, *items]:
        item.shown = [c for c in item.children if id(c) in keep]
    _renumber(data.root)
    return hits


def _renumber(root: Item) -> None:
    stack = [root]
    while stack:
        item = stack.pop()
        for row, child in enumerate(item.shown):
            child.row = row
        stack.extend(item.shown)


@dataclass
class TableData:
    """Column-oriented rows for the flat table: display text and sort keys per column."""

    text: list[list[str]]  # text[column][row], columns COLUMNS then TARGET
    keys: list[list[object]]  # keys[column][row], what sorting compares
    search: list[str]  # lowercased name + function, what the filter matches
    counts: dict[str, int]

    @property
    def ids(self) -> list[str]:
        return self.text[TARGET]

    @property
    def kinds(self) -> list[str]:
        return self.text[KIND]

    def __len__(self) -> int:
        return len(self.text[TARGET])


def empty_table() -> TableData:
    """A table with no rows (nothing received yet)."""
    return TableData([[] for _ in range(TARGET + 1)], [[] for _ in range(TARGET + 1)], [], {})


def table_rows(snap: Snapshot) -> TableData:
    """Threads, tasks and child processes as one flat table, in tree order."""
    rows: list[tuple[str, ...]] = []
    cpu_keys: list[object] = []
    age_keys: list[object] = []
    short = short_ids(snap)
    for _depth, node in build_tree(snap).walk():
        if node.kind in TABLE_KINDS:
            rows.append(node_values(node, short))
            cpu_keys.append(node.cpu_value)
            age_keys.append(node.age if node.age is not None else -1.0)
    text: list[list[str]] = [list(column) for column in zip(*rows, strict=True)] or [
        [] for _ in range(TARGET + 1)
    ]
    keys: list[list[object]] = list(text)  # text columns sort by their own strings
    keys[NAME] = [name.lower() for name in text[NAME]]
    keys[ID] = [id_key(target) for target in text[ID]]
    keys[CPU] = cpu_keys
    keys[AGE] = age_keys
    return TableData(
        text,
        keys,
        search_texts(rows),
        {
            "threads": len(snap.threads),
            "tasks": len(snap.tasks),
            "tasks_total": snap.tasks_total,
            "children": len(snap.children),
        },
    )
