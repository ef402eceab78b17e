"""What every tab shares: which node it shows, one request per refresh, an error banner."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from PyQt6.QtCore import QAbstractItemModel, QItemSelectionModel, QModelIndex, Qt, pyqtSignal
from PyQt6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from observer.client import Node
from observer.gui.columns import ColumnFitter
from observer.gui.link import NodeLink, Reply
from observer.gui.models import ID_ROLE
from observer.gui.rows import LOCATION, NAME
from observer.gui.taskcpu import WINDOW, CpuState, task_cpu

CPU_REASON = (
    "Read-only: CPU per task instruments the host's coroutines and adds two CPU clock reads "
    "to every task step, so turning it on or off needs an operator token; this node was "
    "connected with a viewer token."
)
CPU_TIP = (
    f"Measure each task's CPU: its steps' thread CPU time over the last {WINDOW:.0f} s, as a "
    "share of a core in the CPU column (Python 3.12+). Costs the host two CPU clock reads "
    "per task step; turned off again when this window disconnects."
)


class ElideLeft(QStyledItemDelegate):
    """Cuts a cell's text at its start: "…/selectors.py:468" keeps the file and line."""

    def initStyleOption(self, option: QStyleOptionViewItem | None, index: QModelIndex) -> None:
        super().initStyleOption(option, index)
        if option is not None:
            option.textElideMode = Qt.TextElideMode.ElideLeft


class RowActions(Protocol):
    """What a row view asks of the window: wire inspect and kill to the view."""

    def install_target_view(self, view: QAbstractItemView) -> None:
        """Double-click/Enter inspects the row's target; its menu and Delete act on it."""
        ...


class Banner(QLabel):
    """A plain-words error above a view, hidden when there is nothing to say."""

    STYLE = (
        "QLabel { background:#ffebe9; color:#82071e; border:1px solid #ff8182; padding:4px 8px; }"
    )

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWordWrap(True)
        self.setStyleSheet(self.STYLE)
        self.hide()

    def say(self, text: str) -> None:
        self.setText(text)
        self.setVisible(bool(text))


Sections = list[tuple[str, list[tuple[str, str]]]]


def fill_sections(
    view: QTreeWidget,
    sections: Sections,
    collapsed: set[str] | None = None,
    decorate: Callable[[str, QTreeWidgetItem, QTreeWidgetItem], None] | None = None,
) -> None:
    """Redraw a Property/Value tree: one bold item per section, its rows under it.

    The scroll position survives; sections named in ``collapsed`` stay collapsed;
    ``decorate(section, top, row)`` may add data or tooltips to each row.
    """
    scroll = view.verticalScrollBar().value()
    view.setUpdatesEnabled(False)
    view.clear()
    for title, rows in sections:
        top = QTreeWidgetItem([title, ""])
        font = top.font(0)
        font.setBold(True)
        top.setFont(0, font)
        view.addTopLevelItem(top)
        for key, text in rows:
            child = QTreeWidgetItem([key, text])
            child.setToolTip(1, text[:2000])
            if decorate is not None:
                decorate(title, top, child)
            top.addChild(child)
        top.setExpanded(collapsed is None or title not in collapsed)
    view.setUpdatesEnabled(True)
    view.verticalScrollBar().setValue(scroll)


class Tab(QWidget):
    """A tab that refreshes from one node with one request, only while it is visible.

    The window drives it (``set_link``, ``refresh``) and listens to its signals; a tab that
    needs more of the window says what in a small protocol it takes in its constructor.
    """

    key = ""
    title = ""
    applied = pyqtSignal()  # a reply was drawn
    failed = pyqtSignal(str)  # a refresh failed; the banner says why
    status_changed = pyqtSignal()

    def __init__(self) -> None:
        super().__init__()
        self.link: NodeLink | None = None
        self.last_applied = 0.0  # time.time() of the data shown
        self.apply_seconds = 0.0  # GUI-thread time spent drawing the last reply
        self.layout_ = QVBoxLayout(self)
        self.layout_.setContentsMargins(4, 4, 4, 4)
        self.banner = Banner(self)
        self.layout_.addWidget(self.banner)

    # ------------------------------------------------------------ driven by the window

    def set_link(self, link: NodeLink | None) -> None:
        """Show another node (or none): forget what was shown."""
        if link is self.link:
            return
        self.link = link
        self.last_applied = 0.0
        self.banner.say("")
        self.clear()
        self.status_changed.emit()

    def refresh(self) -> None:
        """Ask the node for this tab's data; the reply is drawn when it arrives."""
        if self.link is not None:
            self.link.request(self.key, self.job(), self._on_reply)

    def _on_reply(self, reply: Reply) -> None:
        if reply.source is not self.link:
            return  # the user moved to another node meanwhile
        if not reply.ok:
            self.show_error(reply)
            return
        self.banner.say("")
        started = time.perf_counter()
        self.apply(reply.value)
        self.fit()
        self.apply_seconds = time.perf_counter() - started
        self.last_applied = reply.finished
        self.status_changed.emit()
        self.applied.emit()

    def show_error(self, reply: Reply) -> None:
        """Keep the last data, say what failed and how old what is shown is."""
        text = reply.error.rstrip(".") + "."
        if self.last_applied:
            stamp = time.strftime("%H:%M:%S", time.localtime(self.last_applied))
            text += f" Showing data from {stamp}."
        self.banner.say(text)
        self.failed.emit(reply.error)

    # ------------------------------------------------------------ for subclasses

    def job(self) -> Callable[[Node], Any]:
        """What to run against the node, in the link's worker thread."""
        raise NotImplementedError

    def apply(self, value: Any) -> None:
        """Draw a reply (GUI thread): keep it cheap, the worker did the heavy lifting."""
        raise NotImplementedError

    def clear(self) -> None:
        """Forget the shown data."""

    def fit(self) -> None:
        """Size the columns to the data just drawn (for tabs whose views have columns)."""

    def status_text(self) -> str:
        """Counts for the status bar."""
        return ""

    def focus_filter(self) -> None:
        """Ctrl-F: put the cursor in this tab's filter box, if it has one."""


class RowsTab(Tab):
    """A tab showing rows of targets in a view with a filter box (Ctrl-F).

    The selection is remembered by target id, so it survives the model being replaced.
    """

    view: QAbstractItemView
    model: QAbstractItemModel

    def __init__(self, rows: RowActions) -> None:
        super().__init__()
        self.rows = rows
        self.filter = QLineEdit()
        self.filter.setPlaceholderText("Filter by name, coroutine or function (Ctrl-F)")
        self.filter.setToolTip(
            "Keeps rows whose name, coroutine or function contains the text (a task's own "
            "name too, where its coroutine is shown in its place), and their parents"
        )
        self.filter.setClearButtonEnabled(True)
        self.filter.textChanged.connect(self._filter_changed)
        self.cpu_state = CpuState()  # the node's CPU per task, as the last refresh saw it
        self.cpu_box = QCheckBox("CPU per task")
        self.cpu_box.toggled.connect(self._cpu_toggled)
        bar = QHBoxLayout()
        bar.addWidget(self.filter, 1)
        bar.addWidget(self.cpu_box)
        self.layout_.addLayout(bar)
        self.update_cpu_box()

    def add_view(self, view: QAbstractItemView) -> None:
        """Set up the tab's view the way both row views share: rows selected whole, one at
        a time, columns fitted to their content (names first), inspect and kill wired."""
        self.view = view
        view.setModel(self.model)
        view.setAlternatingRowColors(True)
        view.setTextElideMode(Qt.TextElideMode.ElideMiddle)  # keeps file *and* line number
        view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.layout_.addWidget(view)
        self.columns = ColumnFitter(view, first=(NAME,), grow_only=True, every=5.0)
        self._file_line = ElideLeft(view)  # a cut location keeps its file name and line
        view.setItemDelegateForColumn(LOCATION, self._file_line)
        self.rows.install_target_view(view)

    def lay_out_now(self) -> None:
        """After rows came or went, lay the view out now, before it is painted: a view
        left to lay itself out at its next paint asks for another paint from there, and
        each such refresh drew the view twice (~20 ms each on a master's tree). Not while
        the window is minimised: nothing is drawn then, and the layout would wait too."""
        window = self.view.window()
        if self.view.isVisible() and not (window is not None and window.isMinimized()):
            self.view.executeDelayedItemsLayout()

    def set_link(self, link: NodeLink | None) -> None:
        if link is not self.link:
            self.columns.reset()  # another node's names and paths: measure them afresh
            self.cpu_state = CpuState()
        super().set_link(link)
        self.update_cpu_box()

    def _on_reply(self, reply: Reply) -> None:
        super()._on_reply(reply)
        self.update_cpu_box()

    def task_cpu_of(self, node: Node) -> dict[str, float] | None:
        """The tasks' CPU cells for a refresh (in the link's worker)."""
        return task_cpu(node, self.cpu_state)

    def update_cpu_box(self) -> None:
        """The CPU per task box says whether it is on, and is usable by an operator only."""
        link, state = self.link, self.cpu_state
        box = self.cpu_box
        box.blockSignals(True)
        box.setChecked(state.enabled is True)
        box.blockSignals(False)
        can = link is not None and link.can_control and not state.note
        box.setEnabled(can)
        if link is not None and not link.can_control:
            box.setToolTip(CPU_REASON)
        else:
            box.setToolTip(state.note or CPU_TIP)

    def _cpu_toggled(self, on: bool) -> None:
        """Turn the node's CPU per task on or off (operator, audited by the agent)."""
        link, state = self.link, self.cpu_state
        if link is None:
            return

        def job(node: Node) -> None:
            if on:
                node.task_cpu_start()  # stops when this window's session ends
            else:
                node.task_cpu_stop()
            task_cpu(node, state, force=True)

        def done(reply: Reply) -> None:
            if reply.source is not self.link:
                return
            if not reply.ok:
                self.banner.say(f"CPU per task: {reply.error}")
            self.update_cpu_box()
            self.refresh()

        link.request(f"{self.key}-taskcpu", job, done)

    def fit(self) -> None:
        self.columns.fit_later()  # the first data of a node at once, then every 5 s

    def _filter_changed(self, text: str) -> None:
        selected = self.selected_id()
        self.set_filter(text)
        self.restore(selected)
        self.columns.fit_later()  # measuring the rows on screen at every key costs
        self.status_changed.emit()

    def set_filter(self, text: str) -> None:
        """Apply the filter text to the model."""
        raise NotImplementedError

    def restore(self, selected: str | None) -> None:
        """Bring back the view state (at least the selected row) after the model changed."""
        raise NotImplementedError

    def selected_id(self) -> str | None:
        index = self.view.currentIndex()
        return index.data(ID_ROLE) if index.isValid() else None

    def make_current(self, index: QModelIndex) -> None:
        """Select the row of ``index`` without scrolling to it."""
        if index.isValid():
            self.view.selectionModel().setCurrentIndex(
                index,
                QItemSelectionModel.SelectionFlag.ClearAndSelect
                | QItemSelectionModel.SelectionFlag.Rows,
            )

    def focus_filter(self) -> None:
        self.filter.setFocus()
        self.filter.selectAll()
