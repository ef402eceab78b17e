"""The node list's width: fitted to its names until the user drags the splitter, then the
user's width, remembered in ``window.ini`` next to the nodes file (a window without a
nodes file remembers nothing)."""

from __future__ import annotations

from pathlib import Path

from PyQt6.QtCore import QObject, QSettings, QTimer
from PyQt6.QtWidgets import QSplitter

from observer.gui.nodelist import FITTED_WIDTH as FITTED
from observer.gui.nodelist import NodeList

SETTINGS_FILE = "window.ini"
KEY = "node_list/width"
SAVE_AFTER = 400  # ms after the last move of a drag


class PaneWidth(QObject):
    """Sizes the first pane of ``splitter`` (the node ``list``)."""

    def __init__(self, splitter: QSplitter, nodes: NodeList, nodes_file: Path | None) -> None:
        super().__init__(splitter)
        self.splitter = splitter
        self.nodes = nodes
        self.settings = (
            QSettings(str(nodes_file.with_name(SETTINGS_FILE)), QSettings.Format.IniFormat)
            if nodes_file is not None
            else None
        )
        self.chosen = False  # the user dragged the splitter (now or in an earlier session)
        remembered = self._remembered()
        if remembered is not None:
            self.chosen = True
            self.set(remembered)
        else:
            self.set(FITTED[0])
        # after the event that fitted the list's columns: a drag of the splitter resizes
        # the list (and fits it) before the splitter says it moved
        self.fit_timer = QTimer(self)
        self.fit_timer.setSingleShot(True)
        self.fit_timer.setInterval(0)
        self.fit_timer.timeout.connect(self.fit)
        nodes.columns.fitted.connect(self.fit_timer.start)
        self.save_timer = QTimer(self)  # a drag moves the splitter many times: save once
        self.save_timer.setSingleShot(True)
        self.save_timer.setInterval(SAVE_AFTER)
        self.save_timer.timeout.connect(self.save)
        splitter.splitterMoved.connect(self._dragged)

    def width(self) -> int:
        return self.splitter.sizes()[0]

    def set(self, width: int) -> None:
        total = sum(self.splitter.sizes()) or self.splitter.window().width()
        self.splitter.setSizes([width, max(0, total - width)])

    def fit(self) -> None:
        """Until the user chose a width, as wide as the names need (within FITTED); the
        node list cuts the address before the name."""
        if self.chosen:
            return
        low, high = FITTED
        want = max(low, min(high, self.nodes.width_wanted()))
        if want > self.width() or self.width() - want > 4:  # never a few px short: elided
            self.set(want)

    def save(self) -> None:
        """Remember the width the user chose (now, if a save is pending)."""
        self.save_timer.stop()
        if self.settings is not None and self.chosen:
            self.settings.setValue(KEY, self.width())
            self.settings.sync()

    def _remembered(self) -> int | None:
        if self.settings is None:
            return None
        try:
            value = self.settings.value(KEY)
            width = int(value) if value is not None else None
        except (TypeError, ValueError):  # a hand-edited file: fit instead
            return None
        return max(120, min(width, 2000)) if width is not None else None

    def _dragged(self, *_: object) -> None:
        self.chosen = True
        self.save_timer.start()
