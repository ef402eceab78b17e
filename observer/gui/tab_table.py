"""Tasks & threads tab: one flat, sortable, filterable table over a virtual model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PyQt6.QtCore import Qt
from PyQt6.QtWidgets import QHeaderView, QTableView

from observer.client import Node
from observer.gui.delta import TASK_LIMIT, Delta, Shadow
from observer.gui.follow import follow_of, table_follow
from observer.gui.models import TableModel
from observer.gui.rows import empty_table
from observer.gui.tab import RowActions, RowsTab


class TableTab(RowsTab):
    key = "table"
    title = "Tasks && threads"

    def __init__(self, rows: RowActions) -> None:
        super().__init__(rows)
        self.model = TableModel(self)
        self.view = QTableView()
        self.add_view(self.view)
        self.view.setSortingEnabled(True)
        self.view.sortByColumn(-1, Qt.SortOrder.AscendingOrder)  # tree order until a click
        self.view.setWordWrap(False)
        self.view.setShowGrid(False)
        rows = self.view.verticalHeader()
        rows.hide()
        rows.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)  # no per-row measuring
        rows.setDefaultSectionSize(self.view.fontMetrics().height() + 6)
        header = self.view.horizontalHeader()
        header.setStretchLastSection(True)
        header.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        self.shadow = Shadow()  # what the worker last sent this tab (see observer.gui.delta)

    def job(self) -> Callable[[Node], Any]:
        shadow, cpu = self.shadow, self.task_cpu_of
        follow = follow_of(shadow)  # where this tab is in the node's tasks
        return lambda node: table_follow(node.changes(follow.cursor, TASK_LIMIT), shadow, cpu(node))

    def clear(self) -> None:
        self.shadow = Shadow()
        self.model.set_rows(empty_table())

    def apply(self, value: Delta) -> None:
        if value.shadow is not self.shadow:
            return  # made for what the tab showed before it was cleared
        if value.full is None:
            try:
                self.model.apply(value)
            except ValueError:  # out of step (a reply lost): the next refresh sends all
                self.shadow = Shadow()
                return
            self.lay_out_now()  # rows may have come or gone: one paint, not two
            self.view.viewport().update()  # the Age column counts on
            return
        selected = self.selected_id()
        scroll = self.view.verticalScrollBar().value()
        self.model.apply(value)
        self.restore(selected)
        self.view.verticalScrollBar().setValue(scroll)

    def restore(self, selected: str | None) -> None:
        row = self.model.row_of(selected) if selected else -1
        if row >= 0:
            self.make_current(self.model.index(row, 0))

    def set_filter(self, text: str) -> None:
        self.model.set_filter(text)

    def status_text(self) -> str:
        rows = self.model.rows
        if rows is None or not len(rows):
            return ""
        text = f"{self.model.rowCount():,} of {len(rows):,} rows"
        total = rows.counts.get("tasks_total", 0)
        if total > rows.counts.get("tasks", 0):
            text += f" (agent truncated tasks: {rows.counts['tasks']:,} of {total:,})"
        return text
