"""Qt models over rows built off the GUI thread: ``data()`` only indexes into lists.

The tree model adapts ``rows.TreeData`` (Items with parent/row links); the table model
adapts column-oriented ``rows.TableData`` and keeps a permutation for sort and filter, so
100k rows sort by comparing precomputed keys and never build a QStandardItem.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import compress, repeat
from typing import Any

from PyQt6.QtCore import QAbstractItemModel, QAbstractTableModel, QModelIndex, QObject, Qt
from PyQt6.QtGui import QColor, QFont

from observer.format import task_age_text
from observer.gui.delta import Delta, Record, new_item, sort_keys
from observer.gui.disposal import dispose
from observer.gui.rows import (
    AGE,
    AGE_TIP,
    COLUMNS,
    COROUTINE,
    FINISHED,
    FUNCTION,
    ID,
    KIND,
    LOCATION,
    NAME,
    REAL_NAME,
    STATE,
    TARGET,
    Item,
    TableData,
    TreeData,
    apply_filter,
    search_text,
)

DISPLAY = Qt.ItemDataRole.DisplayRole
TOOLTIP = Qt.ItemDataRole.ToolTipRole
FOREGROUND = Qt.ItemDataRole.ForegroundRole
FONT = Qt.ItemDataRole.FontRole
ID_ROLE = Qt.ItemDataRole.UserRole + 1  # the row's full target id (task-N, thread-N, pid-N)
KIND_ROLE = Qt.ItemDataRole.UserRole + 2
NAME_ROLE = Qt.ItemDataRole.UserRole + 3

# the roles cell_data answers: a view asks each cell for a dozen roles at every paint
ROLES = frozenset((DISPLAY, TOOLTIP, FOREGROUND, FONT, ID_ROLE, KIND_ROLE, NAME_ROLE))
_STATE_COLOURS = {
    "cancelled": QColor("#9a6700"),
    "failed": QColor("#cf222e"),
    "done": QColor("#6e7781"),
    "zombie": QColor("#cf222e"),
}
_FINISHED_COLOUR = QColor("#8c959f")  # a task that has ended: greyed, not a live row
_NO_PARENT = QModelIndex()  # the invalid index Qt passes for "top level"
_COLUMN_COUNT = len(COLUMNS)
_BOLD = QFont()
_BOLD.setBold(True)


def cell_data(cell: Callable[[int], str], column: int, role: int) -> Any:
    """What both models answer for one cell; ``cell(c)`` is the row's text in column c."""
    if role == DISPLAY:
        return cell(column)
    if role == ID_ROLE:
        return cell(TARGET)
    if role == KIND_ROLE:
        return cell(KIND)
    if role == NAME_ROLE:
        return cell(NAME)
    if role == TOOLTIP and column == NAME and cell(REAL_NAME):
        return f"{cell(REAL_NAME)} (asyncio's default name: the coroutine it runs is shown)"
    if role == TOOLTIP and column in (NAME, COROUTINE, FUNCTION, LOCATION):
        return cell(column) or None
    if role == TOOLTIP and column == AGE and cell(AGE_TIP):
        return cell(AGE_TIP)
    if role == TOOLTIP and column == STATE and cell(FINISHED):
        return f"finished ({cell(STATE)}): kept while the host holds the task"
    if role == TOOLTIP and column == ID:
        return cell(TARGET)
    if role == FOREGROUND and column == STATE:  # "failed: ValueError" is a failed state
        return _STATE_COLOURS.get(cell(STATE).split(":", 1)[0]) or (
            _FINISHED_COLOUR if cell(FINISHED) else None
        )
    if role == FOREGROUND and cell(FINISHED):
        return _FINISHED_COLOUR
    if role == FONT and column == NAME and cell(KIND) in ("process", "loop"):
        return _BOLD
    return None


def _header(section: int, orientation: Qt.Orientation, role: int) -> Any:
    if orientation == Qt.Orientation.Horizontal and role == DISPLAY:
        return COLUMNS[section]
    return None


def age_text(now: float, born: float | None, bound: str) -> str:
    """The Age column, drawn when shown: from the row's birth to the agent's clock at the
    last refresh, ``>= `` before it where ``bound`` (the row's AGE_TIP) says it is only a
    lower bound; nothing for a row with no birth (none known, or a finished task)."""
    if born is None:
        return ""
    return task_age_text(max(0.0, now - born), exact=not bound)


def _runs(rows: list[int]) -> list[tuple[int, int]]:
    """Sorted row numbers as (first, last) runs of consecutive rows."""
    out: list[tuple[int, int]] = []
    for row in rows:
        if out and out[-1][1] == row - 1:
            out[-1] = (out[-1][0], row)
        else:
            out.append((row, row))
    return out


class TreeModel(QAbstractItemModel):
    """The Processes tree: process -> threads -> loops -> tasks, children processes.

    A refresh (``apply``) inserts, removes and changes only the rows the delta names; a
    full one (first, or a large change) resets the model.
    """

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.data_: TreeData | None = None
        self.filter_text = ""
        self.hits = 0
        self.now = 0.0  # the clock ages are drawn against
        self.seq = 0  # the last delta applied

    def set_data(self, data: TreeData) -> None:
        """Show a whole new tree (a model reset)."""
        old = self.data_
        self.beginResetModel()
        self.data_ = data
        self.hits = apply_filter(data, self.filter_text)
        self.endResetModel()
        dispose(old)

    def apply(self, delta: Delta) -> bool:
        """Take a refresh in; True when the model was reset (the view must restore its
        expanded rows). A delta that does not follow the last one raises ValueError."""
        self.now = delta.now
        if delta.full is not None:
            assert isinstance(delta.full, TreeData)
            self.seq = delta.seq
            self.set_data(delta.full)
            return True
        data = self.data_
        if data is None or delta.seq != self.seq + 1:
            raise ValueError(f"delta {delta.seq} does not follow {self.seq}")
        self.seq = delta.seq
        data.counts = delta.counts
        _TreeUpdate(self, data, delta).run()
        return False

    def _row_index(self, item: Item) -> QModelIndex:
        return _NO_PARENT if item.parent is None else self.createIndex(item.row, 0, item)

    def set_filter(self, text: str) -> None:
        self.beginResetModel()
        self.filter_text = text
        if self.data_ is not None:
            self.hits = apply_filter(self.data_, text)
        self.endResetModel()

    def index_of(self, target: str, column: int = 0) -> QModelIndex:
        """The index of the row with this id, if the filter shows it."""
        item = self.data_.by_id.get(target) if self.data_ else None
        if item is None or item.parent is None or not _placed(item, self.data_.dirty):  # type: ignore[union-attr]
            return QModelIndex()
        return self.createIndex(item.row, column, item)

    # ------------------------------------------------------------ QAbstractItemModel

    # index and hasChildren are asked for every row the view lays out, and a QTreeView
    # lays out every expanded row again after any row comes or goes (9k rows: ~30 ms of a
    # churn refresh): each asks Qt as little as it can (an invalid index has no pointer)

    def index(self, row: int, column: int, parent: QModelIndex = _NO_PARENT) -> QModelIndex:
        """Column 0 is kept on the row's item while it stays at that row: a layout asks it of
        every laid-out row, and handing back the one made before skips ``createIndex``
        (a fifth of a 9k-row layout). A QModelIndex is a value; Qt copies what it gets."""
        data = self.data_
        if data is None:
            return QModelIndex()
        shown = (parent.internalPointer() or data.root).shown
        if 0 <= row < len(shown):
            item = shown[row]
            if column == 0:
                if item.index_row != row:
                    item.index = self.createIndex(row, 0, item)
                    item.index_row = row
                return item.index
            if 0 < column < _COLUMN_COUNT:
                return self.createIndex(row, column, item)
        return QModelIndex()

    def parent(self, child: QModelIndex = _NO_PARENT) -> QModelIndex:  # type: ignore[override]
        if not child.isValid():
            return QModelIndex()
        up = child.internalPointer().parent
        if up is None or up.parent is None:
            return QModelIndex()
        if not _placed(up, self.data_.dirty):  # type: ignore[union-attr]
            return QModelIndex()
        return self.createIndex(up.row, 0, up)

    def rowCount(self, parent: QModelIndex = _NO_PARENT) -> int:
        if self.data_ is None:
            return 0
        if not parent.isValid():
            return len(self.data_.root.shown)
        if parent.column() != 0:
            return 0
        return len(parent.internalPointer().shown)

    def hasChildren(self, parent: QModelIndex = _NO_PARENT) -> bool:
        owner = parent.internalPointer()
        if owner is None:
            return self.data_ is not None and bool(self.data_.root.shown)
        return bool(owner.shown) and parent.column() == 0

    def columnCount(self, parent: QModelIndex = _NO_PARENT) -> int:
        return len(COLUMNS)

    def data(self, index: QModelIndex, role: int = DISPLAY) -> Any:
        if role not in ROLES or not index.isValid():
            return None
        item = index.internalPointer()
        values = item.values
        if role == DISPLAY and index.column() == AGE:
            return age_text(self.now, item.born, values[AGE_TIP])
        return cell_data(values.__getitem__, index.column(), role)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = DISPLAY) -> Any:
        return _header(section, orientation, role)


def _placed(item: Item, dirty: set[Item]) -> bool:
    """True when ``item.row`` is its place among its parent's shown rows, after putting it
    right if it was stale: a parent in ``dirty`` had rows removed or its list replaced and
    gets its rows numbered on first demand (most refreshes nobody asks)."""
    parent = item.parent
    siblings = parent.shown  # type: ignore[union-attr]
    row = item.row
    if 0 <= row < len(siblings) and siblings[row] is item:
        return True
    if parent in dirty:
        dirty.discard(parent)  # type: ignore[arg-type]
        _number(siblings)
        row = item.row
        return 0 <= row < len(siblings) and siblings[row] is item
    try:  # not expected: a safety net that costs one scan
        item.row = siblings.index(item)
    except ValueError:
        return False
    return True


def _rows_in(parent: Item, items: list[Item]) -> list[int]:
    """The rows of ``items`` among ``parent``'s shown rows, sorted, numbering them: a stale
    row is looked for with one scan in C, not by renumbering 100k siblings in Python."""
    siblings = parent.shown
    rows: list[int] = []
    missing: set[Item] = set()
    for item in items:
        row = item.row
        if 0 <= row < len(siblings) and siblings[row] is item:
            rows.append(row)
        else:
            missing.add(item)
    if missing:
        for row in compress(range(len(siblings)), map(missing.__contains__, siblings)):
            siblings[row].row = row
            rows.append(row)
    rows.sort()
    return rows


def _depth(item: Item) -> int:
    depth = 0
    while item.parent is not None:
        item = item.parent
        depth += 1
    return depth


class _TreeUpdate:
    """One delta applied to a TreeModel: the rows' structure first (no signals), then,
    parent by parent from the top, what each parent shows moves from its old list to its
    new one with rowsRemoved/rowsInserted, then dataChanged for rows whose text changed."""

    def __init__(self, model: TreeModel, data: TreeData, delta: Delta) -> None:
        self.model = model
        self.data = data
        self.delta = delta
        self.needle = model.filter_text.strip().lower()
        self.children: dict[Item, list[Item]] = {}  # parents whose children change: the new list
        self.affected: set[Item] = set()  # parents whose shown rows may change
        self.reparent: dict[Item, Item] = {}  # rows moving: their new parent

    def matches(self, item: Item) -> bool:
        return self.needle in item.search

    def new_children(self, parent: Item) -> list[Item]:
        children = self.children.get(parent)
        if children is None:
            children = self.children[parent] = list(parent.children)
            self.affected.add(parent)
        return children

    def run(self) -> None:
        if not self.needle:
            self.run_unfiltered()
            return
        data, delta, model, by_id = self.data, self.delta, self.model, self.data.by_id
        root = data.root
        gone: list[Item] = []
        for target in delta.gone:
            item = by_id.pop(target, None)
            if item is not None:
                gone.append(item)
                if self.needle and self.matches(item):
                    model.hits -= 1
        leaving = set(gone)
        moving = [(by_id[target], parent) for target, parent in delta.moved if target in by_id]
        leaving.update(item for item, _parent in moving)
        for item in leaving:
            if item.parent is not None:
                self.new_children(item.parent)
        for parent in list(self.children):
            self.children[parent] = [c for c in self.children[parent] if c not in leaving]
        for target, record in delta.new:
            parent = by_id.get(record[0], root)
            item = new_item(target, record, parent)
            by_id[target] = item
            self.new_children(parent).append(item)
            if self.needle and self.matches(item):
                model.hits += 1
        for item, parent_id in moving:
            parent = by_id.get(parent_id, root)
            self.reparent[item] = parent  # set once it has left its old parent
            self.new_children(parent).append(item)
        changed: list[Item] = []
        for target, record in delta.changed:
            item = by_id.get(target)
            if item is None:
                continue
            was = self.needle and self.matches(item)
            item.values, item.born = record[2], record[3]
            item.search = search_text(record[2])
            changed.append(item)
            if self.needle and was != self.matches(item):
                model.hits += 1 if not was else -1
                if item.parent is not None:
                    self.affected.add(item.parent)
        data.hits = data.cache = None  # the next key searches every row again
        self.show()
        self.signal_changed(changed)
        if not self.needle:
            model.hits = len(by_id)
        for item in gone:  # gone for good: break its cycles so refcounting frees it
            item.parent = None
            item.children = item.shown = []

    def run_unfiltered(self) -> None:
        """Without a filter every row is shown: rows gone or moved leave their parent at
        their row, new and moved rows are appended under theirs, in runs; the work is in
        the rows that changed, not in their siblings (row numbers after a removed run are
        put right when first asked, see ``_placed``)."""
        data, delta, model, by_id = self.data, self.delta, self.model, self.data.by_id
        root, dirty = data.root, data.dirty
        gone = [item for item in map(by_id.pop, delta.gone, repeat(None)) if item is not None]
        moving = [(by_id[target], parent) for target, parent in delta.moved if target in by_id]
        leaving: dict[Item, list[Item]] = {}  # parent -> its children that leave
        for item in (*gone, *(item for item, _ in moving)):
            if item.parent is not None:
                leaving.setdefault(item.parent, []).append(item)
        for parent in sorted(leaving, key=_depth):  # top first: a parent gone takes its rows
            shown = by_id.get(parent.id) is parent and _visible(parent, dirty)
            index = model._row_index(parent) if shown or parent is root else _NO_PARENT
            children = parent.children
            runs = _runs(_rows_in(parent, leaving[parent]))
            if (shown or parent is root) and _respan(model, index, children, runs, leaving[parent]):
                dirty.add(parent)
                continue
            for first, last in reversed(runs):
                if shown or parent is root:
                    model.beginRemoveRows(index, first, last)
                    del children[first : last + 1]
                    model.endRemoveRows()
                else:
                    del children[first : last + 1]
            dirty.add(parent)
        coming: dict[Item, list[Item]] = {}  # existing parent -> rows to append, in order
        fresh: set[Item] = set()
        for target, record in delta.new:
            parent = by_id.get(record[0], root)
            item = new_item(target, record, parent)
            by_id[target] = item
            fresh.add(item)
            if parent in fresh:  # new too: nobody has seen it yet, it takes its rows along
                item.row = len(parent.children)
                parent.children.append(item)
            else:
                coming.setdefault(parent, []).append(item)
        for item, parent_id in moving:
            parent = by_id.get(parent_id, root)
            item.parent = parent
            coming.setdefault(parent, []).append(item)
        for parent in sorted(coming, key=_depth):
            rows = coming[parent]
            children = parent.children
            if parent is root or _visible(parent, dirty):
                first = len(children)
                model.beginInsertRows(model._row_index(parent), first, first + len(rows) - 1)
                for row, item in enumerate(rows, first):
                    item.row = row
                children.extend(rows)
                model.endInsertRows()
            else:
                for row, item in enumerate(rows, len(children)):
                    item.row = row
                children.extend(rows)
        changed: list[Item] = []
        for target, record in delta.changed:
            item = by_id.get(target)
            if item is not None:
                item.values, item.born = record[2], record[3]
                item.search = search_text(record[2])
                changed.append(item)
        data.hits = data.cache = None
        self.signal_changed(changed)
        model.hits = len(by_id)
        for item in gone:  # gone for good: break its cycles so refcounting frees it
            item.parent = None
            item.children = item.shown = []

    def show(self) -> None:
        """Move each affected parent's shown rows to the new ones: first every removal
        (moved rows leave their old parent), then every insertion, signalling each run."""
        if self.needle:  # a match coming or going changes what its ancestors show
            for item in list(self.affected):
                up = item.parent
                while up is not None and up not in self.affected:
                    self.affected.add(up)
                    up = up.parent
        by_id, root = self.data.by_id, self.data.root
        reparent = self.reparent
        alive = [p for p in self.affected if p is root or by_id.get(p.id) is p]

        def depth(item: Item) -> int:  # in the new tree
            count = 0
            up = reparent.get(item, item.parent)
            while up is not None:
                count += 1
                up = reparent.get(up, up.parent)
            return count

        order = sorted(alive, key=depth)
        target: dict[Item, list[Item]] = {}
        for parent in reversed(order):  # deepest first: a row is kept if it shows children
            children = self.children.get(parent, parent.children)
            if self.needle:
                target[parent] = [c for c in children if self.matches(c) or target.get(c, c.shown)]
            else:
                target[parent] = children
        for parent, children in self.children.items():
            parent.children = children
        for parent in order:
            self._remove(parent, target[parent])
        for item, parent in reparent.items():
            item.parent = parent
        for parent in order:  # top first: a row is in place before rows go under it
            self._insert(parent, target[parent])

    def _remove(self, parent: Item, new: list[Item]) -> None:
        """Take out of ``parent``'s shown rows those not in ``new``."""
        if parent is not self.data.root and not _visible(parent, self.data.dirty):
            parent.shown = new  # not on screen: no one to tell
            _number(new)
            return
        model, index = self.model, self.model._row_index(parent)
        keep = set(new)
        current = list(parent.shown)
        removed = [row for row, item in enumerate(current) if item not in keep]
        parent.shown = current
        for first, last in reversed(_runs(removed)):
            model.beginRemoveRows(index, first, last)
            del current[first : last + 1]
            model.endRemoveRows()  # rows after the run are numbered when asked (_placed)
        _number(current)

    def _insert(self, parent: Item, new: list[Item]) -> None:
        """Put into ``parent``'s shown rows those of ``new`` it lacks, in ``new``'s order."""
        if parent is not self.data.root and not _visible(parent, self.data.dirty):
            parent.shown = new
            _number(new)
            return
        current = parent.shown
        if current is not new:
            model, index = self.model, self.model._row_index(parent)
            had = set(current)
            added = [row for row, item in enumerate(new) if item not in had]
            for first, last in _runs(added):
                model.beginInsertRows(index, first, last)
                current[first:first] = new[first : last + 1]
                model.endInsertRows()
        if not self.needle:
            parent.children = current  # unfiltered, shown and children are one list
        _number(current)

    def signal_changed(self, changed: list[Item]) -> None:
        """dataChanged for each run of shown rows whose text changed, per parent."""
        by_parent: dict[Item, list[Item]] = {}
        dirty = self.data.dirty
        for item in changed:
            parent = item.parent
            if parent is not None and (parent.parent is None or _visible(parent, dirty)):
                by_parent.setdefault(parent, []).append(item)
        model = self.model
        last = len(COLUMNS) - 1
        for parent, items in by_parent.items():
            if self.needle:  # only the rows the filter shows
                shown = set(parent.shown)
                items = [item for item in items if item in shown]
            index = model._row_index(parent)
            for first, end in _runs(_rows_in(parent, items)):
                model.dataChanged.emit(model.index(first, 0, index), model.index(end, last, index))


SCATTERED = 4  # runs of rows leaving one parent beyond which its span is redone at once


def _respan(
    model: TreeModel,
    index: QModelIndex,
    children: list[Item],
    runs: list[tuple[int, int]],
    leaving: list[Item],
) -> bool:
    """Rows leaving a parent in many scattered runs (tasks end in any order): the span
    from the first to the last removed in one go and the rows kept in it inserted back,
    two signals instead of one per run: Qt walks every persistent index (expanded rows,
    the current one) at each, ~45 model.parent() calls a run, 180 runs a 36 ms stall with
    8 workers churning. Only where the rows kept are leaves (no expanded state to lose;
    the tab puts the current row back); False: nothing done."""
    if len(runs) <= SCATTERED:
        return False
    first, last = runs[0][0], runs[-1][1]
    out = set(leaving)
    kept = [item for item in children[first : last + 1] if item not in out]
    if any(item.children for item in kept):
        return False
    model.beginRemoveRows(index, first, last)
    del children[first : last + 1]
    model.endRemoveRows()
    if kept:
        model.beginInsertRows(index, first, first + len(kept) - 1)
        for row, item in enumerate(kept, first):
            item.row = row
        children[first:first] = kept
        model.endInsertRows()
    return True


def _visible(item: Item, dirty: set[Item]) -> bool:
    """True when every row from ``item`` up to the top is shown."""
    while item.parent is not None:
        if not _placed(item, dirty):
            return False
        item = item.parent
    return True


def _number(rows: list[Item]) -> None:
    for row, item in enumerate(rows):
        item.row = row


class TableModel(QAbstractTableModel):
    """The flat Tasks & threads table: sortable, filterable, virtual.

    ``order`` lists the slots shown, in display order. A refresh (``apply``) removes,
    inserts (at their sorted place) and changes only the rows the delta names; a full one
    resets the model.
    """

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.rows: TableData | None = None
        self.order: list[int] = []
        self.sort_column = -1
        self.sort_order = Qt.SortOrder.AscendingOrder
        self.filter_text = ""
        self.now = 0.0  # the clock ages are drawn against
        self.seq = 0  # the last delta applied

    def set_rows(self, rows: TableData) -> None:
        old = self.rows
        self.beginResetModel()
        self.rows = rows
        self.order = self._ordered()
        self.endResetModel()
        dispose(old)

    def apply(self, delta: Delta) -> None:
        """Take a refresh in. A delta that does not follow the last one raises ValueError."""
        self.now = delta.now
        if delta.full is not None:
            assert isinstance(delta.full, TableData)
            self.seq = delta.seq
            self.set_rows(delta.full)
            return
        rows = self.rows
        if rows is None or delta.seq != self.seq + 1:
            raise ValueError(f"delta {delta.seq} does not follow {self.seq}")
        self.seq = delta.seq
        rows.counts = delta.counts
        _TableUpdate(self, rows, delta).run()

    def set_filter(self, text: str) -> None:
        needle = text.strip().lower()
        narrower = bool(self.filter_text) and self.filter_text in needle and self.rows is not None
        self.beginResetModel()
        if narrower:  # one more letter: only the rows shown can still match, in their order
            search = self.rows.search  # type: ignore[union-attr]
            texts = map(search.__getitem__, self.order)
            self.order = list(compress(self.order, map(str.__contains__, texts, repeat(needle))))
            self.filter_text = needle
        else:
            self.filter_text = needle
            self.order = self._ordered()
        self.endResetModel()

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        self.layoutAboutToBeChanged.emit()
        self.sort_column, self.sort_order = column, order
        self.order = self._ordered()
        self.layoutChanged.emit()

    def matches(self, slot: int) -> bool:
        return not self.filter_text or self.filter_text in self.rows.search[slot]  # type: ignore[union-attr]

    def _ordered(self) -> list[int]:
        rows = self.rows
        if rows is None:
            return []
        needle = self.filter_text
        if needle:  # slots of rows gone have no text: they never match (all in C)
            found = map(str.__contains__, rows.search, repeat(needle))
            order = list(compress(range(len(rows.search)), found))
        else:
            order = list(rows.slots.values())
        if 0 <= self.sort_column < len(COLUMNS):
            keys = rows.keys[self.sort_column]
            order.sort(
                key=keys.__getitem__,
                reverse=self.sort_order == Qt.SortOrder.DescendingOrder,
            )
        return order

    def place(self, slot: int) -> int:
        """Where ``slot`` goes in ``order`` (after its equals), as sorting would put it."""
        order = self.order
        if not 0 <= self.sort_column < len(COLUMNS) or self.rows is None:
            return len(order)
        keys = self.rows.keys[self.sort_column]
        key = keys[slot]
        low, high = 0, len(order)
        descending = self.sort_order == Qt.SortOrder.DescendingOrder
        while low < high:
            middle = (low + high) // 2
            other = keys[order[middle]]
            if (key < other) if not descending else (other < key):  # type: ignore[operator]
                high = middle
            else:
                low = middle + 1
        return low

    def row_of(self, target: str) -> int:
        """The visible row showing ``target``, or -1."""
        slot = self.rows.slots.get(target) if self.rows is not None else None
        if slot is None:
            return -1
        try:
            return self.order.index(slot)
        except ValueError:
            return -1

    # ------------------------------------------------------------ QAbstractTableModel

    def rowCount(self, parent: QModelIndex = _NO_PARENT) -> int:
        return 0 if parent.isValid() else len(self.order)

    def columnCount(self, parent: QModelIndex = _NO_PARENT) -> int:
        return 0 if parent.isValid() else len(COLUMNS)

    def data(self, index: QModelIndex, role: int = DISPLAY) -> Any:
        rows = self.rows
        if role not in ROLES or rows is None or not index.isValid():
            return None
        i = self.order[index.row()]
        text = rows.text
        if role == DISPLAY and index.column() == AGE:
            return age_text(self.now, rows.born[i], text[AGE_TIP][i])
        return cell_data(lambda column: text[column][i], index.column(), role)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = DISPLAY) -> Any:
        return _header(section, orientation, role)


class _TableUpdate:
    """One delta applied to a TableModel: dataChanged for rows changed in place, then the
    rows gone (or whose sort key or filter match changed) removed in runs, then the new
    and re-placed ones inserted at their place."""

    def __init__(self, model: TableModel, rows: TableData, delta: Delta) -> None:
        self.model = model
        self.rows = rows
        self.delta = delta

    def write(self, slot: int, record: Record) -> None:
        rows, values = self.rows, record[2]
        for column, value in enumerate(values):
            rows.text[column][slot] = value
        for column, key in enumerate(sort_keys(values, record[3])):
            rows.keys[column][slot] = key
        rows.search[slot] = search_text(values)
        rows.born[slot] = record[3]

    def run(self) -> None:
        model, rows, delta = self.model, self.rows, self.delta
        column = model.sort_column if 0 <= model.sort_column < len(COLUMNS) else -1
        keys = rows.keys[column] if column >= 0 else None
        out: set[int] = set()  # slots to take out of the shown order
        into: list[int] = []  # slots to put in at their place
        edited: set[int] = set()  # slots changed where they are
        freed: list[int] = []
        for target in delta.gone:
            slot = rows.slots.pop(target, None)
            if slot is not None:
                out.add(slot)
                freed.append(slot)
        for target, record in delta.changed:
            slot = rows.slots.get(target)
            if slot is None:
                continue
            was = model.matches(slot)
            key = keys[slot] if keys is not None else None
            self.write(slot, record)
            now = model.matches(slot)
            if was and now and (keys is None or keys[slot] == key):
                edited.add(slot)
                continue
            if was:
                out.add(slot)
            if now:
                into.append(slot)
        for target, record in delta.new:
            slot = rows.free.pop() if rows.free else self.grow()
            rows.slots[target] = slot
            self.write(slot, record)
            if model.matches(slot):
                into.append(slot)
        if edited or out:  # their rows: one scan of the shown order, in C
            order = model.order
            wanted = edited | out
            places = list(compress(range(len(order)), map(wanted.__contains__, order)))
            self.signal_edited([row for row in places if order[row] in edited])
            self.remove([row for row in places if order[row] in out])
        self.insert(into)
        for slot in freed:
            self.clear(slot)
        rows.free.extend(freed)

    def grow(self) -> int:
        """A new slot at the end of every column (some key columns are text columns)."""
        rows = self.rows
        grown: set[int] = set()
        for column in (*rows.text, *rows.keys):
            if id(column) not in grown:
                grown.add(id(column))
                column.append("")
        rows.search.append("")
        rows.born.append(None)
        return len(rows.search) - 1

    def clear(self, slot: int) -> None:
        """Drop the text of a row gone (its slot waits for a new row)."""
        rows = self.rows
        for values in rows.text:
            values[slot] = ""
        rows.search[slot] = ""
        rows.born[slot] = None

    def signal_edited(self, rows: list[int]) -> None:
        model = self.model
        last = len(COLUMNS) - 1
        for first, end in _runs(rows):
            model.dataChanged.emit(model.index(first, 0), model.index(end, last))

    def remove(self, rows: list[int]) -> None:
        model, order = self.model, self.model.order
        for first, last in reversed(_runs(rows)):
            model.beginRemoveRows(_NO_PARENT, first, last)
            del order[first : last + 1]
            model.endRemoveRows()

    def insert(self, slots: list[int]) -> None:
        model, order = self.model, self.model.order
        if not 0 <= model.sort_column < len(COLUMNS):  # agent order: new rows at the end
            if slots:
                model.beginInsertRows(_NO_PARENT, len(order), len(order) + len(slots) - 1)
                order.extend(slots)
                model.endInsertRows()
            return
        for slot in slots:
            row = model.place(slot)
            model.beginInsertRows(_NO_PARENT, row, row)
            order.insert(row, slot)
            model.endInsertRows()
