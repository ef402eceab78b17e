"""System tab: what the process is, what it uses, exposed objects and its environment."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from PyQt6.QtCore import Qt
from PyQt6.QtGui import QColor
from PyQt6.QtWidgets import QAbstractItemView, QTreeWidget, QTreeWidgetItem, QWidget

from agent.schema import ChildInfo, ProcessInfo, ThreadInfo, WorkerExit
from observer.client import Node
from observer.format import EXPOSED, human_bytes, process_facts, thread_count
from observer.gui.delta import agent_now
from observer.gui.link import NodeLink
from observer.gui.tab import Tab, fill_sections
from observer.gui.workers import WORKERS, WorkerWatch, worker_section

ENVIRONMENT = "Environment (redacted)"
TARGET_ROLE = Qt.ItemDataRole.UserRole + 1
WORKER_ROLE = Qt.ItemDataRole.UserRole + 2  # a live worker's row: its WorkerRow


class ExposedInspector(Protocol):
    """What the System tab asks of the window: open an exposed object's inspect window,
    open a worker as a node of its own."""

    def inspect_exposed(self, link: NodeLink, name: str) -> QWidget: ...

    def open_worker(self, link: NodeLink, pid: int, name: str, started: float = 0.0) -> None: ...


class SystemTab(Tab):
    key = "system"
    title = "System"

    def __init__(self, inspector: ExposedInspector) -> None:
        super().__init__()
        self.inspector = inspector
        self.view = QTreeWidget()
        self.view.setColumnCount(2)
        self.view.setHeaderLabels(["Property", "Value"])
        self.view.setColumnWidth(0, 260)
        self.view.setAlternatingRowColors(True)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.view.itemActivated.connect(self._activated)
        self.layout_.addWidget(self.view)
        self._collapsed: set[str] = {ENVIRONMENT}
        self.view.itemCollapsed.connect(lambda item: self._collapsed.add(item.text(0)))
        self.view.itemExpanded.connect(lambda item: self._collapsed.discard(item.text(0)))
        self.info: ProcessInfo | None = None
        self.watch = WorkerWatch()  # the workers seen on this node: who exited
        self.agent_threads: int | None = None  # of info.num_threads, the agent's own

    def job(self) -> Callable[[Node], Any]:
        # the process, its children (the worker set) and threads (the agent's own marked)
        return lambda node: node.system()  # one round trip

    def clear(self) -> None:
        self.info = None
        self.agent_threads = None
        self.watch = WorkerWatch()
        self.view.clear()

    def apply(
        self,
        reply: tuple[
            ProcessInfo, tuple[ChildInfo, ...], tuple[WorkerExit, ...], tuple[ThreadInfo, ...]
        ],
    ) -> None:
        """Show the process, counting the host's threads apart from the agent's (marked
        in the thread list), as the Threads chart does, and its worker set (how the
        recent workers ended)."""
        info, children, exits, threads = reply
        self.info, self.agent_threads = info, sum(t.is_agent and t.alive for t in threads)
        sections = process_facts(info, self.agent_threads)
        workers = self.watch.update(children, agent_now(info), exits)
        starts = {c.pid: c.create_time for c in children}
        live = {f"pid {w.pid}": w for w in workers if not w.exited}
        if workers or self.watch.restarts:
            sections.append(worker_section(workers, self.watch.restarts))
        sections.append((ENVIRONMENT, [tuple(line.partition("=")[::2]) for line in info.environ]))

        def decorate(title: str, top: QTreeWidgetItem, row: QTreeWidgetItem) -> None:
            if title == ENVIRONMENT:
                top.setText(1, str(len(info.environ)))
            elif title == WORKERS and " · exited" in row.text(1):
                row.setForeground(1, QColor("#8c959f"))
            elif title == WORKERS and row.text(0) in live:
                worker = live[row.text(0)]
                row.setData(0, WORKER_ROLE, (worker.pid, worker.name, starts.get(worker.pid, 0.0)))
                row.setToolTip(0, "Double-click to open this worker (charts, memory, ...)")
            elif title == EXPOSED and info.exposed:
                row.setData(0, TARGET_ROLE, row.text(0))
                row.setToolTip(0, "Double-click to inspect")

        collapsed = set(self._collapsed)
        fill_sections(self.view, sections, collapsed, decorate)
        self._collapsed = collapsed

    def _activated(self, item: QTreeWidgetItem, _column: int) -> None:
        name = item.data(0, TARGET_ROLE)
        if name and self.link is not None:
            self.inspector.inspect_exposed(self.link, name)
        worker = item.data(0, WORKER_ROLE)
        if worker and self.link is not None:
            self.inspector.open_worker(self.link, *worker)

    def status_text(self) -> str:
        p = self.info
        if p is None:
            return ""
        return (
            f"pid {p.pid} · cpu {p.cpu_percent:.1f}% · rss {human_bytes(p.rss)} · "
            f"{thread_count(p, self.agent_threads)} threads · {p.num_tasks:,} tasks"
        )
