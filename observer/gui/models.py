"""Qt models over rows built off the GUI thread: ``data()`` only indexes into lists.

The tree model adapts ``rows.TreeData`` (Items with parent/row links); the table model
adapts column-oriented ``rows.TableData`` and keeps a permutation for sort and filter, so
100k rows sort by comparing precomputed keys and never build a QStandardItem.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PyQt6.QtCore import QAbstractItemModel, QAbstractTableModel, QModelIndex, QObject, Qt
from PyQt6.QtGui import QColor, QFont

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
    copy_values,
    same_shape,
)

DISPLAY = Qt.ItemDataRole.DisplayRole
TOOLTIP = Qt.ItemDataRole.ToolTipRole
FOREGROUND = Qt.ItemDataRole.ForegroundRole
FONT = Qt.ItemDataRole.FontRole
ID_ROLE = Qt.ItemDataRole.UserRole + 1  # the row's full target id (task-N, thread-N, pid-N)
KIND_ROLE = Qt.ItemDataRole.UserRole + 2
NAME_ROLE = Qt.ItemDataRole.UserRole + 3

_STATE_COLOURS = {
    "cancelled": QColor("#9a6700"),
    "failed": QColor("#cf222e"),
    "done": QColor("#6e7781"),
    "zombie": QColor("#cf222e"),
}
_FINISHED_COLOUR = QColor("#8c959f")  # a task that has ended: greyed, not a live row
_NO_PARENT = QModelIndex()  # the invalid index Qt passes for "top level"
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


class TreeModel(QAbstractItemModel):
    """The Processes tree: process -> threads -> loops -> tasks, children processes."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.data_: TreeData | None = None
        self.filter_text = ""
        self.hits = 0

    def set_data(self, data: TreeData) -> bool:
        """Show a new tree; True when the model was reset (the view must restore its state).

        A refresh that changed only values (the usual case) is copied into the rows the
        view already holds, so Qt does not lay out 100k rows again.
        """
        old = self.data_
        if old is not None and not self.filter_text and same_shape(old, data):
            stale = (old.values, old.search)  # freed off the GUI thread, like the rest
            copy_values(old, data)
            dispose(data)
            dispose(stale)
            self._values_changed(old.root)
            return False
        self.beginResetModel()
        self.data_ = data
        self.hits = apply_filter(data, self.filter_text)
        self.endResetModel()
        dispose(old)
        return True

    def _values_changed(self, root: Item) -> None:
        last = len(COLUMNS) - 1
        stack = [(root, _NO_PARENT)]
        while stack:
            item, index = stack.pop()
            if not item.shown:
                continue
            self.dataChanged.emit(
                self.index(0, 0, index), self.index(len(item.shown) - 1, last, index)
            )
            stack.extend(
                (child, self.createIndex(child.row, 0, child))
                for child in item.shown
                if child.shown
            )

    def set_filter(self, text: str) -> None:
        self.beginResetModel()
        self.filter_text = text
        if self.data_ is not None:
            self.hits = apply_filter(self.data_, text)
        self.endResetModel()

    def index_of(self, target: str, column: int = 0) -> QModelIndex:
        """The index of the row with this id, if the filter shows it."""
        item = self.data_.by_id.get(target) if self.data_ else None
        if item is None or item.parent is None:
            return QModelIndex()
        parent = item.parent
        if item.row >= len(parent.shown) or parent.shown[item.row] is not item:
            return QModelIndex()
        return self.createIndex(item.row, column, item)

    # ------------------------------------------------------------ QAbstractItemModel

    def index(self, row: int, column: int, parent: QModelIndex = _NO_PARENT) -> QModelIndex:
        if self.data_ is None:
            return QModelIndex()
        owner = parent.internalPointer() if parent.isValid() else self.data_.root
        if 0 <= row < len(owner.shown) and 0 <= column < len(COLUMNS):
            return self.createIndex(row, column, owner.shown[row])
        return QModelIndex()

    def parent(self, child: QModelIndex = _NO_PARENT) -> QModelIndex:  # type: ignore[override]
        if not child.isValid():
            return QModelIndex()
        up = child.internalPointer().parent
        if up is None or up.parent is None:
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
        return self.rowCount(parent) > 0

    def columnCount(self, parent: QModelIndex = _NO_PARENT) -> int:
        return len(COLUMNS)

    def data(self, index: QModelIndex, role: int = DISPLAY) -> Any:
        if not index.isValid():
            return None
        values = self.data_.values[index.internalPointer().pos]  # type: ignore[union-attr]
        return cell_data(values.__getitem__, index.column(), role)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = DISPLAY) -> Any:
        return _header(section, orientation, role)


class TableModel(QAbstractTableModel):
    """The flat Tasks & threads table: sortable, filterable, virtual."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.rows: TableData | None = None
        self.order: list[int] = []
        self.sort_column = -1
        self.sort_order = Qt.SortOrder.AscendingOrder
        self.filter_text = ""

    def set_rows(self, rows: TableData) -> None:
        old = self.rows
        self.beginResetModel()
        self.rows = rows
        self.order = self._ordered()
        self.endResetModel()
        dispose(old)

    def set_filter(self, text: str) -> None:
        self.beginResetModel()
        self.filter_text = text.strip().lower()
        self.order = self._ordered()
        self.endResetModel()

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        self.layoutAboutToBeChanged.emit()
        self.sort_column, self.sort_order = column, order
        self.order = self._ordered()
        self.layoutChanged.emit()

    def _ordered(self) -> list[int]:
        rows = self.rows
        if rows is None:
            return []
        needle = self.filter_text
        if needle:
            order = [i for i, s in enumerate(rows.search) if needle in s]
        else:
            order = list(range(len(rows)))
        if 0 <= self.sort_column < len(COLUMNS):
            keys = rows.keys[self.sort_column]
            order.sort(
                key=keys.__getitem__,
                reverse=self.sort_order == Qt.SortOrder.DescendingOrder,
            )
        return order

    def row_of(self, target: str) -> int:
        """The visible row showing ``target``, or -1."""
        if self.rows is None:
            return -1
        ids = self.rows.ids
        for row, i in enumerate(self.order):
            if ids[i] == target:
                return row
        return -1

    # ------------------------------------------------------------ QAbstractTableModel

    def rowCount(self, parent: QModelIndex = _NO_PARENT) -> int:
        return 0 if parent.isValid() else len(self.order)

    def columnCount(self, parent: QModelIndex = _NO_PARENT) -> int:
        return 0 if parent.isValid() else len(COLUMNS)

    def data(self, index: QModelIndex, role: int = DISPLAY) -> Any:
        rows = self.rows
        if rows is None or not index.isValid():
            return None
        i = self.order[index.row()]
        text = rows.text
        return cell_data(lambda column: text[column][i], index.column(), role)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = DISPLAY) -> Any:
        return _header(section, orientation, role)
