"""A flame graph (icicle: callers on top) drawn with QPainter from a Profile's folded
stacks: click a frame to zoom into it, click the top bar to zoom out, hover for samples and
percentage, double-click to open the source around the frame's function (``opened``), and
a search string highlights the frames whose name contains it."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

from PyQt6.QtCore import QRectF, Qt, pyqtSignal
from PyQt6.QtGui import QColor, QFontMetrics, QMouseEvent, QPainter, QPaintEvent
from PyQt6.QtWidgets import QToolTip, QWidget

from agent.schema import Profile, ProfileFrame
from observer.profile_export import fold, frame_label

ROW = 18  # pixels a frame row is tall
MIN_WIDTH = 0.5  # frames narrower than this many pixels are not drawn


@dataclass
class FlameNode:
    """A frame in the call tree: its samples and its callees."""

    name: str
    count: int = 0
    children: dict[str, FlameNode] = field(default_factory=dict)
    parent: FlameNode | None = None
    frame: ProfileFrame | None = None  # where its function is (None: a group, 'all')

    def child(self, name: str) -> FlameNode:
        node = self.children.get(name)
        if node is None:
            node = self.children[name] = FlameNode(name, parent=self)
        return node

    def depth(self) -> int:
        return 1 + max((c.depth() for c in self.children.values()), default=0)


def flame_tree(
    profile: Profile, split: str = "merged", idle: bool = True, cpu: bool = False
) -> FlameNode:
    """The call tree of a profile: root 'all', then the thread or task when split."""
    root = FlameNode("all")
    labels = [frame_label(f) for f in profile.frames]
    for group, stacks in fold(profile, split, idle, cpu).items():
        for stack, count in stacks.items():
            root.count += count
            node = root
            if split != "merged":
                node = node.child(group)
                node.count += count
            for index in stack:
                node = node.child(labels[index])
                node.frame = profile.frames[index]
                node.count += count
    return root


def _color(name: str, highlighted: bool) -> QColor:
    if highlighted:
        return QColor(220, 60, 200)
    hue = zlib.crc32(name.split(" (")[0].encode()) % 60  # warm colours, stable per function
    return QColor.fromHsv(hue, 150 + hue % 60, 235)


class FlameGraph(QWidget):
    """The icicle itself; ``set_tree`` to draw a new profile (the zoom survives when the
    zoomed frame is still there)."""

    zoomed = pyqtSignal(str)
    opened = pyqtSignal(object)  # a frame was double-clicked: its ProfileFrame

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.root = FlameNode("all")
        self.focus: FlameNode = self.root
        self.search = ""
        self.boxes: list[tuple[QRectF, FlameNode]] = []
        self.setMouseTracking(True)
        self.setMinimumHeight(120)

    def set_tree(self, root: FlameNode) -> None:
        path = []
        node: FlameNode | None = self.focus
        while node is not None and node.parent is not None:
            path.append(node.name)
            node = node.parent
        self.root = root
        self.focus = root
        for name in reversed(path):  # keep the zoom on the same frame
            nxt = self.focus.children.get(name)
            if nxt is None:
                break
            self.focus = nxt
        self.setMinimumHeight(max(120, (self.focus.depth() + self._ancestors()) * ROW + 4))
        self.update()

    def set_search(self, text: str) -> None:
        self.search = text.strip().lower()
        self.update()

    def zoom(self, node: FlameNode) -> None:
        self.focus = node
        self.zoomed.emit(node.name)
        self.update()

    def _ancestors(self) -> int:
        count, node = 0, self.focus.parent
        while node is not None:
            count, node = count + 1, node.parent
        return count

    # ------------------------------------------------------------ drawing

    def paintEvent(self, _event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(250, 250, 250))
        self.boxes = []
        width = float(self.width())
        metrics = QFontMetrics(painter.font())
        # the focus's ancestors as full-width bars on top: click one to zoom out to it
        chain = []
        node: FlameNode | None = self.focus.parent
        while node is not None:
            chain.append(node)
            node = node.parent
        y = 0.0
        for ancestor in reversed(chain):
            self._box(painter, metrics, QRectF(0, y, width, ROW - 1), ancestor, faded=True)
            y += ROW
        if self.focus.count:  # no samples yet: an empty pane, not a bar of nothing
            self._draw(painter, metrics, self.focus, 0.0, y, width, self.focus.count)
        painter.end()

    def _draw(
        self,
        painter: QPainter,
        metrics: QFontMetrics,
        node: FlameNode,
        x: float,
        y: float,
        width: float,
        total: int,
    ) -> None:
        if width < MIN_WIDTH or y > self.height():
            return
        self._box(painter, metrics, QRectF(x, y, width, ROW - 1), node)
        scale = width / max(1, node.count)
        for child in sorted(node.children.values(), key=lambda c: c.name):
            span = child.count * scale
            self._draw(painter, metrics, child, x, y + ROW, span, total)
            x += span

    def _box(
        self,
        painter: QPainter,
        metrics: QFontMetrics,
        rect: QRectF,
        node: FlameNode,
        faded: bool = False,
    ) -> None:
        hit = bool(self.search) and self.search in node.name.lower()
        color = QColor(225, 225, 225) if faded else _color(node.name, hit)
        painter.fillRect(rect, color)
        painter.setPen(QColor(255, 255, 255))
        painter.drawRect(rect)
        if rect.width() > 30:
            painter.setPen(QColor(30, 30, 30))
            text = metrics.elidedText(node.name, Qt.TextElideMode.ElideRight, int(rect.width()) - 6)
            painter.drawText(rect.adjusted(3, 0, -3, 0), Qt.AlignmentFlag.AlignVCenter, text)
        self.boxes.append((rect, node))

    # ------------------------------------------------------------ mouse

    def node_at(self, x: float, y: float) -> FlameNode | None:
        for rect, node in reversed(self.boxes):
            if rect.contains(x, y):
                return node
        return None

    def describe(self, node: FlameNode) -> str:
        whole = max(1, self.root.count)
        return f"{node.name}\n{node.count:,} samples, {node.count * 100 / whole:.1f}% of all" + (
            f", {node.count * 100 / max(1, self.focus.count):.1f}% of the zoomed frame"
            if self.focus is not self.root
            else ""
        )

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        pos = event.position()
        node = self.node_at(pos.x(), pos.y())
        if node is None:
            QToolTip.hideText()
            return
        QToolTip.showText(event.globalPosition().toPoint(), self.describe(node), self)

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        pos = event.position()
        node = self.node_at(pos.x(), pos.y())
        if node is not None and node.frame is not None and node.frame.line > 0:
            self.opened.emit(node.frame)

    def mousePressEvent(self, event: QMouseEvent) -> None:
        pos = event.position()
        node = self.node_at(pos.x(), pos.y())
        if node is not None and event.button() == Qt.MouseButton.LeftButton:
            self.zoom(node)
