"""Stalls tab: the event-loop stalls a node's agent caught, newest first.

Each refresh asks only for the stalls that ended since the newest one shown (the agent
keeps the last 200). Double-click or Enter opens the stall's window: the blocking stack as
captured, with the source around each frame's line (an Inspect window on a stack that is
no longer live, so it has no locals and no Refresh).
"""

from __future__ import annotations

import html
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from PyQt6.QtCore import Qt
from PyQt6.QtGui import QFont
from PyQt6.QtWidgets import QAbstractItemView, QTextEdit, QTreeWidget, QTreeWidgetItem, QWidget

from agent.schema import FrameInfo, SourceText, StackInfo, StallEvent, StallList
from observer.client import Node
from observer.format import STALL_COLUMNS, stall_cells, stall_text
from observer.gui.inspect import PATH_ROLE, InspectWindow
from observer.gui.link import NodeLink, Reply
from observer.gui.source import show_source
from observer.gui.tab import Tab

KEEP = 200  # stalls shown: the agent's ring holds as many
SOURCE_CONTEXT = 12
SERIAL_ROLE = Qt.ItemDataRole.UserRole + 1


class StallOpener(Protocol):
    """What the tab asks of the window: the inspect windows it keeps (one per target)."""

    inspectors: dict[tuple[int, str, str], Any]

    def inspect(self, link: NodeLink, target: str, kind: str, name: str) -> QWidget: ...

    def inspect_closed(self, window: QWidget) -> None: ...


def stall_stack(event: StallEvent) -> StackInfo:
    """A stall's blocking stack as the Inspect window draws stacks."""
    whose = f"thread {event.gil_thread}" if event.gil_elsewhere else f"thread {event.thread}"
    return StackInfo(
        target=f"stall-{event.serial}",
        kind="stall",
        name=f"{event.loop} blocked {event.duration * 1000:,.0f} ms",
        state="captured",
        frames=event.frames,
        awaiting=(),
        note=f"the frames every capture of {whose} shared, outermost first",
    )


class StallWindow(InspectWindow):
    """The Inspect window on a stall: its captured stack, and the source around the line
    of the selected frame (fetched from the agent) where a live target shows its locals."""

    def __init__(self, opener: StallOpener, link: NodeLink, event: StallEvent) -> None:
        self.event = event
        self.source: SourceText | None = None
        self.text = QTextEdit()
        super().__init__(opener, link, f"stall-{event.serial}", "stall", "")
        self.text.setReadOnly(True)
        self.text.setLineWrapMode(QTextEdit.LineWrapMode.NoWrap)
        font = QFont("monospace")
        font.setStyleHint(QFont.StyleHint.Monospace)
        self.text.setFont(font)
        self.variables.hide()
        lower = self.variables.parentWidget()
        if lower is not None and lower.layout() is not None:
            lower.layout().addWidget(self.text)
        self.refresh_button.hide()  # a stall is over: there is nothing to read again

    def refresh(self) -> None:
        """Draw the captured stack (no request: the agent sent it with the stall)."""
        event = self.event
        self.stack = stall_stack(event)
        self.name = self.stack.name
        self._title()
        detail = html.escape(stall_text(event).split("\n  blocking stack")[0])
        self.header.setText(
            f"<b>Stall #{event.serial}</b> on {html.escape(self.link.label)}"
            f"<pre style='margin:0'>{detail}</pre>"
        )
        self._fill_frames(self.stack)
        self._select_culprit()

    def _title(self) -> None:
        self.setWindowTitle(f"Stall {self.name} - {self.link.label}")

    def _select_culprit(self) -> None:
        for row in range(self.frames.topLevelItemCount()):
            item = self.frames.topLevelItem(row)
            frame = self._frame(item.data(0, PATH_ROLE))
            if (
                frame is not None
                and frame.file == self.event.file
                and (frame.line == self.event.line)
            ):
                self.frames.setCurrentItem(item)
                return

    def _frame(self, index: Any) -> FrameInfo | None:
        return next((f for f in self.event.frames if f.index == index), None)

    def _show_locals(self) -> None:
        """The selected frame's source, around its line (a stall has no live locals)."""
        index = self._selected_frame()
        frame = self._frame(index) if index is not None else None
        if frame is None or not frame.file or frame.line < 1:
            self.locals_label.setText("<b>Source</b>: select a frame")
            self.text.clear()
            return
        self.locals_label.setText(
            f"<b>Source</b> of {html.escape(frame.function)} around line {frame.line} (redacted)"
        )
        file, line = frame.file, frame.line
        self.link.request(
            f"source:{file}:{line}", lambda node: node.source(file, line, SOURCE_CONTEXT), self._got
        )

    def _got(self, reply: Reply) -> None:
        self.source = show_source(reply, self.banner, self.text) or self.source


class StallsTab(Tab):
    key = "stalls"
    title = "Stalls"

    def __init__(self, opener: StallOpener) -> None:
        super().__init__()
        self.opener = opener
        self.view = QTreeWidget()
        self.view.setHeaderLabels(list(STALL_COLUMNS))
        self.view.setRootIsDecorated(False)
        self.view.setAlternatingRowColors(True)
        self.view.setUniformRowHeights(True)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.view.itemActivated.connect(self._activated)
        self.layout_.addWidget(self.view)
        self.events: deque[StallEvent] = deque(maxlen=KEEP)
        self.listing: StallList | None = None

    def job(self) -> Callable[[Node], Any]:
        newest = self.events[-1] if self.events else None
        since = newest.start + newest.duration if newest is not None else 0.0
        return lambda node: node.stalls(since)

    def clear(self) -> None:
        self.events.clear()
        self.listing = None
        self.view.clear()

    def apply(self, value: StallList) -> None:
        self.listing = value
        known = {e.serial for e in self.events}
        fresh = [e for e in value.stalls if e.serial not in known]
        if not fresh and self.view.topLevelItemCount() == len(self.events):
            return
        self.events.extend(fresh)
        self._redraw()

    def _redraw(self) -> None:
        selected = self.view.currentItem()
        serial = selected.data(0, SERIAL_ROLE) if selected is not None else None
        self.view.setUpdatesEnabled(False)
        self.view.clear()
        current = None
        for event in reversed(self.events):
            cells = stall_cells(event)
            item = QTreeWidgetItem(list(cells))
            item.setData(0, SERIAL_ROLE, event.serial)
            item.setToolTip(3, f"{event.function} at {event.file}:{event.line}\n{event.source}")
            item.setToolTip(4, f"{event.file}:{event.line}")
            item.setTextAlignment(1, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            if event.gil_elsewhere:
                item.setForeground(5, Qt.GlobalColor.darkRed)
            self.view.addTopLevelItem(item)
            if event.serial == serial:
                current = item
        if current is not None:
            self.view.setCurrentItem(current)
        self.view.setUpdatesEnabled(True)

    def fit(self) -> None:
        for column in range(len(STALL_COLUMNS) - 1):
            self.view.resizeColumnToContents(column)

    def event_of(self, serial: int) -> StallEvent | None:
        return next((e for e in self.events if e.serial == serial), None)

    def _activated(self, item: QTreeWidgetItem, _column: int = 0) -> None:
        event = self.event_of(item.data(0, SERIAL_ROLE))
        if event is not None and self.link is not None:
            self.open_stall(self.link, event)

    def open_stall(self, link: NodeLink, event: StallEvent) -> StallWindow:
        """Open (or raise) the window on one stall; the window's opener keeps it, so it
        closes with its node like every inspect window."""
        key = (id(link), "stall", str(event.serial))
        window = self.opener.inspectors.get(key)
        if not isinstance(window, StallWindow):
            window = StallWindow(self.opener, link, event)
            self.opener.inspectors[key] = window
        window.show()
        window.raise_()
        window.activateWindow()
        return window

    def status_text(self) -> str:
        if self.listing is None:
            return ""
        if self.listing.threshold <= 0:
            return "the stall catcher is off on this node"
        return (
            f"{len(self.events)} stalls over {self.listing.threshold * 1000:.0f} ms shown "
            f"({self.listing.total} since the agent started) · as of "
            f"{time.strftime('%H:%M:%S', time.localtime(self.listing.time))}"
        )
