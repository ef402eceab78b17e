"""Tools > Chaos…: a chaos run over the window's nodes, with a live log and a summary.

The engine (``observer.chaos``) runs on a Python thread of its own with its OWN
connections, made from the chosen nodes' specs: a run's actions and recovery polls never
queue behind the window's refreshes, and a slow node never blocks the GUI thread. Its
events cross to the GUI thread through a queued signal; Stop sets the engine's stop
event and returns at once, and the summary arrives a moment later the same way.
A viewer-only node refuses the run at its start mark (the agent audits the denial); the
dialog shows that reason.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence

from PyQt6.QtCore import QRegularExpression, Qt, pyqtSignal
from PyQt6.QtGui import QFontDatabase, QRegularExpressionValidator
from PyQt6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDialog,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from observer.chaos import (
    DEFAULT_EVERY,
    DEFAULT_RECOVERY_TIMEOUT,
    Chaos,
    ChaosEvent,
    ChaosRefused,
    Summary,
)
from observer.errors import ObserverError
from observer.gui.link import NodeLink, Status

ACTION_LABELS = {
    "task": (("cancel", "cancel"),),
    "thread": (("raise", "raise SystemExit"),),
    "process": (("term", "SIGTERM"), ("kill", "SIGKILL")),
}
LINK_ROLE = Qt.ItemDataRole.UserRole + 1
ERROR_STYLE = "color: #cf222e;"


class ChaosDialog(QDialog):
    """Pick nodes, a glob, a kind and an action; Start, watch the log, Stop at any time."""

    finished_run = pyqtSignal(object)  # Summary, or the exception the run ended with
    _event = pyqtSignal(object)  # ChaosEvent, emitted on the engine's thread (queued)
    _done = pyqtSignal(object)  # Summary or exception, emitted on the engine's thread

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Chaos")
        self.setModal(False)
        self.resize(860, 600)
        self.chaos: Chaos | None = None
        self.summary: Summary | None = None
        self.error: BaseException | None = None
        self._event.connect(self._on_event)
        self._done.connect(self._on_done)

        self.node_list = QListWidget()
        self.node_list.setWordWrap(True)  # long names wrap instead of hiding behind a scroll
        self.node_list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.node_list.setToolTip("The nodes to pick targets from (one is picked per action)")
        nodes_box = QGroupBox("Nodes")
        QVBoxLayout(nodes_box).addWidget(self.node_list)

        self.match_edit = QLineEdit()
        self.match_edit.setPlaceholderText("glob on the name, e.g. worker-*")
        self.kind_box = QComboBox()
        self.kind_box.addItems(list(ACTION_LABELS))
        self.action_box = QComboBox()
        self.kind_box.currentTextChanged.connect(self._kind_changed)
        self.every_box = _seconds(DEFAULT_EVERY, 0.0, 3600.0)
        self.count_radio = QRadioButton("Count")
        self.duration_radio = QRadioButton("Duration")
        self.count_box = QSpinBox()
        self.count_box.setRange(1, 100_000)
        self.count_box.setValue(3)
        self.duration_box = _seconds(60.0, 0.1, 86_400.0)
        group = QButtonGroup(self)
        group.addButton(self.count_radio)
        group.addButton(self.duration_radio)
        self.count_radio.toggled.connect(self._length_changed)
        self.count_radio.setChecked(True)
        self.seed_edit = QLineEdit()
        self.seed_edit.setPlaceholderText("random")
        self.seed_edit.setValidator(QRegularExpressionValidator(QRegularExpression(r"\d{0,18}")))
        self.seed_edit.setToolTip("Enter a past run's seed to repeat its picks")
        self.recovery_box = _seconds(DEFAULT_RECOVERY_TIMEOUT, 0.5, 3600.0)
        self.dry_run_box = QCheckBox("Dry run: pick and report targets, touch nothing")

        self.match_edit.setMinimumWidth(240)
        self.seed_edit.setMinimumWidth(240)
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
        form.addRow("Match", self.match_edit)
        kind_row = QHBoxLayout()
        kind_row.addWidget(self.kind_box)
        kind_row.addWidget(QLabel("Action"))
        kind_row.addWidget(self.action_box, 1)
        form.addRow("Kind", kind_row)
        form.addRow("Every", self.every_box)
        length = QHBoxLayout()
        length.addWidget(self.count_radio)
        length.addWidget(self.count_box)
        length.addSpacing(12)
        length.addWidget(self.duration_radio)
        length.addWidget(self.duration_box)
        length.addStretch(1)
        form.addRow("Stop after", length)
        form.addRow("Seed", self.seed_edit)
        form.addRow("Recovery timeout", self.recovery_box)
        form.addRow("", self.dry_run_box)
        self.settings = QGroupBox("Run")
        self.settings.setLayout(form)

        top = QWidget()
        top_row = QHBoxLayout(top)
        top_row.setContentsMargins(0, 0, 0, 0)
        top_row.addWidget(nodes_box, 1)
        top_row.addWidget(self.settings, 1)

        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.log.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.log.setPlaceholderText("Actions and recoveries appear here as they happen.")
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(top)
        splitter.addWidget(self.log)
        splitter.setStretchFactor(1, 1)

        self.summary_label = QLabel("")
        self.summary_label.setWordWrap(True)
        self.summary_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.start_button = QPushButton("Start")
        self.start_button.setDefault(True)
        self.start_button.clicked.connect(self.start)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stop)
        close_button = QPushButton("Close")
        close_button.clicked.connect(self.close)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.stop_button)
        buttons.addStretch(1)
        buttons.addWidget(close_button)

        layout = QVBoxLayout(self)
        layout.addWidget(splitter, 1)
        layout.addWidget(self.summary_label)
        layout.addLayout(buttons)
        self._kind_changed(self.kind_box.currentText())

    # ------------------------------------------------------------ nodes

    def set_links(self, links: Sequence[NodeLink], current: NodeLink | None = None) -> None:
        """List the window's nodes, the current one checked (kept as is while running)."""
        if self.running:
            return
        checked = {link.spec.address for link in self.chosen()}
        self.node_list.clear()
        for link in links:
            item = QListWidgetItem()
            item.setData(LINK_ROLE, link)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            on = link.spec.address in checked or (not checked and link is current)
            item.setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)
            _describe(item, link)
            self.node_list.addItem(item)

    def update_link(self, link: NodeLink) -> None:
        """A node's status or role changed: say so in its entry (it connected meanwhile)."""
        for i in range(self.node_list.count()):
            item = self.node_list.item(i)
            if item is not None and item.data(LINK_ROLE) is link:
                _describe(item, link)

    def chosen(self) -> list[NodeLink]:
        items = [self.node_list.item(i) for i in range(self.node_list.count())]
        return [
            item.data(LINK_ROLE)
            for item in items
            if item is not None and item.checkState() == Qt.CheckState.Checked
        ]

    # ------------------------------------------------------------ running

    @property
    def running(self) -> bool:
        return self.chaos is not None

    def start(self) -> None:
        """Start a run on its own thread with the form's settings (never blocks)."""
        if self.running:
            return
        links = self.chosen()
        if not links:
            self._show_error("Choose at least one node.")
            return
        seed_text = self.seed_edit.text().strip()
        duration = self.duration_radio.isChecked()
        try:
            chaos = Chaos(
                [link.spec for link in links],  # its own connections, off the window's queue
                self.match_edit.text().strip(),
                kind=self.kind_box.currentText(),
                action=self.action_box.currentData(),
                every=self.every_box.value(),
                count=None if duration else self.count_box.value(),
                duration=self.duration_box.value() if duration else None,
                seed=int(seed_text) if seed_text else None,
                dry_run=self.dry_run_box.isChecked(),
                recovery_timeout=self.recovery_box.value(),
                on_event=self._post,
            )
        except ObserverError as exc:
            self._show_error(str(exc))
            return
        self.chaos, self.summary, self.error = chaos, None, None
        self.log.clear()
        self.summary_label.setStyleSheet("")
        self.summary_label.setText(f"{chaos.run_id} running… (seed {chaos.seed})")
        self._set_running(True)
        threading.Thread(target=self._work, args=(chaos,), name=chaos.run_id, daemon=True).start()

    def stop(self) -> None:
        """End the run at once: the engine stops at its next wait and reports."""
        if self.chaos is not None:
            self.chaos.stop()
            self.stop_button.setEnabled(False)
            self.summary_label.setText(f"{self.chaos.run_id} stopping…")

    def _work(self, chaos: Chaos) -> None:
        """The engine's thread: run, then hand the outcome to the GUI thread."""
        outcome: Summary | BaseException
        try:
            outcome = chaos.run()
        except BaseException as exc:
            outcome = exc
        with contextlib.suppress(RuntimeError):  # the dialog is gone at exit
            self._done.emit(outcome)

    def _post(self, event: ChaosEvent) -> None:
        with contextlib.suppress(RuntimeError):
            self._event.emit(event)

    def _on_event(self, event: ChaosEvent) -> None:
        if event.kind == "end":
            return  # the summary line says it
        stamp = time.strftime("%H:%M:%S", time.localtime(event.time))
        mark = {"recovered": "✓", "not-recovered": "✗", "error": "!", "skipped": "–"}
        self.log.appendPlainText(
            f"{stamp}.{int(event.time * 1000) % 1000:03d} {mark.get(event.kind, ' ')} {event.text}"
        )

    def _on_done(self, outcome: Summary | BaseException) -> None:
        self.chaos = None
        self._set_running(False)
        if isinstance(outcome, Summary):
            self.summary = outcome
            self.summary_label.setStyleSheet("")
            self.summary_label.setText(f"{outcome.run}: {outcome.text(repeat_hint='')}")
        else:
            self.error = outcome
            prefix = "Refused" if isinstance(outcome, ChaosRefused) else "Failed"
            self._show_error(f"{prefix}: {outcome}")
        self.finished_run.emit(outcome)

    # ------------------------------------------------------------ form

    def _set_running(self, running: bool) -> None:
        self.settings.setEnabled(not running)
        self.node_list.setEnabled(not running)
        self.start_button.setEnabled(not running)
        self.stop_button.setEnabled(running)

    def _show_error(self, text: str) -> None:
        self.summary_label.setStyleSheet(ERROR_STYLE)
        self.summary_label.setText(text)

    def _kind_changed(self, kind: str) -> None:
        self.action_box.clear()
        for action, label in ACTION_LABELS.get(kind, ()):
            self.action_box.addItem(label, action)

    def _length_changed(self) -> None:
        by_count = self.count_radio.isChecked()
        self.count_box.setEnabled(by_count)
        self.duration_box.setEnabled(not by_count)

    def closeEvent(self, event) -> None:  # type: ignore[no-untyped-def]
        self.stop()  # closing the dialog ends its run; the summary still reaches the log
        super().closeEvent(event)


def _describe(item: QListWidgetItem, link: NodeLink) -> None:
    item.setText(node_text(link))
    viewer = link.status is Status.UP and not link.can_control
    item.setToolTip(
        "Read-only (viewer): a real run is refused here; a dry run is allowed" if viewer else ""
    )


def node_text(link: NodeLink) -> str:
    """A node as the list shows it: label, address, and what it allows when known."""
    text = link.label if link.label == link.spec.address else f"{link.label} ({link.spec.address})"
    if link.status is not Status.UP:
        return f"{text} - {link.status.value}"
    return text if link.can_control else f"{text} [viewer: read-only]"


def _seconds(value: float, low: float, high: float) -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setRange(low, high)
    box.setDecimals(1)
    box.setSingleStep(0.5)
    box.setSuffix(" s")
    box.setValue(value)
    return box
