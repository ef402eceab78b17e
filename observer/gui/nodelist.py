"""The node list on the left: a status light, name, address and round-trip time per node,
and the dialog that adds a node."""

from __future__ import annotations

from pathlib import Path

from PyQt6.QtCore import Qt
from PyQt6.QtGui import QColor, QIcon, QPainter, QPixmap
from PyQt6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QWidget,
)

from agent.wire import parse_fingerprint
from observer.errors import ObserverError
from observer.gui.link import NodeLink, Status
from observer.nodesfile import NodeSpec
from observer.transport import parse_address

LIGHTS = {
    Status.CONNECTING: "#d4a72c",
    Status.UP: "#2da44e",
    Status.AUTH_FAILED: "#8250df",
    Status.DOWN: "#cf222e",
    Status.DEAD: "#57606a",
}
LINK_ROLE = Qt.ItemDataRole.UserRole + 1


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
        self.setColumnWidth(0, 65)
        self.setColumnWidth(1, 108)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self._icons = {status: light(colour) for status, colour in LIGHTS.items()}

    def add(self, link: NodeLink) -> QTreeWidgetItem:
        item = QTreeWidgetItem()
        item.setData(0, LINK_ROLE, link)
        self.addTopLevelItem(item)
        self.update_link(link)
        return item

    def item_of(self, link: NodeLink) -> QTreeWidgetItem | None:
        for i in range(self.topLevelItemCount()):
            item = self.topLevelItem(i)
            if item is not None and item.data(0, LINK_ROLE) is link:
                return item
        return None

    def update_link(self, link: NodeLink) -> None:
        item = self.item_of(link)
        if item is None:
            return
        item.setIcon(0, self._icons[link.status])
        item.setText(0, link.label)
        item.setText(1, link.spec.address)
        item.setText(2, rtt_text(link.rtt) if link.status is Status.UP else link.status.value)
        lines = [f"{link.label} ({link.spec.address}): {link.status.value}"]
        if link.role:
            lines.append(f"role: {link.role}")
        if link.pid is not None:
            lines.append(f"pid: {link.pid}")
        if link.restarted:
            lines.append(link.restarted)
        if link.error:
            lines.append(link.error)
        for column in range(3):
            item.setToolTip(column, "\n".join(lines))

    def current_link(self) -> NodeLink | None:
        item = self.currentItem()
        return item.data(0, LINK_ROLE) if item is not None else None


class AddNodeDialog(QDialog):
    """Address, token file, fingerprint or CA file; checked before it is accepted."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Add node")
        self.setMinimumWidth(520)
        form = QFormLayout(self)
        self.name = QLineEdit()
        self.name.setPlaceholderText("optional: defaults to the node's own name")
        self.address = QLineEdit()
        self.address.setPlaceholderText("host:port, e.g. 10.0.0.5:7330")
        self.token_file = QLineEdit()
        self.token_file.setPlaceholderText("file holding the viewer or operator token")
        self.fingerprint = QLineEdit()
        self.fingerprint.setPlaceholderText("sha256:… as printed by observer keygen")
        self.cafile = QLineEdit()
        self.cafile.setPlaceholderText("optional: CA bundle instead of a fingerprint")
        self.remember = QCheckBox("Remember this node")
        self.remember.setChecked(True)
        self.error = QLabel()
        self.error.setStyleSheet("color:#cf222e")
        self.error.setWordWrap(True)
        form.addRow("Name", self.name)
        form.addRow("Address", self.address)
        form.addRow("Token file", self._with_browse(self.token_file))
        form.addRow("Fingerprint", self.fingerprint)
        form.addRow("CA file", self._with_browse(self.cafile))
        form.addRow("", self.remember)
        form.addRow(self.error)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self._check)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def _with_browse(self, line: QLineEdit) -> QWidget:
        box = QWidget()
        row = QHBoxLayout(box)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(line)
        button = QPushButton("Browse…")
        button.clicked.connect(lambda: self._browse(line))
        row.addWidget(button)
        return box

    def _browse(self, line: QLineEdit) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose file", line.text() or str(Path.home()))
        if path:
            line.setText(path)

    def spec(self) -> NodeSpec:
        return NodeSpec(
            address=self.address.text().strip(),
            name=self.name.text().strip(),
            token_file=self.token_file.text().strip(),
            fingerprint=self.fingerprint.text().strip(),
            cafile=self.cafile.text().strip(),
        )

    def problem(self) -> str:
        """What is wrong with the form, in plain words, or ''."""
        spec = self.spec()
        try:
            parse_address(spec.address)
        except ObserverError as exc:
            return f"Address: {exc}"
        for label, path in (("Token file", spec.token_file), ("CA file", spec.cafile)):
            if path and not Path(path).expanduser().is_file():
                return f"{label}: {path} does not exist"
        if spec.fingerprint:
            try:
                parse_fingerprint(spec.fingerprint)
            except ValueError as exc:
                return f"Fingerprint: {exc}"
        return ""

    def _check(self) -> None:
        problem = self.problem()
        if problem:
            self.error.setText(problem)
            return
        self.accept()
