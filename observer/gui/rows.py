"""Display rows for the Processes tree and the Tasks & threads table, built off the GUI thread.

Qt-free: the worker thread turns a Snapshot into these plain structures, and the Qt
models only index into them, so ``data()`` never computes or does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import compress, repeat
from operator import attrgetter
from typing import Any

from agent.schema import Snapshot
from observer.format import AGE_BOUND_NOTE, human_seconds, short_path, task_age_text
from observer.tree import TreeNode

# a task's Coroutine is what it runs; Function and Location (a thread's too) where it is
COLUMNS = ("Name", "Kind", "ID", "State", "CPU", "Age", "Coroutine", "Function", "Location")
NAME, KIND, ID, STATE, CPU, AGE, COROUTINE, FUNCTION, LOCATION = range(len(COLUMNS))
TARGET = len(COLUMNS)  # not shown: the full target id, what tooltips show and actions use
REAL_NAME = TARGET + 1  # not shown: a task's own name where Name shows its coroutine
AGE_TIP = TARGET + 2  # not shown: why an age is only a lower bound
FINISHED = TARGET + 3  # not shown: "1" for a task that has ended (drawn greyed)
WIDTH = TARGET + 4  # cells per row
TABLE_KINDS = ("thread", "task", "child")  # what the flat table lists


def id_key(target: str) -> tuple[str, int]:
    """Sort ``task-9`` before ``task-10``."""
    prefix, _, number = target.rpartition("-")
    return (prefix, int(number)) if number.isdigit() else (target, -1)


class Item:
    """One row of the Processes tree; ``shown`` are the children the current filter keeps.

    ``values`` is its text (COLUMNS, TARGET, the hidden cells up to WIDTH; the Age column
    is drawn from ``born``),
    ``search`` what the filter matches, ``row`` its place in its parent's ``shown``;
    ``index`` the model's column-0 index of it made at row ``index_row`` (see
    TreeModel.index).
    """

    __slots__ = (
        "born",
        "children",
        "id",
        "index",
        "index_row",
        "kind",
        "parent",
        "row",
        "search",
        "shown",
        "values",
    )

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
        self.index: Any = None
        self.index_row = -1


_SEARCH = attrgetter("search")
_CHILDREN = attrgetter("children")


@dataclass
class TreeIndex:
    """What the filter walks over a tree: every row, its search text, parents deepest first."""

    items: list[Item]
    searches: list[str]
    parents: list[Item]


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
    hits: tuple[list[Item], list[str]] | None = None  # rows the needle matched, their texts
    open: list[Item] = field(default_factory=list)  # rows the filter keeps with rows under them
    cache: TreeIndex | None = None  # dropped whenever rows come, go or change
    dirty: set[Item] = field(default_factory=set)  # parents whose rows need numbering

    def index(self) -> TreeIndex:
        """Rows, their texts and the parents deepest first, as the filter walks them."""
        if self.cache is None:
            items = list(self.by_id.values())  # C-speed passes only: this runs on a key press
            searches = list(map(_SEARCH, items))
            depth: dict[Item, int] = {self.root: 0}

            def depth_of(item: Item) -> int:
                chain = []
                while item not in depth:
                    chain.append(item)
                    item = item.parent  # type: ignore[assignment]
                level = depth[item]
                for up in reversed(chain):
                    level += 1
                    depth[up] = level
                return level

            parents = list(filter(_CHILDREN, items))
            parents.sort(key=depth_of, reverse=True)
            self.cache = TreeIndex(items, searches, parents)
        return self.cache

    def row_values(self, item: Item) -> tuple[str, ...]:
        return item.values

    def dismantle(self) -> None:
        """Break the parent <-> child cycles and free the rows one at a time (on the
        disposal thread): freeing 100k rows in one call would hold the GIL throughout."""
        self.hits = self.cache = None
        self.open = []
        self.dirty = set()
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
    its full id (TARGET) and the hidden cells up to WIDTH; the ID column shows
    ``short[id]`` where there is one. The models draw the Age cell from the row's birth
    time (``delta.walk_records``), as a lower bound where AGE_TIP says so."""
    if node.kind == "task":
        age = task_age_text(node.age, node.age_exact, "done" if node.finished else "pending")
    else:
        age = human_seconds(node.age)
    return (
        node.name,
        node.kind,
        short.get(node.id, node.id) if short else node.id,
        node.state,
        node.cpu,
        age,
        node.coroutine,
        node.function,
        short_location(node.location),
        node.id,
        node.real_name if node.real_name != node.name else "",
        AGE_BOUND_NOTE if age and node.kind == "task" and not node.age_exact else "",
        "1" if node.finished else "",
    )


def short_ids(snap: Snapshot) -> dict[str, str]:
    """What the ID column shows for ids too long to mean anything to a person: a thread
    as ``tid-<native id>`` (what top -H and py-spy print), not its 15-digit ident."""
    return {t.id: f"tid-{t.native_id}" for t in snap.threads if t.native_id is not None}


def search_text(row: tuple[str, ...]) -> str:
    """What the filter matches in a row: name (a task's own too), coroutine and function,
    lowercased."""
    return f"{row[NAME]}\n{row[COROUTINE]}\n{row[FUNCTION]}\n{row[REAL_NAME]}".lower()


def search_texts(rows: list[tuple[str, ...]]) -> list[str]:
    """``search_text`` of each row."""
    return list(map(search_text, rows))


def short_location(location: str) -> str:
    """'/a/b/c/d.py:12' -> 'c/d.py:12'."""
    file, sep, line = location.rpartition(":")
    return f"{short_path(file)}:{line}" if sep and file else location


def apply_filter(data: TreeData, text: str) -> int:
    """Keep rows whose search text (name, a task's own name, coroutine, function) contains
    ``text``, and their ancestors; count hits.

    Matching and keeping run in C (map, compress, filter, isdisjoint over lists held per
    tree); Python work is per row with children, not per row. A longer needle searches
    only the last hits; a parent whose kept rows did not change keeps its list (and the
    row numbers in it).
    """
    needle = text.strip().lower()
    index = data.index()
    if not needle:
        if data.filtered:  # rows were built unfiltered: only undo an earlier filter
            for item in (data.root, *index.parents):
                if item.shown is not item.children:
                    item.shown = item.children
                    data.dirty.add(item)
            data.filtered = False
        data.needle, data.hits, data.open = "", None, []
        return len(data.by_id)
    if data.hits is not None and data.needle and data.needle in needle:
        items, searches = data.hits
    else:
        items, searches = index.items, index.searches
    found = list(map(str.__contains__, searches, repeat(needle)))
    hits = list(compress(items, found)), list(compress(searches, found))
    keep = set(hits[0])
    open_rows: list[Item] = []
    for item in index.parents:  # deepest first: a parent is kept if a row under it is
        if item in keep or not keep.isdisjoint(item.children):
            keep.add(item)
            shown = list(filter(keep.__contains__, item.children))
            if shown:
                open_rows.append(item)
        else:
            shown = []
        if shown != item.shown:
            item.shown = shown
            data.dirty.add(item)  # numbered when first asked: typing need not pay for it
    root = data.root
    shown = list(filter(keep.__contains__, root.children))
    if shown != root.shown:
        root.shown = shown
        _renumber(root)
    data.filtered, data.needle, data.hits, data.open = True, needle, hits, open_rows
    return len(hits[0])


def _renumber(parent: Item) -> None:
    """Number a parent's shown rows."""
    for row, child in enumerate(parent.shown):
        child.row = row


@dataclass
class TableData:
    """Column-oriented rows for the flat table: display text and sort keys per column,
    by slot; ``slots`` maps a row's id to its slot, ``free`` are slots of rows gone."""

    text: list[list[str]]  # text[column][slot], columns COLUMNS, TARGET, hidden up to WIDTH
    keys: list[list[object]]  # keys[column][slot], what sorting compares
    search: list[str]  # search_text of each slot, what the filter matches
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
    return TableData([[] for _ in range(WIDTH)], [[] for _ in range(WIDTH)], [], {})
