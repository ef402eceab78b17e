"""Inspect an allocation site: its traceback and the source around each frame's line.

The source comes from the agent (``node.source``), since the laptop rarely has the
host's files; the agent only serves loaded modules and files its reports named.
"""

from __future__ import annotations

import html
from typing import Protocol

from PyQt6.QtCore import Qt
from PyQt6.QtGui import QFont, QKeySequence, QShortcut
from PyQt6.QtWidgets import (
    QLabel,
    QSplitter,
    QTextEdit,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from agent.schema import AllocationSite, ProfileFrame, SourceText
from observer.format import human_bytes, short_path, signed_bytes
from observer.gui.link import NodeLink, Reply
from observer.gui.tab import Banner


class Opener(Protocol):
    """What a site window asks of whoever opened it."""

    def inspect_closed(self, window: QWidget) -> None:
        """This window closed: forget it."""
        ...


CONTEXT = 12
FRAME_ROLE = Qt.ItemDataRole.UserRole + 1


def _split(where: str) -> tuple[str, int]:
    file, _, line = where.rpartition(":")
    return (file, int(line)) if line.isdigit() else (where, 0)


class SourceWindow(QWidget):
    """A top-level window showing source read from the agent: a header, a banner for
    errors and a monospace view (the base of the site and frame windows)."""

    def __init__(self, opener: Opener, link: NodeLink, width: int, height: int) -> None:
        super().__init__(None, Qt.WindowType.Window)
        self.opener = opener
        self.link = link
        self.source: SourceText | None = None
        self.resize(width, height)
        self.layout_ = QVBoxLayout(self)
        self.header = QLabel()
        self.header.setTextFormat(Qt.TextFormat.RichText)
        self.header.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.layout_.addWidget(self.header)
        self.banner = Banner(self)
        self.layout_.addWidget(self.banner)
        self.text = QTextEdit()
        self.text.setReadOnly(True)
        self.text.setLineWrapMode(QTextEdit.LineWrapMode.NoWrap)
        font = QFont("monospace")
        font.setStyleHint(QFont.StyleHint.Monospace)
        self.text.setFont(font)
        QShortcut(QKeySequence("Escape"), self, activated=self.close)

    def load(self, file: str, line: int) -> None:
        """Ask the agent for the source around ``file:line`` (shown when it answers)."""
        self.link.request(
            f"source:{file}:{line}", lambda node: node.source(file, line, CONTEXT), self._got
        )

    def _got(self, reply: Reply) -> None:
        self.source = show_source(reply, self.banner, self.text) or self.source

    def closeEvent(self, event) -> None:  # type: ignore[no-untyped-def]
        self.opener.inspect_closed(self)
        super().closeEvent(event)


class SiteWindow(SourceWindow):
    """A top-level window on one allocation site of one node."""

    def __init__(self, opener: Opener, link: NodeLink, site: AllocationSite) -> None:
        super().__init__(opener, link, 980, 640)
        self.site = site
        self.frames = QTreeWidget()
        self.frames.setHeaderLabels(["#", "Location"])
        self.frames.setRootIsDecorated(False)
        self.frames.setColumnWidth(0, 40)
        self.frames.currentItemChanged.connect(lambda *_: self._load())
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.frames)
        splitter.addWidget(self.text)
        splitter.setSizes([160, 460])
        self.layout_.addWidget(splitter, 1)
        self.show_site(site)

    def show_site(self, site: AllocationSite) -> None:
        """Show ``site`` (again, with fresh figures) and load the innermost frame's source."""
        self.site = site
        where = f"{site.file}:{site.line}" if site.line else site.file
        self.setWindowTitle(f"Allocation site {short_path(where, 2)} - {self.link.label}")
        diff = (
            f" · {signed_bytes(site.size_diff)} / {site.count_diff:+,} blocks since the baseline"
            if site.size_diff or site.count_diff
            else ""
        )
        self.header.setText(
            f"<b>Allocation site</b> {html.escape(where)} on {html.escape(self.link.label)}<br>"
            f"{human_bytes(site.size)} in {site.count:,} blocks{diff}"
        )
        self.frames.clear()
        frames = site.traceback or ((f"{site.file}:{site.line}",) if site.line else ())
        for i, entry in enumerate(frames):
            item = QTreeWidgetItem([str(i), entry])
            item.setToolTip(1, entry)
            item.setData(0, FRAME_ROLE, entry)
            self.frames.addTopLevelItem(item)
        if self.frames.topLevelItemCount():
            self.frames.setCurrentItem(self.frames.topLevelItem(0))

    def _load(self) -> None:
        item = self.frames.currentItem()
        if item is None:
            return
        file, line = _split(item.data(0, FRAME_ROLE))
        if not line:
            self.banner.say(f"{file}: grouped by file, there is no single line to show.")
            return
        self.load(file, line)


def show_source(reply: Reply, banner: Banner, text: QTextEdit) -> SourceText | None:
    """Put a ``node.source()`` reply into ``text`` (its error into ``banner``, the text
    cleared); the source shown, or None."""
    if not reply.ok:
        banner.say(reply.error)
        text.clear()
        return None
    banner.say("")
    source: SourceText = reply.value
    text.setHtml(source_html(source))
    text.setToolTip(source.file)
    return source


def source_html(source: SourceText) -> str:
    """Source lines numbered, the reported line highlighted, as HTML for a text view."""
    rows = []
    for number, text in enumerate(source.lines, source.first):
        line = f"{number:>6}  {html.escape(text)}"
        mark = number == source.line
        rows.append(f"<span style='background:#fff8c5'><b>{line}</b></span>" if mark else line)
    return "<pre>" + "\n".join(rows) + "</pre>"


class FrameWindow(SourceWindow):
    """A top-level window on the source around a profiled function (a flame graph frame
    double-clicked), read from the agent."""

    def __init__(self, opener: Opener, link: NodeLink, frame: ProfileFrame) -> None:
        super().__init__(opener, link, 900, 560)
        self.frame = frame
        where = f"{frame.file}:{frame.line}"
        self.setWindowTitle(f"{frame.function} {short_path(where, 2)} - {link.label}")
        self.header.setText(
            f"<b>{html.escape(frame.function)}</b> {html.escape(where)} "
            f"on {html.escape(link.label)}"
        )
        self.layout_.addWidget(self.text, 1)
        self.load(frame.file, frame.line)
