"""What the user can do to a row's target: inspect it, or act on it after a confirmation.

Row views (the Processes tree, the Tasks & threads table) hand their view to
``install_target_view``: double-click or Enter inspects, the context menu offers Inspect
and the control actions, Delete runs the default action. Each target of each node gets at
most one inspect window, raised and refreshed when asked for again.
"""

from __future__ import annotations

from collections.abc import Callable

from PyQt6.QtCore import QModelIndex, QObject, QPoint, Qt, pyqtSignal
from PyQt6.QtGui import QKeySequence, QShortcut
from PyQt6.QtWidgets import QAbstractItemView, QMenu, QMessageBox, QWidget

from agent.schema import AllocationSite, ControlResult
from observer.gui.actions import (
    VIEWER_REASON,
    ControlAction,
    actions_for,
    default_action,
    result_text,
)
from observer.gui.inspect import InspectWindow
from observer.gui.link import NodeLink, Reply
from observer.gui.models import ID_ROLE, KIND_ROLE, NAME_ROLE
from observer.gui.source import SiteWindow

AGENT_MARK = " [agent "  # what a child's row name carries when it runs an agent (a worker)
KEEP = "Keep running"  # the confirmation's "no": never another "Cancel" next to "Cancel task"


class Targets(QObject):
    """Inspect windows and control actions for the rows of the selected node.

    ``parent`` owns dialogs and menus; ``current_link()`` is the node the rows belong
    to; ``say(text, msecs)`` writes to the status bar; ``acted(link)`` runs after an
    action's reply arrived, so the view can show what changed at once.
    """

    control_done = pyqtSignal(object)  # ControlResult or Reply with an error (for tests)

    def __init__(
        self,
        parent: QWidget,
        current_link: Callable[[], NodeLink | None],
        say: Callable[[str, int], None],
        acted: Callable[[NodeLink], None],
        open_worker: Callable[[NodeLink, int, str, float], None] | None = None,
    ) -> None:
        super().__init__(parent)
        self.widget = parent
        self.current_link = current_link
        self._say = say
        self._acted = acted
        self._open_worker = open_worker
        self.inspectors: dict[tuple[int, str, str], InspectWindow | SiteWindow] = {}
        self.confirm_box: QMessageBox | None = None

    def say(self, text: str, msecs: int = 0) -> None:
        """A line in the status bar (for ``msecs``, or until the next one)."""
        self._say(text, msecs)

    # ------------------------------------------------------------ row views

    def install_target_view(self, view: QAbstractItemView) -> None:
        """Double-click/Enter inspects, the context menu and Delete act on the row."""
        view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        view.customContextMenuRequested.connect(lambda pos, v=view: self._context_menu(v, pos))
        view.activated.connect(self._activated)
        shortcut = QShortcut(QKeySequence(QKeySequence.StandardKey.Delete), view)
        shortcut.setContext(Qt.ShortcutContext.WidgetShortcut)
        shortcut.activated.connect(lambda v=view: self._delete_pressed(v))

    @staticmethod
    def _row(index: QModelIndex) -> tuple[str, str, str] | None:
        if not index.isValid():
            return None
        index = index.siblingAtColumn(0)
        return index.data(ID_ROLE), index.data(KIND_ROLE), index.data(NAME_ROLE)

    def _activated(self, index: QModelIndex) -> None:
        row = self._row(index)
        link = self.current_link()
        if row is not None and link is not None and row[1] in ("task", "thread"):
            self.inspect(link, row[0], row[1], row[2])

    def _context_menu(self, view: QAbstractItemView, pos: QPoint) -> None:
        index = view.indexAt(pos)
        row = self._row(index)
        link = self.current_link()
        if row is None or link is None:
            return
        menu = self.row_menu(link, *row)
        if not menu.isEmpty():
            menu.exec(view.viewport().mapToGlobal(pos))

    def row_menu(self, link: NodeLink, target: str, kind: str, name: str) -> QMenu:
        """Inspect and the control actions for one row (disabled, with why, for viewers);
        a worker's row (a child running an agent) opens the worker as a node of its own."""
        menu = QMenu(self.widget)
        menu.setToolTipsVisible(True)
        if kind in ("task", "thread"):
            menu.addAction("Inspect", lambda: self.inspect(link, target, kind, name))
        label, agent, _rest = name.partition(AGENT_MARK)
        pid = target.removeprefix("pid-")
        if kind == "child" and agent and pid.isdigit() and self._open_worker is not None:
            entry = menu.addAction("Open worker", lambda: self.open_worker(link, int(pid), label))
            entry.setToolTip("Its System tab, load charts, memory, stalls and profile")
        actions = actions_for(kind)
        if actions and not menu.isEmpty():
            menu.addSeparator()
        for action in actions:
            entry = menu.addAction(
                action.label, lambda a=action: self.confirm_control(link, a, target, name)
            )
            if action.default:
                entry.setShortcut(QKeySequence(QKeySequence.StandardKey.Delete))
            if not link.can_control:
                entry.setEnabled(False)
                entry.setToolTip(VIEWER_REASON)
        return menu

    def _delete_pressed(self, view: QAbstractItemView) -> None:
        row = self._row(view.currentIndex())
        link = self.current_link()
        if row is None or link is None:
            return
        action = default_action(row[1])
        if action is None:
            return
        if not link.can_control:
            self.say(VIEWER_REASON, 10000)
            return
        self.confirm_control(link, action, row[0], row[2])

    def open_worker(self, link: NodeLink, pid: int, name: str, started: float = 0.0) -> None:
        """Open worker ``pid`` of ``link`` as a node of its own (in the node list)."""
        if self._open_worker is not None:
            self._open_worker(link, pid, name, started)

    # ------------------------------------------------------------ control

    def confirm_control(
        self, link: NodeLink, action: ControlAction, target: str, name: str
    ) -> QMessageBox:
        """Ask before acting; the dialog names the action, the target and the node. Its
        buttons are the action's own words and "Keep running", which cannot be confused."""
        title, text = action.confirmation(target, name, f"{link.label} ({link.spec.address})")
        box = QMessageBox(QMessageBox.Icon.Warning, title, text, parent=self.widget)
        box.setStandardButtons(QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)
        box.button(QMessageBox.StandardButton.Yes).setText(action.label)
        box.button(QMessageBox.StandardButton.Cancel).setText(KEEP)

        def answered(_code: int) -> None:
            self.confirm_box = None
            if box.clickedButton() is box.button(QMessageBox.StandardButton.Yes):
                self.run_control(link, action, target)

        box.finished.connect(answered)
        self.confirm_box = box
        box.open()
        return box

    def run_control(self, link: NodeLink, action: ControlAction, target: str) -> None:
        self.say(f"{link.label}: {action.label.lower()} {target}…")

        def done(reply: Reply) -> None:
            if reply.ok:
                result: ControlResult = reply.value
                self.say(result_text(result, link.label), 15000)
                self.control_done.emit(result)
            else:
                self.say(f"{link.label}: {reply.error}", 15000)
                self.control_done.emit(reply)
            self._acted(link)

        link.request(f"control:{target}", lambda node: action.run(node, target), done)

    # ------------------------------------------------------------ inspect windows

    def inspect(self, link: NodeLink, target: str, kind: str, name: str) -> InspectWindow:
        """Open (or raise and refresh) the inspect window of a task, thread or exposed object."""
        key = (id(link), kind, target)
        window = self.inspectors.get(key)
        if isinstance(window, InspectWindow):
            window.refresh()
        else:
            window = InspectWindow(self, link, target, kind, name)
            self.inspectors[key] = window
        _bring_up(window)
        return window

    def inspect_exposed(self, link: NodeLink, name: str) -> InspectWindow:
        return self.inspect(link, name, "exposed", name)

    def inspect_site(self, link: NodeLink, site: AllocationSite) -> SiteWindow:
        """Open (or raise) the window on an allocation site: its traceback and source."""
        key = (id(link), "site", f"{site.file}:{site.line}:{'|'.join(site.traceback)}")
        window = self.inspectors.get(key)
        if isinstance(window, SiteWindow):
            window.show_site(site)
        else:
            window = SiteWindow(self, link, site)
            self.inspectors[key] = window
        _bring_up(window)
        return window

    def inspect_closed(self, window: QWidget) -> None:
        for key, other in list(self.inspectors.items()):
            if other is window:
                del self.inspectors[key]

    def close_for(self, link: NodeLink | None = None) -> None:
        """Close the inspect windows on ``link`` (None: on every node)."""
        for key, window in list(self.inspectors.items()):
            if link is None or window.link is link:
                self.inspectors.pop(key, None)
                window.close()


def _bring_up(window: QWidget) -> None:
    window.show()
    window.raise_()
    window.activateWindow()
