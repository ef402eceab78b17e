"""The Cluster tab's Qt model and its CPU sparkline: one row per node, drawn from cache.

``ClusterModel`` holds one ``observer.fleet.ClusterRow`` per node and the display strings
made from it when it arrived (``observer.format.cluster_cells``, as ``observer nodes``
prints them); ``data()`` only indexes into those. Sorting goes through a proxy on
``SORT_ROLE`` (numbers for numeric columns), so rows can update one by one as their
replies arrive. ``SparkDelegate`` paints a row's recent CPU % as a small polyline in its
cell: no chart widget per row.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from PyQt6.QtCore import QAbstractItemModel, QModelIndex, QObject, QPointF, Qt
from PyQt6.QtGui import QBrush, QColor, QPainter, QPainterPath, QPen, QPolygonF
from PyQt6.QtWidgets import QApplication, QStyle, QStyledItemDelegate, QStyleOptionViewItem

from observer.fleet import SPARK_POINTS, ClusterRow, Trend
from observer.format import CLUSTER_COLUMNS, cluster_cells, human_bytes, human_seconds
from observer.gui.link import NodeLink, Status
from observer.gui.nodelist import LIGHTS, light
from observer.gui.workers import WorkerRow

SPARK = "CPU trend"
COLUMNS = (*CLUSTER_COLUMNS[:5], SPARK, *CLUSTER_COLUMNS[5:])  # the trend next to CPU now
NODE, ADDRESS, STATUS, RTT, CPU, TREND, RSS, THREADS, TASKS, LAG, UPTIME, AGENT, NOTE = range(13)
assert COLUMNS[TREND] == SPARK and COLUMNS[NOTE] == "Note" and len(COLUMNS) == 13

SORT_ROLE = Qt.ItemDataRole.UserRole + 20
SPARK_ROLE = Qt.ItemDataRole.UserRole + 21  # tuple[float, ...]: recent CPU %, oldest first
LINK_ROLE = Qt.ItemDataRole.UserRole + 22  # the row's NodeLink
UP_ROLE = Qt.ItemDataRole.UserRole + 23  # True when the node is up and listed in DNS

GREY = QColor("#8c959f")
NUMERIC = (RTT, CPU, RSS, THREADS, TASKS, LAG, UPTIME)
STATUS_ORDER = {s.value: i for i, s in enumerate(LIGHTS)}  # connecting, up, auth, down, dead
SPARK_FLOOR = 5.0  # % at the top of an idle node's sparkline, so noise stays flat


def sort_key(row: ClusterRow, column: int) -> float | str:
    """What a column sorts by: a number for figures (unknown first), text otherwise."""
    numbers = {
        RTT: row.rtt,
        CPU: row.cpu_percent,
        TREND: (sum(row.spark) / len(row.spark)) if row.spark else None,
        RSS: row.rss,
        THREADS: row.threads,
        TASKS: row.tasks,
        LAG: row.loop_lag,
        UPTIME: row.uptime,
    }
    if column == STATUS:
        return float(STATUS_ORDER.get(row.status, len(STATUS_ORDER)))
    if column in numbers:
        value = numbers[column]
        return float("-inf") if value is None else float(value)
    return _cells(row)[column].lower()


def _cells(row: ClusterRow) -> tuple[str, ...]:
    cells = cluster_cells(row)
    return (*cells[:TREND], "", *cells[TREND:])


def with_workers(row: ClusterRow, workers: list[WorkerRow]) -> ClusterRow:
    """A host's row as shown: its own CPU, RSS and tasks plus its live workers' (tasks
    only once every worker's were read, so the sum is never a silent undercount)."""
    live = [w for w in workers if not w.exited]
    if not live or row.status != Status.UP.value:
        return row

    def total(own: float | None, parts: list[float | None]) -> float | None:
        return None if own is None else own + sum(p for p in parts if p is not None)

    tasks = row.tasks
    if tasks is not None and all(w.tasks is not None for w in live):
        tasks += sum(w.tasks or 0 for w in live)
    rss = total(row.rss, [w.rss for w in live])
    return replace(
        row,
        cpu_percent=total(row.cpu_percent, [w.cpu for w in live]),
        rss=None if rss is None else int(rss),
        tasks=tasks,
    )


def worker_cells(row: WorkerRow) -> tuple[str, ...]:
    """A worker's row under its host, in COLUMNS order."""
    cells = [""] * len(COLUMNS)
    cells[NODE] = row.name
    cells[ADDRESS] = f"pid {row.pid}"
    cells[STATUS] = row.shown_status
    cells[CPU] = f"{row.cpu:.1f}%" if row.cpu is not None else ""
    cells[RSS] = human_bytes(row.rss)
    cells[TASKS] = f"{row.tasks:,}" if row.tasks is not None else ""
    cells[LAG] = f"{row.loop_lag * 1000:.1f} ms" if row.loop_lag is not None else ""
    cells[UPTIME] = human_seconds(row.age)
    cells[NOTE] = row.note
    return tuple(cells)


def worker_sort_key(row: WorkerRow, column: int) -> float | str:
    numbers = {CPU: row.cpu, RSS: row.rss, TASKS: row.tasks, LAG: row.loop_lag, UPTIME: row.age}
    if column in numbers:
        value = numbers[column]
        return float("-inf") if value is None else float(value)
    return worker_cells(row)[column].lower()


class ClusterModel(QAbstractItemModel):
    """One row per node over cached ``ClusterRow``s, its workers under it (a host row
    expands to them); rows change one at a time. A worker row's internal pointer is its
    host's NodeLink, a host row's is None."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.links: list[NodeLink] = []
        self.rows: list[ClusterRow] = []
        self._cells: list[tuple[str, ...]] = []
        self.workers: dict[NodeLink, list[tuple[WorkerRow, tuple[str, ...]]]] = {}
        self.shown: dict[NodeLink, ClusterRow] = {}  # rows as drawn: workers' figures added
        self._icons = {status.value: light(colour) for status, colour in LIGHTS.items()}

    # ------------------------------------------------------------ changing rows

    def set_links(self, links: list[NodeLink]) -> None:
        """Show exactly these nodes: rows of others go, new ones get a placeholder row."""
        wanted = set(links)
        for row in reversed(range(len(self.links))):
            if self.links[row] not in wanted:
                self.beginRemoveRows(QModelIndex(), row, row)
                self.workers.pop(self.links[row], None)
                self.shown.pop(self.links[row], None)
                del self.links[row], self.rows[row], self._cells[row]
                self.endRemoveRows()
        known = set(self.links)
        for link in links:
            if link not in known:
                row = len(self.links)
                self.beginInsertRows(QModelIndex(), row, row)
                self.links.append(link)
                self.rows.append(Trend().row(link.health, link.origin, link.gone_since))
                self._cells.append(_cells(self.rows[-1]))
                self.endInsertRows()

    def update(self, link: NodeLink, value: ClusterRow) -> None:
        """Replace one node's row (no-op for a node not shown)."""
        try:
            row = self.links.index(link)
        except ValueError:
            return
        self.rows[row] = value
        self._redo_host(row)

    def set_workers(self, link: NodeLink, rows: list[WorkerRow]) -> None:
        """Replace the worker rows under one node (no-op for a node not shown)."""
        try:
            parent = self.index(self.links.index(link), 0)
        except ValueError:
            return
        old = self.workers.get(link, [])
        new = [(row, worker_cells(row)) for row in rows]
        if [r.pid for r, _ in old] == [r.pid for r, _ in new]:
            self.workers[link] = new
            self._redo_host(parent.row())
            if new:
                self.dataChanged.emit(
                    self.index(0, 0, parent), self.index(len(new) - 1, len(COLUMNS) - 1, parent)
                )
            return
        if old:
            self.beginRemoveRows(parent, 0, len(old) - 1)
            self.workers[link] = []
            self.endRemoveRows()
        if new:
            self.beginInsertRows(parent, 0, len(new) - 1)
            self.workers[link] = new
            self.endInsertRows()
        self._redo_host(parent.row())

    def _redo_host(self, row: int) -> None:
        """Recompute a host row's drawn figures (its own plus its workers') and redraw it."""
        link = self.links[row]
        shown = with_workers(self.rows[row], [w for w, _ in self.workers.get(link, [])])
        self.shown[link] = shown
        self._cells[row] = _cells(shown)
        self.dataChanged.emit(self.index(row, 0), self.index(row, len(COLUMNS) - 1))

    def row_of(self, link: NodeLink) -> ClusterRow | None:
        try:
            return self.rows[self.links.index(link)]
        except ValueError:
            return None

    # ------------------------------------------------------------ Qt model

    def index(self, row: int, column: int, parent: QModelIndex = QModelIndex()) -> QModelIndex:  # noqa: B008
        if not 0 <= column < len(COLUMNS):
            return QModelIndex()
        if not parent.isValid():
            return (
                self.createIndex(row, column, None) if 0 <= row < len(self.rows) else QModelIndex()
            )
        if parent.internalPointer() is not None or not 0 <= parent.row() < len(self.links):
            return QModelIndex()
        link = self.links[parent.row()]
        if 0 <= row < len(self.workers.get(link, ())):
            return self.createIndex(row, column, link)
        return QModelIndex()

    def parent(self, child: QModelIndex = QModelIndex()) -> QModelIndex:  # type: ignore[override]  # noqa: B008
        link = child.internalPointer() if child.isValid() else None
        if link is None or link not in self.links:
            return QModelIndex()
        return self.createIndex(self.links.index(link), 0, None)

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008
        if not parent.isValid():
            return len(self.rows)
        if parent.internalPointer() is not None or parent.column() != 0:
            return 0
        return len(self.workers.get(self.links[parent.row()], ()))

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008
        return len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = 0) -> Any:
        if orientation != Qt.Orientation.Horizontal:
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        if role == Qt.ItemDataRole.TextAlignmentRole and section in NUMERIC:
            return Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
        if role == Qt.ItemDataRole.ToolTipRole and section == TREND:
            return f"CPU % over the last {SPARK_POINTS} samples (about one a second)"
        return None

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        if index.internalPointer() is not None:
            return self._worker_data(index, role)
        row, column = self.rows[index.row()], index.column()
        live = row.status == Status.UP.value and row.in_dns
        if role == Qt.ItemDataRole.DisplayRole:
            return self._cells[index.row()][column]
        if role == SORT_ROLE:
            return sort_key(self.shown.get(self.links[index.row()], row), column)
        if role == Qt.ItemDataRole.ForegroundRole:
            return None if live else QBrush(GREY)
        if role == Qt.ItemDataRole.DecorationRole and column == NODE:
            return self._icons.get(row.status)
        if role == Qt.ItemDataRole.TextAlignmentRole and column in NUMERIC:
            return Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(index.row(), column)
        if role == SPARK_ROLE:
            return row.spark
        if role == LINK_ROLE:
            return self.links[index.row()]
        if role == UP_ROLE:
            return live
        return None

    def _worker_data(self, index: QModelIndex, role: int) -> Any:
        link = index.internalPointer()
        workers = self.workers.get(link, [])
        if not 0 <= index.row() < len(workers):
            return None
        row, cells = workers[index.row()]
        column = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return cells[column]
        if role == SORT_ROLE:
            return worker_sort_key(row, column)
        if role == Qt.ItemDataRole.ForegroundRole:
            return QBrush(GREY) if row.exited else None
        if role == Qt.ItemDataRole.TextAlignmentRole and column in NUMERIC:
            return Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
        if role == Qt.ItemDataRole.ToolTipRole:
            return cells[column] or None
        if role == LINK_ROLE:
            return link
        return None

    def _tooltip(self, number: int, column: int) -> str | None:
        row = self.rows[number]
        if column == TREND:
            if not row.spark:
                return None
            return (
                f"CPU % over the last {len(row.spark)} samples: "
                f"min {min(row.spark):.1f}%, max {max(row.spark):.1f}%, "
                f"now {row.spark[-1]:.1f}%"
            )
        text = self._cells[number][column]
        if column in (NODE, ADDRESS):
            lines = [f"{row.name} ({row.address}): {row.status}"]
            if row.origin != row.address:
                lines.append(f"resolved from {row.origin}")
            if row.pid is not None:
                lines.append(f"pid {row.pid}" + (f", role {row.role}" if row.role else ""))
            live = [w for w, _ in self.workers.get(self.links[number], []) if not w.exited]
            if live:
                lines.append(f"{len(live)} workers: CPU, RSS and tasks include theirs")
            return "\n".join(lines) + "\nDouble-click to open"
        return text or None


class SparkDelegate(QStyledItemDelegate):
    """Paints a cell's SPARK_ROLE values as a polyline, newest at the right edge.

    The x axis is fixed (SPARK_POINTS samples across the cell), so a young node's line
    is short rather than stretched; the y axis runs from 0 to the row's highest value
    (at least SPARK_FLOOR %), and the tooltip gives the figures.
    """

    LINE = QColor("#0969da")

    def paint(
        self, painter: QPainter | None, option: QStyleOptionViewItem, index: QModelIndex
    ) -> None:
        assert painter is not None
        self.initStyleOption(option, index)
        option.text = ""
        widget = option.widget
        style = widget.style() if widget is not None else QApplication.style()
        assert style is not None
        style.drawControl(QStyle.ControlElement.CE_ItemViewItem, option, painter, widget)
        values = index.data(SPARK_ROLE) or ()
        if len(values) < 2:
            return
        rect = option.rect.adjusted(4, 3, -4, -3)
        if rect.width() < 8 or rect.height() < 4:
            return
        top = max(SPARK_FLOOR, max(values))
        step = rect.width() / (SPARK_POINTS - 1)
        right, bottom = float(rect.right()), float(rect.bottom())
        count = len(values)
        points = [
            QPointF(right - (count - 1 - i) * step, bottom - (v / top) * rect.height())
            for i, v in enumerate(values)
        ]
        colour = self.LINE if index.data(UP_ROLE) else GREY
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        if selected:
            colour = option.palette.highlightedText().color()
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        area = QPainterPath(QPointF(points[0].x(), bottom))
        for point in points:
            area.lineTo(point)
        area.lineTo(QPointF(points[-1].x(), bottom))
        area.closeSubpath()
        fill = QColor(colour)
        fill.setAlpha(45)
        painter.fillPath(area, fill)
        painter.setPen(QPen(colour, 1.3))
        painter.drawPolyline(QPolygonF(points))
        painter.restore()
