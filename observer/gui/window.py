"""The main window: node list, tabs, refresh timer, status bar, inspect and kill.

Only the visible tab of the selected node polls; the other nodes get a cheap ``hello``
ping so their lights and round-trip times stay current. On the Cluster tab every node
is asked for its overview instead, which doubles as that ping. Pings and overviews use a
short liveness timeout (the refresh interval), so a node that stops answering shows
"down" within two intervals; heavier tab requests keep the node's own timeout.

Node addresses that are DNS names become one node per resolved address, re-resolved
every ``resolve_every`` seconds off the GUI thread (``observer.gui.resolver``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

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
from observer.gui.nodedialog import AddNodeDialog, EditNodeDialog
from observer.gui.nodelist import NodeList, rtt_text
from observer.gui.resolver import Resolver
from observer.gui.source import SiteWindow
from observer.gui.tab import Tab
from observer.gui.tab_charts import ChartsTab
from observer.gui.tab_cluster import ClusterTab
from observer.gui.tab_memory import MemoryTab
from observer.gui.tab_processes import ProcessesTab
from observer.gui.tab_system import SystemTab
from observer.gui.tab_table import TableTab
from observer.nodesfile import NodeSpec, forget, load_nodes, remember
from observer.resolve import RESOLVE_EVERY, Change, expands

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
        self.named: dict[str, NodeSpec] = {}  # DNS names (host:port) -> the spec given
        self.resolver = Resolver(self)
        self.resolver.changed.connect(self._names_changed)
        self.resolve_every = RESOLVE_EVERY  # seconds between re-resolutions of the names
        self._resolved_at = time.monotonic()
        self._unanswered: set[str] = set()  # names not resolved yet (the window may land)
        self._dns_errors: dict[str, list[str]] = {}
        self.auto_landing = True  # open on the Cluster tab once there are several nodes
        self._landing = False
        self.setWindowTitle("runtime-observer")
        self.resize(1280, 800)

        self.nodes = NodeList()
        self.nodes.currentItemChanged.connect(lambda *_: self._node_selected())
        self.tabs = QTabWidget()
        self.cluster = ClusterTab(self)
        self.system = SystemTab(self)
        self.charts = ChartsTab(self)
        self.processes = ProcessesTab(self)
        self.table = TableTab(self)
        self.memory = MemoryTab(self)
        self.all_tabs: list[Tab] = [
            self.cluster,
            self.system,
            self.charts,
            self.processes,
            self.table,
            self.memory,
        ]
        for tab in self.all_tabs:
            self.tabs.addTab(tab, tab.title)
            tab.status_changed.connect(self._update_status)
        self.tabs.setCurrentWidget(self.system)  # one node: its System tab (see _land)
        self.tabs.currentChanged.connect(self._tab_changed)
        splitter = QSplitter()
        splitter.addWidget(self.nodes)
        splitter.addWidget(self.tabs)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([270, 1010])
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
        self.edit_action = file_menu.addAction(
            "&Edit node…", QKeySequence("Ctrl+E"), self.edit_current_node
        )
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
        bar.addAction(self.edit_action)
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

    def open_nodes(self, specs: list[NodeSpec]) -> None:
        """Show the nodes the window was started on; several land on the Cluster tab."""
        for spec in specs:
            self.add_spec(spec)
        self._land()

    def add_spec(self, spec: NodeSpec) -> NodeLink | None:
        """Show a node, or every address of a DNS name (those appear once resolved, off
        the GUI thread). Returns the node's link, None for a name."""
        if not expands(spec):
            return self.add_link(spec)
        self.named[spec.address] = spec
        self._unanswered.add(spec.address)
        self.resolver.add(spec)
        return None

    def add_link(self, spec: NodeSpec, origin: str = "") -> NodeLink:
        """Start showing one node at ``spec.address`` (connects in the background);
        ``origin`` is the DNS name it was resolved from."""
        link = NodeLink(spec, self)
        link.origin = origin
        link.changed.connect(lambda link=link: self._link_changed(link))
        self.links.append(link)
        item = self.nodes.add(link)
        if self.nodes.currentItem() is None:
            self.nodes.setCurrentItem(item)
        self.cluster.sync()
        self.ping(link)
        return link

    def add_node(self) -> None:
        """File > Add node: ask, connect, and remember if asked to."""
        dialog = AddNodeDialog(self)
        if dialog.exec() != AddNodeDialog.DialogCode.Accepted:
            return
        spec = dialog.spec()
        if dialog.remember.isChecked():
            self._save(remember, spec)
        link = self.add_spec(spec)
        if link is not None:
            self.nodes.setCurrentItem(self.nodes.item_of(link))

    def edit_current_node(self) -> None:
        """File > Edit node: name, token file, fingerprint/CA and role of the selected node
        (of its DNS name, for a resolved address), saved to the nodes file if asked."""
        link = self.current_link()
        if link is None:
            return
        name = self._name_of(link)
        original = self.named[name] if name else link.spec
        dialog = EditNodeDialog(original, self._remembered(original.address), self)
        if dialog.exec() != EditNodeDialog.DialogCode.Accepted:
            return
        spec = dialog.spec()
        if dialog.remember.isChecked():
            self._save(remember, spec)
        if name:
            self._drop_name(name)
            self.add_spec(spec)  # resolved again: each address comes back with the new spec
            return
        new = NodeLink(spec, self)
        new.changed.connect(lambda link=new: self._link_changed(link))
        self.links[self.links.index(link)] = new
        self.nodes.replace(link, new)
        self._close_link(link)
        self.cluster.sync()
        self._node_selected()
        self.ping(new)

    def remove_current_node(self) -> None:
        """File > Remove node: stop showing it (every address of its DNS name) and forget it."""
        link = self.current_link()
        if link is None:
            return
        name = self._name_of(link)
        if name:
            self._drop_name(name)
        else:
            self._drop_link(link)
        self._save(forget, name or link.spec.address)
        self._node_selected()

    def open_node(self, link: NodeLink) -> None:
        """Select ``link`` in the node list and show its System tab (Cluster double-click)."""
        item = self.nodes.item_of(link)
        if item is None:
            return
        self.nodes.setCurrentItem(item)
        self.tabs.setCurrentWidget(self.system)

    def _name_of(self, link: NodeLink) -> str:
        """The DNS name ``link`` stands for ('' for a node given by address)."""
        if link.origin:
            return link.origin
        return link.spec.address if link.spec.address in self.named else ""

    def _drop_name(self, name: str) -> None:
        self.named.pop(name, None)
        self._unanswered.discard(name)
        self._dns_errors.pop(name, None)
        self.resolver.remove(name)
        for link in [link for link in self.links if self._name_of(link) == name]:
            self._drop_link(link)
        self._show_dns_errors()

    def _drop_link(self, link: NodeLink) -> None:
        self.nodes.remove(link)
        self.links.remove(link)
        self._close_link(link)
        self.cluster.sync()

    def _close_link(self, link: NodeLink) -> None:
        for key, window in list(self.inspectors.items()):
            if window.link is link:
                window.close()
                self.inspectors.pop(key, None)
        link.close()

    def _remembered(self, address: str) -> bool:
        if self.nodes_file is None:
            return False
        try:
            return any(s.address == address for s in load_nodes(self.nodes_file))
        except ObserverError:
            return False

    def _save(self, change: Callable[[Path, Any], object], what: NodeSpec | str) -> None:
        """``remember(file, spec)`` or ``forget(file, address)``; a failure is shown."""
        if self.nodes_file is None:
            return
        try:
            change(self.nodes_file, what)
        except (OSError, ObserverError) as exc:
            self.statusBar().showMessage(f"could not save {self.nodes_file}: {exc}", 10000)

    # ------------------------------------------------------------ DNS names

    def resolve_now(self) -> None:
        """Resolve every DNS name again now (off the GUI thread); changes arrive later."""
        self._resolved_at = time.monotonic()
        self.resolver.resolve_all()

    def _names_changed(self, name: str, change: Change) -> None:
        """Apply one name's resolution (GUI thread): new addresses become nodes, addresses
        no longer listed are marked (kept, greyed), a stand-in gives way to the real ones."""
        spec = self.named.get(name)
        if spec is None:
            return
        for address in change.removed:
            for link in [k for k in self.links if self._name_of(k) == name]:
                if link.spec.address == address:
                    self._drop_link(link)
        for member in change.added:
            if member.address == name:  # not resolved yet: the name stands in, says why
                self.add_link(member)
                continue
            if spec.name:  # the same name on every address: say which one this is
                host = member.address.rsplit(":", 1)[0].strip("[]")
                member = replace(member, name=f"{spec.name}@{host}")
            self.add_link(member, name)
        now = time.time()
        for link in self.links:
            if link.origin != name:
                continue
            if link.spec.address in change.gone:
                link.gone_since = now
            elif link.spec.address in change.back:
                link.gone_since = 0.0
            else:
                continue
            self.nodes.update_link(link)
        self._dns_errors[name] = change.errors
        self._show_dns_errors()
        if name in self._unanswered:
            self._unanswered.discard(name)
            self._land()
        if self.current_tab() is self.cluster:
            self.cluster.refresh()
        if self.current_link() is None and self.links:
            self.nodes.setCurrentItem(self.nodes.item_of(self.links[0]))

    def _show_dns_errors(self) -> None:
        errors = [e for each in self._dns_errors.values() for e in each]
        self.cluster.banner.say("; ".join(errors))
        if errors:
            self.statusBar().showMessage(errors[-1], 10000)

    def _land(self) -> None:
        """Open on the Cluster tab when there are several nodes, unless a tab was chosen."""
        if not self.auto_landing or len(self.links) < 2:
            return
        if not self._unanswered:
            self.auto_landing = False  # only while the window opens, never later
        self._landing = True
        try:
            self.tabs.setCurrentWidget(self.cluster)
        finally:
            self._landing = False

    def current_link(self) -> NodeLink | None:
        return self.nodes.current_link()

    def show_tab(self, key: str) -> Tab:
        """Switch to a tab by its command-line name (cluster, system, charts, ...)."""
        self.auto_landing = False
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

    def _tab_changed(self, _index: int) -> None:
        if not self._landing:
            self.auto_landing = False  # the user (or --tab) chose
        self.refresh()

    def _link_changed(self, link: NodeLink) -> None:
        self.nodes.update_link(link)
        if self.chaos_dialog is not None:
            self.chaos_dialog.update_link(link)
        if self.current_tab() is self.cluster:
            self.cluster.redraw(link)
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

    def probe_timeout(self, link: NodeLink) -> float:
        """How long a ping or overview may take: the refresh interval, at least 1 s and
        at most the node's own timeout. A node silent that long is down."""
        interval = self.timer.interval() / 1000
        return min(max(interval, 1.0), link.spec.timeout)

    def tick(self) -> None:
        """The refresh timer: the visible tab of the selected node, pings for the rest
        (on the Cluster tab: every node's overview, which is its ping)."""
        if self.paused:
            return
        if self.named and time.monotonic() - self._resolved_at >= self.resolve_every:
            self.resolve_now()
        if self.current_tab() is self.cluster:
            self.cluster.refresh()
            return
        current = self.current_link()
        if current is not None:
            self.current_tab().refresh()
        for link in self.links:
            if link is not current:
                self.ping(link)

    def refresh(self) -> None:
        """Ctrl-R: refresh the visible tab now (and retry a down node at once)."""
        if self.current_tab() is self.cluster:  # every node is on screen: retry every one
            for each in self.links:
                if each.status is not Status.UP:
                    each.reconnect_now()
            self.cluster.refresh()
        link = self.current_link()
        if link is not None and self.current_tab() is not self.cluster:
            if link.status is not Status.UP:
                link.reconnect_now()
            self.current_tab().refresh()
        self._update_status()

    def ping(self, link: NodeLink) -> None:
        link.request("ping", lambda node: node.hello(), None, timeout=self.probe_timeout(link))

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
        self.resolver.close()
        for window in list(self.inspectors.values()):
            window.close()
        if self.chaos_dialog is not None:
            self.chaos_dialog.close()  # stops its run
        for link in self.links:
            link.close()
        super().closeEvent(event)
