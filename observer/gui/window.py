"""The main window: node list, tabs, refresh timer, status bar, inspect and kill.

Only the visible tab of the selected node polls; the other nodes get a cheap ``hello``
ping so their lights and round-trip times stay current.
"""

from __future__ import annotations

import time
from pathlib import Path

from PyQt6.QtCore import QModelIndex, QPoint, Qt, QTimer, pyqtSignal
from PyQt6.QtGui import QAction, QActionGroup, QKeySequence, QShortcut
from PyQt6.QtWidgets import (
    QAbstractItemView,
    QLabel,
    QMainWindow,
    QMenu,
    QMessageBox,
    QSpinBox,
    QSplitter,
    QTabWidget,
    QToolBar,
)

from agent.schema import AllocationSite, ControlResult
from observer.errors import ObserverError
from observer.gui.actions import (
    VIEWER_REASON,
    ControlAction,
    actions_for,
    default_action,
    result_text,
)
from observer.gui.chaos_dialog import ChaosDialog
from observer.gui.inspect import InspectWindow
from observer.gui.link import NodeLink, Reply, Status
from observer.gui.models import ID_ROLE, KIND_ROLE, NAME_ROLE
from observer.gui.nodelist import AddNodeDialog, NodeList, rtt_text
from observer.gui.source import SiteWindow
from observer.gui.tab import Tab
from observer.gui.tab_charts import ChartsTab
from observer.gui.tab_memory import MemoryTab
from observer.gui.tab_processes import ProcessesTab
from observer.gui.tab_system import SystemTab
from observer.gui.tab_table import TableTab
from observer.nodesfile import NodeSpec, forget, remember

INTERVALS = (1, 2, 5, 10, 30, 60)
DEFAULT_INTERVAL = 2
SPINNER = "◐◓◑◒"
SPIN_AFTER = 0.25  # seconds a request may take before the spinner shows


class MainWindow(QMainWindow):
    """runtime-observer's window over any number of nodes."""

    control_done = pyqtSignal(object)  # ControlResult or Reply with an error (for tests)

    def __init__(self, nodes_file: Path | None = None) -> None:
        super().__init__()
        self.nodes_file = nodes_file
        self.links: list[NodeLink] = []
        self.inspectors: dict[tuple[int, str, str], InspectWindow | SiteWindow] = {}
        self.confirm_box: QMessageBox | None = None
        self.chaos_dialog: ChaosDialog | None = None
        self.paused = False
        self.setWindowTitle("runtime-observer")
        self.resize(1280, 800)

        self.nodes = NodeList()
        self.nodes.currentItemChanged.connect(lambda *_: self._node_selected())
        self.tabs = QTabWidget()
        self.system = SystemTab(self)
        self.charts = ChartsTab(self)
        self.processes = ProcessesTab(self)
        self.table = TableTab(self)
        self.memory = MemoryTab(self)
        self.all_tabs: list[Tab] = [
            self.system,
            self.charts,
            self.processes,
            self.table,
            self.memory,
        ]
        for tab in self.all_tabs:
            self.tabs.addTab(tab, tab.title)
            tab.status_changed.connect(self._update_status)
        self.tabs.currentChanged.connect(lambda _i: self.refresh())
        splitter = QSplitter()
        splitter.addWidget(self.nodes)
        splitter.addWidget(self.tabs)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([235, 1045])
        self.setCentralWidget(splitter)

        self.timer = QTimer(self)
        self.timer.timeout.connect(self.tick)
        self.spin_timer = QTimer(self)
        self.spin_timer.setInterval(120)
        self.spin_timer.timeout.connect(self._spin)
        self._spin_step = 0
        self._busy_since = 0.0
        self._build_menus()
        self._build_status_bar()
        self.set_interval(DEFAULT_INTERVAL)
        self._update_status()

    # ------------------------------------------------------------ layout

    def _build_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        self.add_action = file_menu.addAction("&Add node…", QKeySequence("Ctrl+N"), self.add_node)
        self.remove_action = file_menu.addAction("&Remove node", self.remove_current_node)
        file_menu.addSeparator()
        file_menu.addAction("&Quit", QKeySequence("Ctrl+Q"), self.close)

        view = self.menuBar().addMenu("&View")
        self.refresh_action = view.addAction("&Refresh now", QKeySequence("Ctrl+R"), self.refresh)
        self.pause_action = view.addAction("&Pause refreshing", QKeySequence("Ctrl+P"))
        self.pause_action.setCheckable(True)
        self.pause_action.toggled.connect(self.set_paused)
        interval_menu = view.addMenu("Refresh &interval")
        group = QActionGroup(self)
        group.setExclusionPolicy(QActionGroup.ExclusionPolicy.ExclusiveOptional)  # 3 s: none
        self.interval_actions: dict[int, QAction] = {}
        for seconds in INTERVALS:
            action = interval_menu.addAction(f"{seconds} s")
            action.setCheckable(True)
            action.triggered.connect(lambda _c=False, s=seconds: self.set_interval(s))
            group.addAction(action)
            self.interval_actions[seconds] = action
        view.addSeparator()
        for number, tab in enumerate(self.all_tabs, 1):
            view.addAction(
                tab.title.replace("&&", "&"),
                QKeySequence(f"Ctrl+{number}"),
                lambda t=tab: self.tabs.setCurrentWidget(t),
            )
        tools = self.menuBar().addMenu("&Tools")
        self.chaos_action = tools.addAction("&Chaos…", QKeySequence("Ctrl+K"), self.open_chaos)
        QShortcut(QKeySequence("Ctrl+F"), self, activated=lambda: self.current_tab().focus_filter())

        bar = QToolBar("Main")
        bar.setMovable(False)
        bar.addAction(self.add_action)
        bar.addAction(self.remove_action)
        bar.addSeparator()
        bar.addAction(self.refresh_action)
        bar.addAction(self.pause_action)
        bar.addWidget(QLabel(" every "))
        self.interval_box = QSpinBox()
        self.interval_box.setRange(1, 60)
        self.interval_box.setSuffix(" s")
        self.interval_box.valueChanged.connect(self.set_interval)
        bar.addWidget(self.interval_box)
        self.addToolBar(bar)

    def _build_status_bar(self) -> None:
        status = self.statusBar()
        self.spinner = QLabel()
        self.spinner.setMinimumWidth(14)
        self.node_label = QLabel()
        self.refresh_label = QLabel()
        self.counts_label = QLabel()
        status.addPermanentWidget(self.spinner)
        status.addPermanentWidget(self.node_label)
        status.addPermanentWidget(self.refresh_label)
        status.addPermanentWidget(self.counts_label)

    # ------------------------------------------------------------ nodes

    def add_link(self, spec: NodeSpec) -> NodeLink:
        """Start showing a node (connects in the background)."""
        link = NodeLink(spec, self)
        link.changed.connect(lambda link=link: self._link_changed(link))
        self.links.append(link)
        item = self.nodes.add(link)
        if self.nodes.currentItem() is None:
            self.nodes.setCurrentItem(item)
        self.ping(link)
        return link

    def add_node(self) -> None:
        """File > Add node: ask, connect, and remember if asked to."""
        dialog = AddNodeDialog(self)
        if dialog.exec() != AddNodeDialog.DialogCode.Accepted:
            return
        spec = dialog.spec()
        if dialog.remember.isChecked() and self.nodes_file is not None:
            try:
                remember(self.nodes_file, spec)
            except (OSError, ObserverError) as exc:
                self.statusBar().showMessage(f"could not save {self.nodes_file}: {exc}", 10000)
        link = self.add_link(spec)
        self.nodes.setCurrentItem(self.nodes.item_of(link))

    def remove_current_node(self) -> None:
        link = self.current_link()
        if link is None:
            return
        item = self.nodes.item_of(link)
        if item is not None:
            self.nodes.takeTopLevelItem(self.nodes.indexOfTopLevelItem(item))
        self.links.remove(link)
        for key, window in list(self.inspectors.items()):
            if window.link is link:
                window.close()
                self.inspectors.pop(key, None)
        link.close()
        if self.nodes_file is not None:
            try:
                forget(self.nodes_file, link.spec.address)
            except (OSError, ObserverError) as exc:
                self.statusBar().showMessage(f"could not save {self.nodes_file}: {exc}", 10000)
        self._node_selected()

    def current_link(self) -> NodeLink | None:
        return self.nodes.current_link()

    def show_tab(self, key: str) -> Tab:
        """Switch to a tab by its command-line name (system, charts, processes, table)."""
        for tab in self.all_tabs:
            if tab.key == key:
                self.tabs.setCurrentWidget(tab)
                return tab
        raise ValueError(f"no tab {key!r}: choose from {', '.join(t.key for t in self.all_tabs)}")

    def current_tab(self) -> Tab:
        widget = self.tabs.currentWidget()
        assert isinstance(widget, Tab)
        return widget

    def _node_selected(self) -> None:
        link = self.current_link()
        for tab in self.all_tabs:
            tab.set_link(link)
        self.setWindowTitle(f"runtime-observer - {link.label}" if link else "runtime-observer")
        self.refresh()

    def _link_changed(self, link: NodeLink) -> None:
        self.nodes.update_link(link)
        if link is self.current_link():
            self.setWindowTitle(f"runtime-observer - {link.label}")
            self._update_status()
            if link.busy and not self.spin_timer.isActive():
                self._busy_since = time.monotonic()
                self.spin_timer.start()

    # ------------------------------------------------------------ refreshing

    def set_interval(self, seconds: int) -> None:
        """View > Refresh interval (1-60 s)."""
        seconds = max(1, min(60, int(seconds)))
        self.timer.start(seconds * 1000)
        if self.interval_box.value() != seconds:
            self.interval_box.setValue(seconds)
        action = self.interval_actions.get(seconds)
        if action is not None:
            action.setChecked(True)
        else:
            for other in self.interval_actions.values():
                other.setChecked(False)

    def set_paused(self, paused: bool) -> None:
        self.paused = paused
        if self.pause_action.isChecked() != paused:
            self.pause_action.setChecked(paused)
        self._update_status()

    def tick(self) -> None:
        """The refresh timer: the visible tab of the selected node, pings for the rest."""
        if self.paused:
            return
        current = self.current_link()
        if current is not None:
            self.current_tab().refresh()
        for link in self.links:
            if link is not current:
                self.ping(link)

    def refresh(self) -> None:
        """Ctrl-R: refresh the visible tab now (and retry a down node at once)."""
        link = self.current_link()
        if link is not None:
            if link.status is not Status.UP:
                link.reconnect_now()
            self.current_tab().refresh()
        self._update_status()

    def ping(self, link: NodeLink) -> None:
        link.request("ping", lambda node: node.hello(), None)

    # ------------------------------------------------------------ status bar

    def _update_status(self) -> None:
        link = self.current_link()
        tab = self.current_tab()
        if link is None:
            self.node_label.setText("no node: File > Add node… (Ctrl-N)")
            self.refresh_label.setText("")
            self.counts_label.setText("")
            return
        state = link.status.value
        role = f", {link.role}" if link.role else ""
        self.node_label.setText(f"{link.label} ({link.spec.address}): {state}{role}")
        parts = []
        if tab.last_applied:
            age = time.time() - tab.last_applied
            stale = " (stale)" if link.status is not Status.UP else ""
            stamp = time.strftime("%H:%M:%S", time.localtime(tab.last_applied))
            parts.append(f"refreshed {stamp}{stale}" if age < 3600 else "refreshed long ago")
        if link.rtt is not None:
            parts.append(f"rtt {rtt_text(link.rtt)}")
        if self.paused:
            parts.append("PAUSED")
        self.refresh_label.setText(" · ".join(parts))
        self.counts_label.setText(tab.status_text())

    def _spin(self) -> None:
        link = self.current_link()
        if link is None or not link.busy:
            self.spin_timer.stop()
            self.spinner.setText("")
            return
        if time.monotonic() - self._busy_since >= SPIN_AFTER:
            self._spin_step = (self._spin_step + 1) % len(SPINNER)
            self.spinner.setText(SPINNER[self._spin_step])
            self.spinner.setToolTip(f"waiting for {link.label}")

    # ------------------------------------------------------------ rows: inspect and control

    def install_target_view(self, view: QAbstractItemView) -> None:
        """Double-click/Enter inspects, the context menu and Delete act on the row."""
        view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        view.customContextMenuRequested.connect(lambda pos, v=view: self._context_menu(v, pos))
        view.activated.connect(self._activated)
        shortcut = QShortcut(QKeySequence(QKeySequence.StandardKey.Delete), view)
        shortcut.setContext(Qt.ShortcutContext.WidgetShortcut)
        shortcut.activated.connect(lambda v=view: self._delete_pressed(v))

    @staticmethod
    def _row(index: QModelIndex) -> tuple[str, str, str] | None:
        if not index.isValid():
            return None
        index = index.siblingAtColumn(0)
        return index.data(ID_ROLE), index.data(KIND_ROLE), index.data(NAME_ROLE)

    def _activated(self, index: QModelIndex) -> None:
        row = self._row(index)
        link = self.current_link()
        if row is not None and link is not None and row[1] in ("task", "thread"):
            self.inspect(link, row[0], row[1], row[2])

    def _context_menu(self, view: QAbstractItemView, pos: QPoint) -> None:
        row = self._row(view.indexAt(pos))
        link = self.current_link()
        if row is None or link is None:
            return
        menu = self.row_menu(link, *row)
        if not menu.isEmpty():
            menu.exec(view.viewport().mapToGlobal(pos))

    def row_menu(self, link: NodeLink, target: str, kind: str, name: str) -> QMenu:
        """Inspect and the control actions for one row (disabled, with why, for viewers)."""
        menu = QMenu(self)
        menu.setToolTipsVisible(True)
        if kind in ("task", "thread"):
            menu.addAction("Inspect", lambda: self.inspect(link, target, kind, name))
        actions = actions_for(kind)
        if actions and not menu.isEmpty():
            menu.addSeparator()
        for action in actions:
            entry = menu.addAction(
                action.label, lambda a=action: self.confirm_control(link, a, target, name)
            )
            if action.default:
                entry.setShortcut(QKeySequence(QKeySequence.StandardKey.Delete))
            if not link.can_control:
                entry.setEnabled(False)
                entry.setToolTip(VIEWER_REASON)
        return menu

    def _delete_pressed(self, view: QAbstractItemView) -> None:
        row = self._row(view.currentIndex())
        link = self.current_link()
        if row is None or link is None:
            return
        action = default_action(row[1])
        if action is None:
            return
        if not link.can_control:
            self.statusBar().showMessage(VIEWER_REASON, 10000)
            return
        self.confirm_control(link, action, row[0], row[2])

    def confirm_control(
        self, link: NodeLink, action: ControlAction, target: str, name: str
    ) -> QMessageBox:
        """Ask before acting; the dialog names the action, the target and the node."""
        title, text = action.confirmation(target, name, f"{link.label} ({link.spec.address})")
        box = QMessageBox(QMessageBox.Icon.Warning, title, text, parent=self)
        box.setStandardButtons(QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)
        box.button(QMessageBox.StandardButton.Yes).setText(action.label)

        def answered(code: int) -> None:
            self.confirm_box = None
            if box.clickedButton() is box.button(QMessageBox.StandardButton.Yes):
                self.run_control(link, action, target)

        box.finished.connect(answered)
        self.confirm_box = box
        box.open()
        return box

    def run_control(self, link: NodeLink, action: ControlAction, target: str) -> None:
        self.statusBar().showMessage(f"{link.label}: {action.label.lower()} {target}…")

        def done(reply: Reply) -> None:
            if reply.ok:
                result: ControlResult = reply.value
                self.statusBar().showMessage(result_text(result, link.label), 15000)
                self.control_done.emit(result)
            else:
                self.statusBar().showMessage(f"{link.label}: {reply.error}", 15000)
                self.control_done.emit(reply)
            if link is self.current_link():
                self.current_tab().refresh()  # the replacement shows up without waiting

        link.request(f"control:{target}", lambda node: action.run(node, target), done)

    def inspect(self, link: NodeLink, target: str, kind: str, name: str) -> InspectWindow:
        """Open (or raise and refresh) the inspect window of a task, thread or exposed object."""
        key = (id(link), kind, target)
        window = self.inspectors.get(key)
        if window is None:
            window = InspectWindow(self, link, target, kind, name)
            self.inspectors[key] = window
        else:
            window.refresh()
        window.show()
        window.raise_()
        window.activateWindow()
        return window

    def inspect_exposed(self, link: NodeLink, name: str) -> InspectWindow:
        return self.inspect(link, name, "exposed", name)

    def inspect_site(self, link: NodeLink, site: AllocationSite) -> SiteWindow:
        """Open (or raise) the window on an allocation site: its traceback and source."""
        key = (id(link), "site", f"{site.file}:{site.line}:{'|'.join(site.traceback)}")
        window = self.inspectors.get(key)
        if isinstance(window, SiteWindow):
            window.show_site(site)
        else:
            window = SiteWindow(self, link, site)
            self.inspectors[key] = window
        window.show()
        window.raise_()
        window.activateWindow()
        return window

    def inspect_closed(self, window: InspectWindow | SiteWindow) -> None:
        for key, other in list(self.inspectors.items()):
            if other is window:
                del self.inspectors[key]

    def open_chaos(self) -> ChaosDialog:
        """Tools > Chaos… (Ctrl+K): the chaos dialog over this window's nodes, non-modal."""
        if self.chaos_dialog is None:
            self.chaos_dialog = ChaosDialog(self)
        self.chaos_dialog.set_links(self.links, self.current_link())
        self.chaos_dialog.show()
        self.chaos_dialog.raise_()
        self.chaos_dialog.activateWindow()
        return self.chaos_dialog

    # ------------------------------------------------------------ lifecycle

    def closeEvent(self, event) -> None:  # type: ignore[no-untyped-def]
        self.timer.stop()
        for window in list(self.inspectors.values()):
            window.close()
        if self.chaos_dialog is not None:
            self.chaos_dialog.close()  # stops its run
        for link in self.links:
            link.close()
        super().closeEvent(event)
