"""The node list on the left: a status light, name, address and round-trip time per node.

Columns fit their content, the name first (the address is cut before it); nodes whose
address left their DNS name's answers stay listed, greyed, and say so."""

from __future__ import annotations

import time

from PyQt6.QtCore import Qt
from PyQt6.QtGui import QBrush, QColor, QIcon, QPainter, QPixmap
from PyQt6.QtWidgets import QTreeWidget, QTreeWidgetItem, QWidget

from observer.gui.columns import ColumnFitter
from observer.gui.link import NodeLink, Status
from observer.gui.workerlink import WorkerHealth

LIGHTS = {
    Status.CONNECTING: "#d4a72c",
    Status.UP: "#2da44e",
    Status.AUTH_FAILED: "#8250df",
    Status.DOWN: "#cf222e",
    Status.DEAD: "#57606a",
}
LINK_ROLE = Qt.ItemDataRole.UserRole + 1
GONE = QColor("#8c959f")  # the text of a node whose address left DNS
FITTED_WIDTH = (200, 320)  # px: the list fitted to its names stays within these


def light(colour: str, size: int = 12) -> QIcon:
    """A round status light."""
    pixmap = QPixmap(size, size)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setBrush(QColor(colour))
    painter.setPen(QColor(colour).darker(130))
    painter.drawEllipse(1, 1, size - 2, size - 2)
    painter.end()
    return QIcon(pixmap)


def rtt_text(rtt: float | None) -> str:
    if rtt is None:
        return ""
    return f"{rtt * 1000:.0f} ms" if rtt >= 0.001 else "<1 ms"


class NodeList(QTreeWidget):
    """One row per node; the selected row is the node the tabs show."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setHeaderLabels(["Node", "Address", "RTT"])
        self.setRootIsDecorated(False)
        self.setTextElideMode(Qt.TextElideMode.ElideMiddle)  # keeps the port of an address
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        # the address goes first when the list is too narrow (it is in every tooltip)
        self.columns = ColumnFitter(
            self, first=(0,), cap=0.75, optional=(1,), within=FITTED_WIDTH[1]
        )
        self._icons = {status: light(colour) for status, colour in LIGHTS.items()}

    def add(self, link: NodeLink) -> QTreeWidgetItem:
        item = QTreeWidgetItem()
        item.setData(0, LINK_ROLE, link)
        self.addTopLevelItem(item)
        self.update_link(link)
        return item

    def add_worker(self, host: NodeLink, link: NodeLink) -> QTreeWidgetItem | None:
        """Show an opened worker under its host's row."""
        parent = self.item_of(host)
        if parent is None:
            return None
        item = QTreeWidgetItem()
        item.setData(0, LINK_ROLE, link)
        parent.addChild(item)
        self.setRootIsDecorated(True)  # the host can fold its workers away
        parent.setExpanded(True)
        self.update_link(link)
        return item

    def item_of(self, link: NodeLink) -> QTreeWidgetItem | None:
        for i in range(self.topLevelItemCount()):
            item = self.topLevelItem(i)
            if item is None:
                continue
            if item.data(0, LINK_ROLE) is link:
                return item
            for j in range(item.childCount()):
                child = item.child(j)
                if child is not None and child.data(0, LINK_ROLE) is link:
                    return child
        return None

    def update_link(self, link: NodeLink) -> None:
        item = self.item_of(link)
        if item is None:
            return
        worker = isinstance(link.health, WorkerHealth)
        exited = worker and link.health.exited
        item.setIcon(0, self._icons[link.status])
        item.setText(0, link.label)  # a worker's: its role label and pid
        item.setText(1, "" if worker else link.spec.address)  # a worker's: its master's
        state = "exited" if exited else link.status.value
        item.setText(2, rtt_text(link.rtt) if link.status is Status.UP else state)
        lines = [f"{link.label} ({link.spec.address}): {state}"]
        if worker:
            lines.append(f"a worker of {link.health.master.label}, through its session")
        if link.origin:
            lines.append(f"resolved from {link.origin}")
        if link.gone_since:
            stamp = time.strftime("%H:%M:%S", time.localtime(link.gone_since))
            lines.append(f"no longer in DNS (since {stamp})")
        if link.role:
            lines.append(f"role: {link.role}")
        if link.pid is not None:
            lines.append(f"pid: {link.pid}")
        if link.restarted:
            lines.append(link.restarted)
        if link.cert_warning:
            lines.append(f"warning: {link.cert_warning}")
        if link.error:
            lines.append(link.error)
        brush = QBrush(GONE) if link.gone_since or exited else QBrush()
        for column in range(3):
            item.setToolTip(column, "\n".join(lines))
            item.setForeground(column, brush)
        self.columns.fit_later()

    def width_wanted(self) -> int:
        """How wide the list must be to show every column in full."""
        bar = self.verticalScrollBar()
        extra = bar.sizeHint().width() if bar is not None and bar.isVisible() else 0
        return self.columns.width_wanted() + 2 * self.frameWidth() + extra

    def current_link(self) -> NodeLink | None:
        item = self.currentItem()
        return item.data(0, LINK_ROLE) if item is not None else None

    def replace(self, old: NodeLink, new: NodeLink) -> None:
        """Show ``new`` in ``old``'s row (an edited node keeps its place)."""
        item = self.item_of(old)
        if item is not None:
            item.setData(0, LINK_ROLE, new)
            self.update_link(new)

    def remove(self, link: NodeLink) -> None:
        item = self.item_of(link)
        if item is not None:
            parent = item.parent()
            if parent is not None:
                parent.removeChild(item)
            else:
                self.takeTopLevelItem(self.indexOfTopLevelItem(item))
            self.columns.reset()
            self.columns.fit_later()
