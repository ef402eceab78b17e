"""Inspect windows: one per target, showing its stack (or await chain), locals, or members.

Locals come with the stack in one round trip; values deeper down are fetched only when
the user expands them. When the target is gone the window says so in its title and keeps
the last stack on screen.
"""

from __future__ import annotations

from typing import Protocol

from PyQt6.QtCore import Qt
from PyQt6.QtGui import QKeySequence, QShortcut
from PyQt6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSplitter,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from agent.schema import FrameInfo, LocalsInfo, StackInfo, Variable
from observer.client import Node
from observer.errors import Gone, NotFound
from observer.format import short_path
from observer.gui.link import NodeLink, Reply
from observer.gui.tab import Banner
from observer.gui.workers import routed, same_process


class Inspector(Protocol):
    """What an inspect window asks of whoever opened it: nothing more."""

    def inspect(self, link: NodeLink, target: str, kind: str, name: str) -> QWidget:
        """Open the inspect window of another target (a task this one awaits)."""
        ...

    def inspect_closed(self, window: QWidget) -> None:
        """This window closed: forget it."""
        ...


PATH_ROLE = Qt.ItemDataRole.UserRole + 1
PENDING = "loading…"


class InspectWindow(QWidget):
    """A top-level window on one target of one node: task, thread or exposed object."""

    def __init__(
        self, opener: Inspector, link: NodeLink, target: str, kind: str, name: str
    ) -> None:
        super().__init__(None, Qt.WindowType.Window)
        self.opener = opener
        self.link = link
        self.target = target
        self.kind = kind
        self.name = name
        self.dead = False
        self.stack: StackInfo | None = None
        self.frame_locals: dict[int, LocalsInfo] = {}
        self.resize(980, 640)
        layout = QVBoxLayout(self)
        top = QHBoxLayout()
        self.header = QLabel()
        self.header.setTextFormat(Qt.TextFormat.RichText)
        self.header.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        top.addWidget(self.header, 1)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.setShortcut(QKeySequence("Ctrl+R"))
        self.refresh_button.clicked.connect(self.refresh)
        top.addWidget(self.refresh_button)
        layout.addLayout(top)
        self.banner = Banner(self)
        layout.addWidget(self.banner)

        self.frames = QTreeWidget()
        self.frames.setHeaderLabels(["#", "Function", "Location", "Source"])
        self.frames.setRootIsDecorated(False)
        self.frames.setAlternatingRowColors(True)
        for column, width in enumerate((40, 200, 260)):
            self.frames.setColumnWidth(column, width)
        self.frames.currentItemChanged.connect(lambda *_: self._show_locals())
        self.awaiting = QLabel()
        self.awaiting.setTextFormat(Qt.TextFormat.RichText)
        self.awaiting.linkActivated.connect(self._open_awaited)
        self.awaiting.hide()
        self.locals_label = QLabel()
        self.variables = QTreeWidget()
        self.variables.setHeaderLabels(["Name", "Type", "Value"])
        self.variables.setAlternatingRowColors(True)
        self.variables.setColumnWidth(0, 220)
        self.variables.setColumnWidth(1, 140)
        self.variables.itemExpanded.connect(self._expand)

        upper = QWidget()
        upper_layout = QVBoxLayout(upper)
        upper_layout.setContentsMargins(0, 0, 0, 0)
        self.frames_label = QLabel()
        upper_layout.addWidget(self.frames_label)
        upper_layout.addWidget(self.frames)
        upper_layout.addWidget(self.awaiting)
        lower = QWidget()
        lower_layout = QVBoxLayout(lower)
        lower_layout.setContentsMargins(0, 0, 0, 0)
        lower_layout.addWidget(self.locals_label)
        lower_layout.addWidget(self.variables)
        splitter = QSplitter(Qt.Orientation.Vertical)
        if kind != "exposed":
            splitter.addWidget(upper)
        splitter.addWidget(lower)
        layout.addWidget(splitter, 1)
        QShortcut(QKeySequence("Escape"), self, activated=self.close)
        self._title()
        self.refresh()

    # ------------------------------------------------------------ refresh

    def refresh(self) -> None:
        """Fetch the stack with every frame's locals (or the exposed members) again."""
        target = self.target
        key = f"inspect:{self.kind}:{target}"
        if self.kind == "exposed":
            self.link.request(key, routed(target, Node.exposed), self._got_members)
        else:
            self.link.request(key, routed(target, Node.stack_with_locals), self._got_stack)
        self.refresh_button.setEnabled(False)

    def _failed(self, reply: Reply) -> bool:
        self.refresh_button.setEnabled(True)
        if reply.ok:
            self.banner.say("")
            return False
        if reply.error_type is not None and issubclass(reply.error_type, (Gone, NotFound)):
            self.dead = True
            self.banner.say(
                f"{self.target} is gone: {reply.error}. The last state seen is shown below."
            )
        else:
            self.banner.say(reply.error)
        self._title()
        return True

    def _got_stack(self, reply: Reply) -> None:
        if self._failed(reply):
            return
        stack, frame_locals = reply.value
        self.dead = False
        self.stack = stack
        self.name = stack.name or self.name
        self.frame_locals = {lc.frame.index: lc for lc in frame_locals}
        self._title()
        self._fill_frames(stack)

    def _got_members(self, reply: Reply) -> None:
        if self._failed(reply):
            return
        self.dead = False
        self._title()
        self.locals_label.setText(f"<b>Members of {self.target}</b> (redacted)")
        self._fill_variables(self.variables.invisibleRootItem(), reply.value, (), expandable=False)

    # ------------------------------------------------------------ drawing

    def _title(self) -> None:
        what = {"task": "Task", "thread": "Thread", "exposed": "Exposed"}.get(self.kind, self.kind)
        dead = "[DEAD] " if self.dead else ""
        self.setWindowTitle(f"{dead}{what} {self.name or self.target} - {self.link.label}")
        state = f" · {self.stack.state}" if self.stack else ""
        gone = " <span style='color:#cf222e'><b>DEAD</b></span>" if self.dead else ""
        self.header.setText(
            f"<b>{what} {self.name}</b> ({self.target}){state}{gone} on {self.link.label}"
        )

    def _fill_frames(self, stack: StackInfo) -> None:
        selected = self._selected_frame()
        self.frames.clear()
        chain = "Await chain" if stack.kind == "task" else "Stack"
        self.frames_label.setText(
            f"<b>{chain}</b>, innermost first ({len(stack.frames)} frames)"
            if stack.frames
            else f"<b>{chain}</b>: no Python frames (not started, or finished)"
        )
        current = None
        for frame in reversed(stack.frames):
            item = QTreeWidgetItem(
                [str(frame.index), frame.function, _where(frame), frame.source.strip()]
            )
            item.setToolTip(2, f"{frame.file}:{frame.line}")
            item.setData(0, PATH_ROLE, frame.index)
            self.frames.addTopLevelItem(item)
            if current is None or frame.index == selected:
                current = item
        if current is not None:
            self.frames.setCurrentItem(current)
        else:
            self._show_locals()
        if stack.awaiting:
            links = ", ".join(f"<a href='{t}'>{t}</a>" for t in stack.awaiting)
            self.awaiting.setText(f"<b>Awaiting</b> {links} (click to inspect)")
            self.awaiting.show()
        else:
            self.awaiting.hide()

    def _selected_frame(self) -> int | None:
        item = self.frames.currentItem()
        return item.data(0, PATH_ROLE) if item is not None else None

    def _show_locals(self) -> None:
        self.variables.clear()
        index = self._selected_frame()
        info = self.frame_locals.get(index) if index is not None else None
        if info is None:
            self.locals_label.setText("<b>Locals</b>: select a frame")
            return
        more = " (truncated)" if info.truncated else ""
        self.locals_label.setText(
            f"<b>Locals of {info.frame.function}</b> (redacted){more}: "
            f"{len(info.variables)} variables"
        )
        self._fill_variables(self.variables.invisibleRootItem(), info.variables, (), True)

    def _fill_variables(
        self,
        parent: QTreeWidgetItem,
        variables: tuple[Variable, ...],
        path: tuple[str, ...],
        expandable: bool,
    ) -> None:
        if parent is self.variables.invisibleRootItem():
            self.variables.clear()
        for var in variables:
            size = f" [{var.size:,}]" if var.size is not None else ""
            item = QTreeWidgetItem([var.name, var.type + size, var.repr])
            item.setToolTip(2, var.repr[:4000])
            item.setData(0, PATH_ROLE, (*path, var.name))
            if var.redacted:
                item.setForeground(2, Qt.GlobalColor.darkRed)
            if expandable and var.expandable and not var.redacted:
                item.addChild(QTreeWidgetItem([PENDING]))
            parent.addChild(item)

    def _expand(self, item: QTreeWidgetItem) -> None:
        """Fetch an expanded value's members on first expansion."""
        if item.childCount() != 1 or item.child(0).text(0) != PENDING:
            return
        frame = self._selected_frame()
        if frame is None:
            return
        path = tuple(item.data(0, PATH_ROLE))
        target = self.target

        def done(reply: Reply) -> None:
            try:
                if item.treeWidget() is None or item.childCount() != 1:
                    return  # the tree was redrawn meanwhile
            except RuntimeError:  # ... and the item deleted with it
                return
            placeholder = item.child(0)
            if not reply.ok:
                placeholder.setText(0, "(unavailable)")
                placeholder.setText(2, reply.error)
                return
            item.removeChild(placeholder)
            self._fill_variables(item, reply.value.variables, path, True)

        self.link.request(
            f"locals:{target}:{frame}:{'/'.join(path)}",
            routed(target, lambda node, there: node.locals(there, frame, path)),
            done,
        )

    def _open_awaited(self, target: str) -> None:
        self.opener.inspect(self.link, same_process(self.target, target), "task", "")

    def closeEvent(self, event) -> None:  # type: ignore[no-untyped-def]
        self.opener.inspect_closed(self)
        super().closeEvent(event)


def _where(frame: FrameInfo) -> str:
    return f"{short_path(frame.file)}:{frame.line}" if frame.file else ""
