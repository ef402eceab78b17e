"""Display rows for the Processes tree and the Tasks & threads table, built off the GUI thread.

Qt-free: the worker thread turns a Snapshot into these plain structures, and the Qt
models only index into them, so ``data()`` never computes or does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.schema import Snapshot
from observer.format import human_seconds, short_path
from observer.tree import TreeNode, build_tree, child_label

COLUMNS = ("Name", "Kind", "ID", "State", "CPU", "Age", "Function", "Location")
NAME, KIND, ID, STATE, CPU, AGE, FUNCTION, LOCATION = range(len(COLUMNS))
TEXT_COLUMNS = (NAME, KIND, STATE, FUNCTION, LOCATION)


def id_key(target: str) -> tuple[str, int]:
    """Sort ``task-9`` before ``task-10``."""
    prefix, _, number = target.rpartition("-")
    return (prefix, int(number)) if number.isdigit() else (target, -1)


def _location(file: str, line: int) -> str:
    return f"{short_path(file)}:{line}" if file else ""


class Item:
    """One row of the Processes tree; ``shown`` are the children the current filter keeps."""

    __slots__ = ("children", "id", "kind", "parent", "row", "search", "shown", "values")

    def __init__(self, values: tuple[str, ...], parent: Item | None) -> None:
        self.values = values
        self.id = values[ID]
        self.kind = values[KIND]
        self.parent = parent
        self.row = 0
        self.children: list[Item] = []
        self.shown: list[Item] = self.children
        self.search = f"{values[NAME]}\n{values[FUNCTION]}".lower()


@dataclass
class TreeData:
    """The tree to show: a root whose children are top-level rows, and an id index."""

    root: Item
    by_id: dict[str, Item]


def empty_tree() -> TreeData:
    """A tree with no rows (nothing received yet)."""
    return TreeData(Item(("",) * len(COLUMNS), None), {})


def tree_items(snap: Snapshot) -> TreeData:
    """Turn a snapshot into Items (iteratively: await chains can be deep)."""
    top = build_tree(snap)
    root = Item(("",) * len(COLUMNS), None)
    by_id: dict[str, Item] = {}
    stack: list[tuple[TreeNode, Item]] = [(top, root)]
    while stack:
        node, parent = stack.pop()
        item = Item(
            (
                node.name,
                node.kind,
                node.id,
                node.state,
                node.cpu,
                human_seconds(node.age),
                node.function,
                short_location(node.location),
            ),
            parent,
        )
        item.row = len(parent.children)
        parent.children.append(item)
        by_id[item.id] = item
        stack.extend((child, item) for child in reversed(node.children))
    return TreeData(root, by_id)


def short_location(location: str) -> str:
    """'/a/b/c/d.py:12' -> 'c/d.py:12'."""
    file, sep, line = location.rpartition(":")
    return f"{short_path(file)}:{line}" if sep and file else location


def apply_filter(data: TreeData, text: str) -> int:
    """Keep rows whose name or function contains ``text`` (and their ancestors); count hits."""
    needle = text.strip().lower()
    items = list(data.by_id.values())
    if not needle:
        for item in items:
            item.shown = item.children
        _renumber(data.root)
        return len(items)
    keep: set[int] = set()
    hits = 0
    for item in items:
        if needle in item.search:
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

    text: list[list[str]]  # text[column][row]
    keys: list[list[object]]  # keys[column][row], what sorting compares
    search: list[str]  # lowercased name + function, what the filter matches
    ids: list[str]
    kinds: list[str]
    counts: dict[str, int]

    def __len__(self) -> int:
        return len(self.ids)


def empty_table() -> TableData:
    """A table with no rows (nothing received yet)."""
    return TableData([[] for _ in COLUMNS], [[] for _ in COLUMNS], [], [], [], {})


def table_rows(snap: Snapshot) -> TableData:
    """Threads, tasks and child processes as one flat table."""
    text: list[list[str]] = [[] for _ in COLUMNS]
    cpu_keys: list[object] = []
    age_keys: list[object] = []
    id_keys: list[object] = []

    def add(values: tuple[str, ...], cpu: float, age: float) -> None:
        for column, value in enumerate(values):
            text[column].append(value)
        cpu_keys.append(cpu)
        age_keys.append(age)
        id_keys.append(id_key(values[ID]))

    for t in snap.threads:
        add(
            (
                t.name + (" [agent]" if t.is_agent else ""),
                "thread",
                t.id,
                t.state,
                f"{t.cpu_time:.2f}s" if t.cpu_time is not None else "",
                "",
                t.function,
                _location(t.file, t.line),
            ),
            t.cpu_time if t.cpu_time is not None else -1.0,
            -1.0,
        )
    for k in snap.tasks:
        add(
            (
                k.name,
                "task",
                k.id,
                k.state,
                "",
                human_seconds(k.age),
                k.function or k.coroutine,
                _location(k.file, k.line),
            ),
            -1.0,
            k.age if k.age is not None else -1.0,
        )
    for c in snap.children:
        add(
            (
                child_label(c.name, c.cmdline),
                "child",
                c.id,
                c.status,
                f"{c.cpu_percent:.1f}%" if c.cpu_percent is not None else "",
                "",
                " ".join(c.cmdline)[:200],
                "",
            ),
            c.cpu_percent if c.cpu_percent is not None else -1.0,
            -1.0,
        )
    keys: list[list[object]] = list(text)  # text columns sort by their own strings
    keys[NAME] = [s.lower() for s in text[NAME]]
    keys[CPU] = cpu_keys
    keys[AGE] = age_keys
    keys[ID] = id_keys
    search = [f"{n}\n{f}".lower() for n, f in zip(text[NAME], text[FUNCTION], strict=True)]
    return TableData(
        text,
        keys,
        search,
        text[ID],
        text[KIND],
        {
            "threads": len(snap.threads),
            "tasks": len(snap.tasks),
            "tasks_total": snap.tasks_total,
            "children": len(snap.children),
        },
    )
