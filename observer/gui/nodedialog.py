"""The dialogs that add a node and edit one: the nodes file's fields, checked before OK.

Add asks for everything a ``NodeSpec`` needs to connect; Edit changes a known node's
name, token file, fingerprint or CA file and role, keeping its address (the nodes file's
key) and every field the dialog does not show.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from PyQt6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QWidget,
)

from agent.wire import parse_fingerprint
from observer.errors import ObserverError
from observer.nodesfile import ROLE_CHOICES, NodeSpec
from observer.transport import parse_address

ROLE_LABELS = {
    "": "as the token allows",
    "viewer": "viewer (read only)",
    "operator": "operator (may cancel, raise, signal)",
    "admin": "admin",
}


class AddNodeDialog(QDialog):
    """Name, address, token file, fingerprint or CA file, role; checked before accepted."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Add node")
        self.setMinimumWidth(520)
        form = QFormLayout(self)
        self.form = form
        self.name = QLineEdit()
        self.name.setPlaceholderText("optional: defaults to the node's own name")
        self.address = QLineEdit()
        self.address.setPlaceholderText("host:port, e.g. 10.0.0.5:7330 (a name: one node per IP)")
        self.token_file = QLineEdit()
        self.token_file.setPlaceholderText("file holding the viewer or operator token")
        self.fingerprint = QLineEdit()
        self.fingerprint.setPlaceholderText("sha256:… as printed by observer keygen")
        self.cafile = QLineEdit()
        self.cafile.setPlaceholderText("optional: CA bundle instead of a fingerprint")
        self.role = QComboBox()
        for role in ROLE_CHOICES:
            self.role.addItem(ROLE_LABELS[role], role)
        self.role.setToolTip(
            "Ask the agent for less than the token allows: an operator token held as a viewer "
            "cannot cancel or kill anything. Never more than the token's role."
        )
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
        form.addRow("Role", self.role)
        form.addRow("", self.remember)
        form.addRow(self.error)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self._check)
        buttons.rejected.connect(self.reject)
        self.ok_button = buttons.button(QDialogButtonBox.StandardButton.Ok)
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
            role=self.role.currentData() or "",
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


class EditNodeDialog(AddNodeDialog):
    """The Add dialog filled in from a node's spec; the address stays as it is."""

    def __init__(self, spec: NodeSpec, remembered: bool, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.original = spec
        self.setWindowTitle(f"Edit node {spec.label}")
        self.name.setText(spec.name)
        self.address.setText(spec.address)
        self.address.setReadOnly(True)
        self.address.setToolTip("The address names the node in the nodes file: add a new node")
        self.token_file.setText(spec.token_file)
        self.fingerprint.setText(spec.fingerprint)
        self.cafile.setText(spec.cafile)
        self.role.setCurrentIndex(max(0, self.role.findData(spec.role)))
        self.remember.setText("Save in the nodes file")
        self.remember.setChecked(remembered)

    def spec(self) -> NodeSpec:
        edited = super().spec()
        return replace(
            self.original,
            name=edited.name,
            token_file=edited.token_file,
            fingerprint=edited.fingerprint,
            cafile=edited.cafile,
            role=edited.role,
        )
