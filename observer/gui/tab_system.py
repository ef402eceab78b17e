"""System tab: what the process is, what it uses, exposed objects and its environment."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from PyQt6.QtCore import Qt
from PyQt6.QtWidgets import QAbstractItemView, QTreeWidget, QTreeWidgetItem

from agent.schema import ProcessInfo
from observer.client import Node
from observer.format import human_bytes, human_seconds
from observer.gui.tab import Tab

if TYPE_CHECKING:
    from observer.gui.window import MainWindow

EXPOSED = "Exposed objects"
ENVIRONMENT = "Environment (redacted)"
TARGET_ROLE = Qt.ItemDataRole.UserRole + 1


def system_sections(p: ProcessInfo) -> list[tuple[str, list[tuple[str, str]]]]:
    """The tab's content as (section, [(key, value)]), Qt-free."""
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(p.start_time))
    gc_counts = " / ".join(map(str, p.gc_counts))
    gc_runs = " / ".join(map(str, p.gc_collections))
    return [
        (
            "Python",
            [
                ("Implementation", f"{p.implementation} {p.python_version}"),
                ("Executable", p.executable),
                ("argv", " ".join(p.cmdline)),
            ],
        ),
        (
            "Process",
            [
                ("Node", p.node),
                ("Host", p.host),
                ("PID", f"{p.pid} (parent {p.ppid})"),
                ("Name", p.name),
                ("Started", started),
                ("Uptime", human_seconds(p.uptime)),
                ("CPUs", str(p.cpu_count)),
            ],
        ),
        (
            "Resources",
            [
                ("CPU", f"{p.cpu_percent:.1f}%"),
                ("RSS", human_bytes(p.rss)),
                ("VMS", human_bytes(p.vms)),
                ("Threads", str(p.num_threads)),
                ("Event loops", str(p.num_loops)),
                ("Tasks", f"{p.num_tasks:,}"),
                ("Open fds", "n/a" if p.num_fds is None else str(p.num_fds)),
                (
                    "Connections",
                    "n/a (not permitted)" if p.num_connections is None else str(p.num_connections),
                ),
            ],
        ),
        (
            "Garbage collector",
            [
                ("Pending objects (gen 0/1/2)", gc_counts),
                ("Collections (gen 0/1/2)", gc_runs),
            ],
        ),
        (
            "Agent",
            [
                ("Version", p.agent_version),
                ("Protocol", str(p.protocol_version)),
                ("Your role", p.role),
            ],
        ),
    ]


class SystemTab(Tab):
    key = "system"
    title = "System"

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
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

    def job(self) -> Callable[[Node], Any]:
        return lambda node: node.process()

    def clear(self) -> None:
        self.info = None
        self.view.clear()

    def apply(self, value: ProcessInfo) -> None:
        self.info = value
        scroll = self.view.verticalScrollBar().value()
        collapsed = set(self._collapsed)
        self.view.setUpdatesEnabled(False)
        self.view.clear()
        sections = system_sections(value)
        exposed = [
            (
                e.name,
                f"{e.type}" + (f", size {e.size:,}" if e.size is not None else "") + f": {e.repr}",
            )
            for e in value.exposed
        ]
        sections.append((EXPOSED, exposed or [("(none)", "the host has not called agent.expose")]))
        sections.append((ENVIRONMENT, [tuple(line.partition("=")[::2]) for line in value.environ]))
        for title, rows in sections:
            top = QTreeWidgetItem([title, f"{len(rows)}" if title == ENVIRONMENT else ""])
            font = top.font(0)
            font.setBold(True)
            top.setFont(0, font)
            self.view.addTopLevelItem(top)
            for key, text in rows:
                child = QTreeWidgetItem([key, text])
                child.setToolTip(1, text[:2000])
                if title == EXPOSED and value.exposed:
                    child.setData(0, TARGET_ROLE, key)
                    child.setToolTip(0, "Double-click to inspect")
                top.addChild(child)
            top.setExpanded(title not in collapsed)
        self._collapsed = collapsed
        self.view.setUpdatesEnabled(True)
        self.view.verticalScrollBar().setValue(scroll)

    def _activated(self, item: QTreeWidgetItem, _column: int) -> None:
        name = item.data(0, TARGET_ROLE)
        if name and self.link is not None:
            self.window_.inspect_exposed(self.link, name)

    def status_text(self) -> str:
        p = self.info
        if p is None:
            return ""
        return (
            f"pid {p.pid} · cpu {p.cpu_percent:.1f}% · rss {human_bytes(p.rss)} · "
            f"{p.num_threads} threads · {p.num_tasks:,} tasks"
        )
