"""The main window: node list, tabs, menus, refresh timer and status bar.

Only the visible tab of the selected node polls; the other nodes get a cheap ``hello``
ping so their lights and round-trip times stay current. On the Cluster tab every node
is asked for its overview instead, which doubles as that ping. Pings and overviews use a
short liveness timeout (the refresh interval), so a node that stops answering shows
"down" within two intervals; heavier tab requests keep the node's own timeout.

Which nodes there are is ``observer.gui.nodeset``'s job (DNS names, the nodes file);
what can be done to a row's target is ``observer.gui.targets``'s (inspect, kill); the
node list's width is ``observer.gui.panewidth``'s. The tabs see neither this class nor
those: each takes a small protocol of what it uses.
"""

from __future__ import annotations

import time
from pathlib import Path

from PyQt6.QtCore import QPoint, Qt, QTimer
from PyQt6.QtGui import QAction, QActionGroup, QKeySequence, QShortcut
from PyQt6.QtWidgets import (
    QLabel,
    QMainWindow,
    QMenu,
    QSpinBox,
    QSplitter,
    QTabWidget,
    QToolBar,
)

from observer.gui.chaos_dialog import ChaosDialog
from observer.gui.link import NodeLink, Reply, Status
from observer.gui.nodedialog import AddNodeDialog, EditNodeDialog
from observer.gui.nodelist import LINK_ROLE, NodeList, rtt_text
from observer.gui.nodeset import NodeSet
from observer.gui.panewidth import PaneWidth
from observer.gui.tab import Tab
from observer.gui.tab_charts import ChartsTab
from observer.gui.tab_cluster import ClusterTab
from observer.gui.tab_memory import MemoryTab
from observer.gui.tab_processes import ProcessesTab
from observer.gui.tab_profile import ProfileTab
from observer.gui.tab_stalls import StallsTab
from observer.gui.tab_system import SystemTab
from observer.gui.tab_table import TableTab
from observer.gui.targets import Targets
from observer.gui.workerlink import WorkerHealth, pick_worker, worker_label
from observer.nodesfile import NodeSpec

INTERVALS = (1, 2, 5, 10, 30, 60)
DEFAULT_INTERVAL = 2
SPINNER = "◐◓◑◒"
SPIN_AFTER = 0.25  # seconds a request may take before the spinner shows


class MainWindow(QMainWindow):
    """runtime-observer's window over any number of nodes."""

    def __init__(self, nodes_file: Path | None = None) -> None:
        super().__init__()
        self.nodes_file = nodes_file
        self.node_set = NodeSet(nodes_file, self)
        self.targets = Targets(self, self.current_link, self._say, self._acted, self.open_worker)
        self.chaos_dialog: ChaosDialog | None = None
        self.paused = False
        self.auto_landing = True  # open on the Cluster tab once there are several nodes
        self._landing = False
        self.setWindowTitle("runtime-observer")
        self.resize(1280, 800)

        self.nodes = NodeList()
        self.nodes.currentItemChanged.connect(lambda *_: self._node_selected())
        self.tabs = QTabWidget()
        self.cluster = ClusterTab(self)
        self.system = SystemTab(self.targets)
        self.charts = ChartsTab()
        self.processes = ProcessesTab(self.targets)
        self.table = TableTab(self.targets)
        self.memory = MemoryTab(self.targets)
        self.stalls = StallsTab(self.targets)
        self.profile = ProfileTab()
        self.all_tabs: list[Tab] = [
            self.cluster,
            self.system,
            self.charts,
            self.processes,
            self.table,
            self.memory,
            self.stalls,
            self.profile,
        ]
        for tab in self.all_tabs:
            self.tabs.addTab(tab, tab.title)
            tab.status_changed.connect(self._update_status)
        self.tabs.setCurrentWidget(self.system)  # one node: its System tab (see _land)
        self.tabs.currentChanged.connect(self._tab_changed)
        self.splitter = QSplitter()
        self.splitter.addWidget(self.nodes)
        self.splitter.addWidget(self.tabs)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setCollapsible(0, False)
        self.setCentralWidget(self.splitter)
        self.pane = PaneWidth(self.splitter, self.nodes, nodes_file)

        node_set = self.node_set
        node_set.added.connect(self._link_added)
        node_set.removed.connect(self._link_removed)
        node_set.replaced.connect(self._link_replaced)
        node_set.link_changed.connect(self._link_changed)
        node_set.marked.connect(self.nodes.update_link)
        node_set.resolved.connect(self._name_resolved)
        node_set.dns_errors.connect(self._show_dns_errors)
        node_set.save_failed.connect(lambda text: self._say(text, 10000))
        node_set.worker_added.connect(self._worker_added)
        self.nodes.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.nodes.customContextMenuRequested.connect(self._node_menu)
        self.wanted_worker: tuple[NodeLink, str] | None = None  # --worker, until opened

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

    @property
    def links(self) -> list[NodeLink]:
        """Every node of the window, in order (the node set's list)."""
        return self.node_set.links

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

    def node_list_width(self) -> int:
        return self.pane.width()

    # ------------------------------------------------------------ nodes

    def open_nodes(self, specs: list[NodeSpec]) -> None:
        """Show the nodes the window was started on; several land on the Cluster tab."""
        for spec in specs:
            self.node_set.add_spec(spec)
        self._land()

    def add_spec(self, spec: NodeSpec) -> NodeLink | None:
        """Show a node, or every address of a DNS name (see ``NodeSet.add_spec``)."""
        return self.node_set.add_spec(spec)

    def add_link(self, spec: NodeSpec, origin: str = "") -> NodeLink:
        """Show one node at ``spec.address`` (it connects in the background)."""
        return self.node_set.add_link(spec, origin)

    def add_node(self) -> None:
        """File > Add node: ask, connect, and remember if asked to."""
        dialog = AddNodeDialog(self)
        if dialog.exec() != AddNodeDialog.DialogCode.Accepted:
            return
        spec = dialog.spec()
        if dialog.remember.isChecked():
            self.node_set.remember(spec)
        link = self.node_set.add_spec(spec)
        if link is not None:
            self.nodes.setCurrentItem(self.nodes.item_of(link))

    def edit_current_node(self) -> None:
        """File > Edit node: name, token file, fingerprint/CA and role of the selected node
        (of its DNS name, for a resolved address), saved to the nodes file if asked."""
        link = self.current_link()
        if link is None:
            return
        link = self.node_set.host_of(link) or link  # an opened worker: its master's settings
        original = self.node_set.given_spec(link)
        dialog = EditNodeDialog(original, self.node_set.remembered(original.address), self)
        if dialog.exec() != EditNodeDialog.DialogCode.Accepted:
            return
        spec = dialog.spec()
        if dialog.remember.isChecked():
            self.node_set.remember(spec)
        self.node_set.edit(link, spec)

    def remove_current_node(self) -> None:
        """File > Remove node: stop showing it (every address of its DNS name) and forget it."""
        link = self.current_link()
        if link is None:
            return
        if self.node_set.host_of(link) is not None:  # an opened worker: just close it
            self.node_set.close_worker(link)
            return
        self.node_set.remove(link)
        self._node_selected()

    def open_node(self, link: NodeLink) -> None:
        """Select ``link`` in the node list and show its System tab (Cluster double-click)."""
        item = self.nodes.item_of(link)
        if item is None:
            return
        self.nodes.setCurrentItem(item)
        self.tabs.setCurrentWidget(self.system)

    def _link_added(self, link: NodeLink) -> None:
        item = self.nodes.add(link)
        if self.nodes.currentItem() is None:
            self.nodes.setCurrentItem(item)
        self.cluster.sync()
        self.ping(link)

    def _link_removed(self, link: NodeLink) -> None:
        current = self.current_link()
        self.nodes.remove(link)
        self.targets.close_for(link)
        self.cluster.sync()
        if link is current:  # Qt picks a neighbour, or none: show what is selected now
            self._node_selected()

    # ------------------------------------------------------------ workers as nodes

    def open_worker(self, host: NodeLink, pid: int, name: str, started: float = 0.0) -> None:
        """Open worker ``pid`` of ``host`` as an entry under it in the node list, selected
        (Processes, System and Cluster tabs: "Open worker"); its tabs read the worker
        through the host's session."""
        host = self.node_set.host_of(host) or host  # a worker's worker is its master's
        link = self.node_set.open_worker(host, pid, name, started)
        item = self.nodes.item_of(link)
        if item is not None:
            self.nodes.setCurrentItem(item)
        if self.current_tab() is self.cluster:
            self.tabs.setCurrentWidget(self.system)

    def _worker_added(self, host: NodeLink, link: NodeLink) -> None:
        self.nodes.add_worker(host, link)
        self.ping(link)

    def _node_menu(self, pos: QPoint) -> None:
        item = self.nodes.itemAt(pos)
        link = item.data(0, LINK_ROLE) if item is not None else None
        if link is None:
            return
        menu = self.node_menu(link)
        if not menu.isEmpty():
            menu.exec(self.nodes.viewport().mapToGlobal(pos))

    def node_menu(self, link: NodeLink) -> QMenu:
        """An opened worker's entry: open the worker that replaced it, close it."""
        menu = QMenu(self)
        health = link.health
        if not isinstance(health, WorkerHealth):
            return menu
        new = health.replaced_by
        if new is not None:
            host = self.node_set.host_of(link)
            label = worker_label(new.name, new.pid)
            if host is not None:
                menu.addAction(
                    f"Open replacement: {label}",
                    lambda: self.open_worker(host, new.pid, new.name, new.create_time),
                )
        elif health.exited:
            entry = menu.addAction("Open replacement: none yet")
            entry.setEnabled(False)
        menu.addAction("Close worker", lambda: self.node_set.close_worker(link))
        return menu

    def open_worker_when_up(self, which: str) -> None:
        """``observer gui NODE --worker PID|N|NAME``: once the first node lists its
        workers, open the one ``which`` names (observer.gui.workerlink.pick_worker)."""
        if not self.links:
            return
        host = self.links[0]
        self.wanted_worker = (host, which)

        def opened(reply: Reply) -> None:
            self.wanted_worker = None
            if reply.ok:
                child = reply.value
                self.open_worker(host, child.pid, child.name, child.create_time)
            else:
                self._say(f"{host.label}: {reply.error}", 15000)
                self.current_tab().show_error(reply)

        host.request("open-worker", lambda node: pick_worker(node.children(), which), opened)

    def _link_replaced(self, old: NodeLink, new: NodeLink) -> None:
        self.nodes.replace(old, new)
        self.targets.close_for(old)
        self.cluster.sync()
        self._node_selected()
        self.ping(new)

    def _name_resolved(self, _name: str, first: bool) -> None:
        if first:
            self._land()
        if self.current_tab() is self.cluster:
            self.cluster.refresh()
        if self.current_link() is None and self.links:
            self.nodes.setCurrentItem(self.nodes.item_of(self.links[0]))

    def _show_dns_errors(self, errors: list[str]) -> None:
        self.cluster.banner.say("; ".join(errors))
        if errors:
            self._say(errors[-1], 10000)

    def _land(self) -> None:
        """Open on the Cluster tab when there are several nodes, unless a tab was chosen."""
        if not self.auto_landing or len(self.links) < 2:
            return
        if not self.node_set.unanswered:
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
        self.node_set.resolve_if_due()
        if self.current_tab() is self.cluster:
            self.cluster.refresh()
            return
        current = self.current_link()
        if current is not None:
            self.current_tab().refresh()
        for link in self.node_set.all_links():  # opened workers too: who exited shows
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
        if isinstance(link.health, WorkerHealth) and link.health.exited:
            state = "exited"
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

    def _say(self, text: str, msecs: int = 0) -> None:
        self.statusBar().showMessage(text, msecs)

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

    # ------------------------------------------------------------ rows and tools

    def _acted(self, link: NodeLink) -> None:
        """A control action on ``link`` answered: show its replacement without waiting."""
        if link is self.current_link():
            self.current_tab().refresh()

    def open_chaos(self) -> ChaosDialog:
        """Tools > Chaos… (Ctrl+K): the chaos dialog over this window's nodes, non-modal."""
        if self.chaos_dialog is None:
            self.chaos_dialog = ChaosDialog(self)
        current = self.current_link()
        if current is not None:  # an opened worker: its master, where chaos runs
            current = self.node_set.host_of(current) or current
        self.chaos_dialog.set_links(self.links, current)
        self.chaos_dialog.show()
        self.chaos_dialog.raise_()
        self.chaos_dialog.activateWindow()
        return self.chaos_dialog

    # ------------------------------------------------------------ lifecycle

    def closeEvent(self, event) -> None:  # type: ignore[no-untyped-def]
        self.timer.stop()
        if self.pane.save_timer.isActive():
            self.pane.save()
        self.targets.close_for(None)
        if self.chaos_dialog is not None:
            self.chaos_dialog.close()  # stops its run
        self.node_set.close()
        super().closeEvent(event)
