"""Display rows for the Processes tree and the Tasks & threads table, built off the GUI thread.

Qt-free: the worker thread turns a Snapshot into these plain structures, and the Qt
models only index into them, so ``data()`` never computes or does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.schema import Snapshot
from observer.format import human_seconds, short_path
from observer.tree import TreeNode

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

    ``values`` is its text (COLUMNS then TARGET; the Age column is drawn from ``born``),
    ``search`` what the filter matches, ``row`` its place in its parent's ``shown``.
    """

    __slots__ = ("born", "children", "id", "kind", "parent", "row", "search", "shown", "values")

    def __init__(self, target: str, kind: str, parent: Item | None, row: int = 0) -> None:
        self.id = target
        self.kind = kind
        self.parent = parent
        self.row = row
        self.children: list[Item] = []
        self.shown: list[Item] = self.children
        self.values: tuple[str, ...] = ()
        self.search = ""
        self.born: float | None = None


@dataclass
class TreeData:
    """The tree to show: a root whose children are top-level rows, and an id index;
    ``counts`` are rows per kind; ``hits`` the rows the filter ``needle`` matched last
    (typing one more letter only searches those)."""

    root: Item
    by_id: dict[str, Item]
    counts: dict[str, int] = field(default_factory=dict)
    filtered: bool = False  # some rows' ``shown`` differ from their children
    needle: str = ""
    hits: list[Item] | None = None

    def row_values(self, item: Item) -> tuple[str, ...]:
        return item.values

    def dismantle(self) -> None:
        """Break the parent <-> child cycles and free the rows one at a time (on the
        disposal thread): freeing 100k rows in one call would hold the GIL throughout."""
        self.hits = None
        by_id = self.by_id
        while by_id:
            _target, item = by_id.popitem()
            item.parent = None
            item.children = item.shown = []
            del item
        self.root.children = self.root.shown = []


def empty_tree() -> TreeData:
    """A tree with no rows (nothing received yet)."""
    return TreeData(Item("", "", None, -1), {})


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
    """Keep rows whose name or function contains ``text`` (and their ancestors); count hits.

    Work is in the rows matched and kept: a longer needle searches only the last hits,
    and only rows kept now or before get new ``shown`` lists.
    """
    needle = text.strip().lower()
    if not needle:
        if data.filtered:  # rows were built unfiltered: only undo an earlier filter
            data.root.shown = data.root.children
            for item in data.by_id.values():
                item.shown = item.children
            _renumber(data.root)
            data.filtered = False
        data.needle, data.hits = "", None
        return len(data.by_id)
    narrower = data.hits is not None and data.needle and data.needle in needle
    candidates = data.hits if narrower else data.by_id.values()
    hits = [item for item in candidates if needle in item.search]  # type: ignore[union-attr]
    keep: set[Item] = set()
    for item in hits:
        node: Item | None = item
        while node is not None and node not in keep:
            keep.add(node)
            node = node.parent
    if data.filtered and narrower:
        before = kept(data.root)
        for item in before:
            if item not in keep:
                item.shown = []
    else:
        for item in data.by_id.values():
            item.shown = []
    for item in keep:
        children = item.children
        item.shown = [c for c in children if c in keep] if children else children
    root = data.root
    root.shown = [c for c in root.children if c in keep]
    _renumber(root)
    data.filtered, data.needle, data.hits = True, needle, hits
    return len(hits)


def kept(root: Item) -> list[Item]:
    """Every row the filter shows now."""
    out: list[Item] = []
    stack = list(root.shown)
    while stack:
        item = stack.pop()
        out.append(item)
        stack.extend(item.shown)
    return out


def _renumber(root: Item) -> None:
    stack = [root]
    while stack:
        item = stack.pop()
        for row, child in enumerate(item.shown):
            child.row = row
        stack.extend(item.shown)


@dataclass
class TableData:
    """Column-oriented rows for the flat table: display text and sort keys per column,
    by slot; ``slots`` maps a row's id to its slot, ``free`` are slots of rows gone."""

    text: list[list[str]]  # text[column][slot], columns COLUMNS then TARGET
    keys: list[list[object]]  # keys[column][slot], what sorting compares
    search: list[str]  # lowercased name + function, what the filter matches
    counts: dict[str, int]
    born: list[float | None] = field(default_factory=list)  # what the Age column counts from
    slots: dict[str, int] = field(default_factory=dict)
    free: list[int] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return self.text[TARGET]

    @property
    def kinds(self) -> list[str]:
        return self.text[KIND]

    def __len__(self) -> int:
        return len(self.slots)

    def dismantle(self) -> None:
        """Free the columns a slice at a time (on the disposal thread), not 100k at once."""
        for column in (*self.text, *self.keys, self.search, self.born):
            while column:
                del column[-4096:]
        self.slots.clear()


def empty_table() -> TableData:
    """A table with no rows (nothing received yet)."""
    return TableData([[] for _ in range(TARGET + 1)], [[] for _ in range(TARGET + 1)], [], {})
