"""Processes tab: OS process -> workers -> threads -> event loops -> tasks, children.

Expanded rows, the selection and the scroll position survive every refresh: they are
remembered by target id, not by Qt index.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PyQt6.QtCore import QModelIndex
from PyQt6.QtWidgets import QHeaderView, QTreeView

from observer.client import Node
from observer.gui.delta import AGENT_THREADS, Delta, Shadow
from observer.gui.models import ID_ROLE, TreeModel
from observer.gui.rows import TreeData, empty_tree
from observer.gui.tab import RowActions, RowsTab
from observer.gui.workers import process_tree_delta

EXPAND_ALL_UP_TO = 2000  # rows: a small tree opens fully the first time, a huge one by loop
EXPAND_LOOP_UP_TO = 2000  # a loop with more tasks starts collapsed: laying out 100k rows costs


class ProcessesTab(RowsTab):
    key = "processes"
    title = "Processes"

    def __init__(self, rows: RowActions) -> None:
        super().__init__(rows)
        self.model = TreeModel(self)
        self.view = QTreeView()
        self.add_view(self.view)
        self.view.setUniformRowHeights(True)  # lets Qt lay out 100k rows lazily
        self.view.header().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.view.expanded.connect(self._on_expanded)
        self.view.collapsed.connect(self._on_collapsed)
        self._expanded: set[str] = set()  # ids the user (or the first view) expanded
        self._restoring = False
        self._first = True
        self.shadow = Shadow()  # what the worker last sent this tab (see observer.gui.delta)

    def _on_expanded(self, index: QModelIndex) -> None:
        if not self._restoring:
            self._expanded.add(index.data(ID_ROLE))

    def _on_collapsed(self, index: QModelIndex) -> None:
        if not self._restoring:
            self._expanded.discard(index.data(ID_ROLE))

    def job(self) -> Callable[[Node], Any]:
        shadow, cpu = self.shadow, self.task_cpu_of
        # the master and its workers; the master's tasks' CPU while CPU per task is on
        return lambda node: process_tree_delta(node, shadow, lambda: cpu(node))

    def clear(self) -> None:
        self._expanded.clear()
        self._first = True
        self.shadow = Shadow()
        self.model.set_data(empty_tree())

    def apply(self, value: Delta) -> None:
        if value.shadow is not self.shadow:
            return  # made for what the tab showed before it was cleared
        full = value.full
        if self._first and isinstance(full, TreeData):
            self._expanded = first_expansion(full)
            self._first = False
        if full is None:
            selected = self.selected_id()
            try:
                self.model.apply(value)
            except ValueError:  # out of step (a reply lost): the next refresh sends all
                self.shadow = Shadow()
                return
            if selected and self.selected_id() != selected:  # its span was redone
                self.make_current(self.model.index_of(selected))
            self.lay_out_now()  # rows may have come or gone: one paint, not two
            self.view.viewport().update()  # the Age column counts on
            return
        selected = self.selected_id()
        scroll = self.view.verticalScrollBar().value()
        self.view.setUpdatesEnabled(False)
        try:
            self.model.apply(value)
            self.restore(selected)
            self.view.verticalScrollBar().setValue(scroll)
        finally:
            self.view.setUpdatesEnabled(True)

    def restore(self, selected: str | None) -> None:
        data = self.model.data_ or empty_tree()
        self._expanded &= data.by_id.keys()  # forget rows that are gone
        expanded = set(self._expanded)
        if self.model.filter_text:  # show the matches: open the rows kept, unless too many
            if self.model.hits <= EXPAND_ALL_UP_TO:
                expanded |= {item.id for item in data.open}
            else:  # laying out 100k rows would cost more than a key press may
                expanded |= {
                    item.id
                    for item in data.open
                    if item.kind in ("process", "thread", "loop")
                    and len(item.shown) <= EXPAND_LOOP_UP_TO
                }
        self._restoring = True
        try:
            for target in expanded:
                index = self.model.index_of(target)
                if index.isValid():
                    self.view.setExpanded(index, True)
        finally:
            self._restoring = False
        if selected:
            self.make_current(self.model.index_of(selected))

    def set_filter(self, text: str) -> None:
        self.model.set_filter(text)

    def status_text(self) -> str:
        data = self.model.data_
        if data is None or not data.by_id:
            return ""
        kinds = data.counts
        agent = kinds.get(AGENT_THREADS, 0)  # the host's threads first, as the Load charts
        threads = f"{kinds.get('thread', 0) - agent} threads" + (
            f" (+{agent} agent)" if agent else ""
        )
        text = f"{threads}, {kinds.get('task', 0):,} tasks, {kinds.get('child', 0)} children"
        if kinds.get("worker"):
            text += f" ({kinds['worker']} workers)"
        if self.model.filter_text:
            text += f" · {self.model.hits:,} match “{self.model.filter_text}”"
        return text


def first_expansion(data: TreeData) -> set[str]:
    """What is open the first time a node is shown: everything in a small tree, else the
    process, the workers, the threads that run loops and, in tree order, the loops whose
    tasks still fit one budget of EXPAND_LOOP_UP_TO rows: a master with 8 workers of 1k
    tasks each opens the first loops only, since Qt lays out every open row again when
    rows come and go (a 65 ms GUI stall a refresh with all 9k open)."""
    items = data.by_id.values()
    if len(data.by_id) <= EXPAND_ALL_UP_TO:
        return {item.id for item in items if item.children}
    opened: set[str] = set()
    budget = EXPAND_LOOP_UP_TO
    for item in items:
        if item.kind == "loop":
            if len(item.children) <= budget:
                opened.add(item.id)
                budget -= len(item.children)
        elif (
            item.kind == "process"
            or (item.kind == "thread" and any(c.kind == "loop" for c in item.children))
            or (item.kind == "child" and any(c.kind == "thread" for c in item.children))
        ):
            opened.add(item.id)  # a worker, the thread running a loop
    return opened
