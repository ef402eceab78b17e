"""Cluster tab: every node of the window in one sortable table, each row live on its own.

A refresh asks every node for its ``overview()`` (one round trip: identity, load now and
the history samples the row's sparkline lacks) with the window's short liveness timeout.
A node whose previous overview is still running is not asked again, and each row is
redrawn when its own reply arrives, so one slow or frozen node never holds the others
back. While this tab is visible these overviews are the window's liveness pings.

Rows of nodes that are not up keep their last figures, greyed, with the age of that data
("data 12s old"), recomputed every tick from cache. Double-click or Enter on a row opens
that node on the System tab; its context menu opens the node's Prometheus metrics URL.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from PyQt6.QtCore import QModelIndex, QPoint, QSortFilterProxyModel, Qt, QUrl
from PyQt6.QtGui import QDesktopServices
from PyQt6.QtWidgets import (
    QAbstractItemView,
    QMenu,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTreeView,
)

from agent.schema import Overview
from observer.client import Node
from observer.fleet import Trend
from observer.gui.cluster import (
    LINK_ROLE,
    NODE,
    NOTE,
    SORT_ROLE,
    TREND,
    ClusterModel,
    SparkDelegate,
)
from observer.gui.columns import ColumnFitter
from observer.gui.link import NodeLink, Reply, Status
from observer.gui.tab import Tab
from observer.gui.workers import WorkerRow, WorkerWatch, cluster_workers, with_load

OPEN_HOSTS_UP_TO = 8  # nodes: in a window this small a host's workers show without a click
SPARK_WIDTH = 76  # px of the CPU trend column: its sparkline has no text to measure


class EndElided(QStyledItemDelegate):
    """Cuts a cell's text at its end ("did not answer wi…"), where the view cuts in the
    middle (which keeps an address's port)."""

    def initStyleOption(self, option: QStyleOptionViewItem | None, index: QModelIndex) -> None:
        super().initStyleOption(option, index)
        if option is not None:
            option.textElideMode = Qt.TextElideMode.ElideRight


class Fleet(Protocol):
    """What the Cluster tab asks of the window: its nodes, how long a liveness call may
    take, and opening one node."""

    @property
    def links(self) -> Sequence[NodeLink]:
        """Every node of the window, in the window's order."""
        ...

    def probe_timeout(self, link: NodeLink) -> float:
        """Seconds an overview may take before the node counts as down."""
        ...

    def open_node(self, link: NodeLink) -> None:
        """Select ``link`` and show it on its System tab."""
        ...

    def open_worker(self, host: NodeLink, pid: int, name: str, started: float = 0.0) -> None:
        """Open a worker of ``host`` as a node of its own and show it."""
        ...


class ClusterTab(Tab):
    key = "cluster"
    title = "Cluster"

    def __init__(self, fleet: Fleet) -> None:
        super().__init__()
        self.fleet = fleet
        self.model = ClusterModel(self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(SORT_ROLE)
        self.proxy.setDynamicSortFilter(True)
        self.view = QTreeView()  # a host row expands to its workers
        self.view.setModel(self.proxy)
        self.view.setUniformRowHeights(True)
        self.view.expanded.connect(lambda index: self._expanded_changed(index, True))
        self.view.collapsed.connect(lambda index: self._expanded_changed(index, False))
        self.view.setSortingEnabled(True)
        self.view.sortByColumn(-1, Qt.SortOrder.AscendingOrder)  # the window's order first
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.view.setAlternatingRowColors(True)
        self.view.setWordWrap(False)
        self.view.setTextElideMode(Qt.TextElideMode.ElideMiddle)  # keeps an address's port
        self.view.setItemDelegateForColumn(TREND, SparkDelegate(self.view))
        header = self.view.header()
        header.setStretchLastSection(True)
        header.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        self.view.setItemDelegateForColumn(NOTE, EndElided(self.view))  # read from its start
        self.columns = ColumnFitter(self.view, first=(NODE,), fixed={TREND: SPARK_WIDTH})
        self.view.activated.connect(self._activated)  # double-click, or Enter
        self.view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.view.customContextMenuRequested.connect(self._menu)
        self.open_url: Callable[[QUrl], Any] = QDesktopServices.openUrl  # the browser
        self.metrics_message = ""  # what the last "Open metrics" came to
        self.layout_.addWidget(self.view)
        self.trends: dict[NodeLink, Trend] = {}
        self._answered: set[NodeLink] = set()  # nodes that answered (or failed) once
        self._ok: set[NodeLink] = set()  # nodes that answered with data once
        self.watches: dict[NodeLink, WorkerWatch] = {}  # each host's workers, exited kept
        self.open_hosts: set[NodeLink] = set()  # expanded: their workers' own load is read
        self._opened_once: set[NodeLink] = set()  # hosts expanded for the user already

    # ------------------------------------------------------------ driven by the window

    def set_link(self, link: NodeLink | None) -> None:
        """The selected node does not change what this tab shows (every node)."""
        self.link = link

    def refresh(self) -> None:
        """Ask every node not already being asked for its overview; redraw every row."""
        self.sync()
        for link in self.fleet.links:
            if link.running(self.key):
                continue  # the last one has not answered: never pile up on a slow node
            trend = self.trends[link]
            since = trend.since
            link.request(
                self.key,
                lambda node, since=since: node.overview(since),
                self._on_reply,
                timeout=self.fleet.probe_timeout(link),
            )
        self.redraw()

    def sync(self) -> None:
        """One row (and one Trend) per node of the window, in the window's order."""
        links = list(self.fleet.links)
        for link in links:
            if link not in self.trends:
                self.trends[link] = Trend()
        gone = set(self.trends) - set(links)
        for link in gone:
            del self.trends[link]
            self.watches.pop(link, None)
            self._opened_once.discard(link)
            self.open_hosts.discard(link)
            self._answered.discard(link)
            self._ok.discard(link)
        self.model.set_links(links)
        if gone:
            self.columns.reset()  # a long name may have left with its node
        self.columns.fit_later()

    def redraw(self, link: NodeLink | None = None) -> None:
        """Recompute rows from cache (ages, status, DNS): one node's, or everyone's."""
        for each in [link] if link is not None else list(self.trends):
            trend = self.trends.get(each)
            if trend is not None:
                self.model.update(each, trend.row(each.health, each.origin, each.gone_since))
        self.columns.fit_later()  # names in full first, then the rest fairly
        self.status_changed.emit()

    def _on_reply(self, reply: Reply) -> None:
        link = reply.source
        trend = self.trends.get(link)
        if trend is None:
            return  # the node was removed meanwhile
        self._answered.add(link)
        if reply.ok:
            overview: Overview = reply.value
            trend.add(overview)
            self._ok.add(link)
            self.last_applied = max(self.last_applied, reply.finished)
            self._ask_workers(link, overview.now.time)
        self.redraw(link)
        if self._answered >= set(self.trends):  # everyone has been heard from once
            if self._ok:
                self.applied.emit()
            elif not reply.ok:
                self.failed.emit(reply.error)

    # ------------------------------------------------------------ workers under a host

    def _ask_workers(self, link: NodeLink, now: float) -> None:
        """Read the host's workers and how the recent ones ended after its overview
        (their own load too when its row is expanded), in one round trip."""
        if link.running("cluster-workers"):
            return
        detail = link in self.open_hosts
        link.request(
            "cluster-workers",
            lambda node: cluster_workers(node, detail),
            lambda reply: self._on_workers(reply, now),
            timeout=self.fleet.probe_timeout(link),
        )

    def _on_workers(self, reply: Reply, now: float) -> None:
        link = reply.source
        if link not in self.trends or not reply.ok:
            return
        children, loads, exits = reply.value
        watch = self.watches.setdefault(link, WorkerWatch())
        rows = [with_load(row, loads.get(row.pid)) for row in watch.update(children, now, exits)]
        self.model.set_workers(link, rows)
        if rows and link not in self._opened_once and len(self.trends) <= OPEN_HOSTS_UP_TO:
            self._opened_once.add(link)  # once: a host the user collapsed stays collapsed
            model = self.model
            self.view.expand(self.proxy.mapFromSource(model.index(model.links.index(link), 0)))

    def _expanded_changed(self, index: QModelIndex, expanded: bool) -> None:
        link = index.siblingAtColumn(NODE).data(LINK_ROLE)
        if link is None or index.parent().isValid():
            return
        if expanded:
            self.open_hosts.add(link)
            if not link.running(self.key):  # the workers' own figures now, not in a second
                trend = self.trends.get(link)
                if trend is not None and trend.overview is not None:
                    self._ask_workers(link, trend.overview.now.time)
        else:
            self.open_hosts.discard(link)

    def _activated(self, index: QModelIndex) -> None:
        link = index.siblingAtColumn(NODE).data(LINK_ROLE)
        worker = self.worker_at(index)
        if worker is not None:
            self.fleet.open_worker(link, worker.pid, worker.name)
        elif link is not None and not index.parent().isValid():
            self.fleet.open_node(link)

    def worker_at(self, index: QModelIndex) -> WorkerRow | None:
        """The live worker a row under a host shows (None: a host row, or one exited)."""
        source = self.proxy.mapToSource(index)
        link = source.internalPointer() if source.isValid() else None
        rows = self.model.workers.get(link, []) if link is not None else []
        if not 0 <= source.row() < len(rows) or rows[source.row()][0].exited:
            return None
        return rows[source.row()][0]

    def _menu(self, pos: QPoint) -> None:
        index = self.view.indexAt(pos)
        link = index.siblingAtColumn(NODE).data(LINK_ROLE)
        if link is None:
            return
        menu = QMenu(self.view)
        worker = self.worker_at(index)
        if worker is not None:
            menu.addAction(
                "Open worker", lambda: self.fleet.open_worker(link, worker.pid, worker.name)
            )
        menu.addAction("Open node", lambda: self.fleet.open_node(link))
        menu.addAction("Open metrics URL", lambda: self.open_metrics(link))
        menu.exec(self.view.viewport().mapToGlobal(pos))

    def open_metrics(self, link: NodeLink) -> None:
        """Ask the node where its metrics endpoint is, then open that URL in the browser."""
        link.request("metrics-url", lambda node: node.metrics()[0], self._on_metrics_url)

    def _on_metrics_url(self, reply: Reply) -> None:
        if reply.ok:
            self.metrics_message = f"opened {reply.value}"
            self.open_url(QUrl(reply.value))
        else:
            self.metrics_message = f"no metrics URL: {reply.error}"
        self.status_changed.emit()

    # ------------------------------------------------------------ Tab API

    def job(self) -> Callable[[Node], Any]:
        raise NotImplementedError("the Cluster tab asks every node itself (refresh)")

    def apply(self, value: Any) -> None:
        raise NotImplementedError("the Cluster tab draws each node's reply itself")

    def status_text(self) -> str:
        counts: dict[str, int] = {}
        for row in self.model.rows:
            counts[row.status] = counts.get(row.status, 0) + 1
        if not counts:
            return ""
        order = [s.value for s in Status]
        parts = [f"{counts[s]} {s}" for s in sorted(counts, key=order.index)]
        total = len(self.model.rows)
        text = f"{total} node{'s' if total != 1 else ''}: " + ", ".join(parts)
        return f"{text}; {self.metrics_message}" if self.metrics_message else text
