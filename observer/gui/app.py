"""Start the desktop observer: ``observer gui [NODE ...]``, plain ``observer``, ``--screenshot``."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from observer.nodesfile import NodeSpec

if TYPE_CHECKING:
    from types import TracebackType

    from PyQt6.QtWidgets import QApplication

    from observer.gui.window import MainWindow

log = logging.getLogger(__name__)

EXIT_NO_WINDOW = 3
VERBOSE_ENV = "OBSERVER_VERBOSE"  # 1: show Qt's own messages (as --verbose does)
_handlers: list[object] = []  # the installed Qt message handler, kept alive


def run_window(
    specs: Sequence[NodeSpec],
    *,
    nodes_file: Path | None,
    tab: str | None = None,
    worker: str | None = None,
    screenshot: Path | None = None,
    after: float = 1.0,
    timeout: float = 60.0,
    verbose: bool | None = None,
) -> int:
    """Open the window on ``specs``; with ``screenshot``, save a PNG and exit instead.
    ``worker`` opens that worker of the first node (``MainWindow.open_worker_when_up``).

    Qt's own messages reach the terminal only when ``verbose`` (default: ``$OBSERVER_VERBOSE``
    is set to something other than 0)."""
    has_display = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    if screenshot is not None and not has_display:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # a picture needs no screen
    from observer.gui.qtcheck import window_problem

    problem = window_problem()
    if problem:
        print(f"observer: {problem}", file=sys.stderr)
        return EXIT_NO_WINDOW
    from PyQt6.QtWidgets import QApplication

    from observer.gui.window import MainWindow

    if verbose is None:
        verbose = os.environ.get(VERBOSE_ENV, "0") not in ("", "0")
    route_qt_messages(verbose)
    app = QApplication.instance() or QApplication(["runtime-observer"])
    app.setApplicationName("runtime-observer")
    keep_running_on_errors()
    window = MainWindow(nodes_file)
    if tab:
        window.show_tab(tab)
    window.open_nodes(list(specs))  # several nodes open on the Cluster tab, unless ``tab``
    if worker:
        window.open_worker_when_up(worker)
    if screenshot is not None:
        code = save_screenshot(window, screenshot, after=after, timeout=timeout)
    else:
        window.show()
        quit_on_ctrl_c(app)
        code = app.exec()
    quiesce(window)
    return code


def quiesce(window: MainWindow) -> None:
    """Before the interpreter exits: delete the window now, on this thread, let the
    disposal thread finish and collect garbage, so that PyQt's exit cleanup (which walks
    every Qt wrapper and deletes the top-level ones, letting other threads run meanwhile)
    finds next to nothing left to walk: seen as a segfault after ``--screenshot`` had
    saved its picture."""
    import gc

    from PyQt6 import sip

    from observer.gui.disposal import drain

    window.close()  # idempotent: its links are closed, its timers stopped
    if not sip.isdeleted(window):
        sip.delete(window)
    drain()
    gc.collect()


def route_qt_messages(verbose: bool) -> None:
    """Keep Qt's own chatter (say, "This plugin does not support propagateSizeHints()")
    out of the user's terminal: it goes to this module's log at debug level. Critical
    messages, and every message when ``verbose``, still go to stderr."""
    from PyQt6.QtCore import QMessageLogContext, QtMsgType, qInstallMessageHandler

    loud = (QtMsgType.QtCriticalMsg, QtMsgType.QtFatalMsg)

    def handler(kind: QtMsgType, _context: QMessageLogContext, message: str | None) -> None:
        if verbose or kind in loud:
            print(f"qt: {message}", file=sys.stderr, flush=True)
        else:
            log.debug("qt: %s", message)

    _handlers[:] = [handler]
    qInstallMessageHandler(handler)


def keep_running_on_errors() -> None:
    """Log an exception that escapes a Qt slot instead of letting PyQt abort the process."""

    def hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        if issubclass(kind, KeyboardInterrupt):
            from PyQt6.QtWidgets import QApplication

            QApplication.quit()
            return
        log.error("unexpected error in the observer window", exc_info=(kind, value, tb))

    sys.excepthook = hook


def quit_on_ctrl_c(app: QApplication) -> None:
    """Ctrl-C closes the window cleanly: Python only sees signals when it runs, so tick."""
    from PyQt6.QtCore import QTimer

    signal.signal(signal.SIGINT, lambda *_: app.quit())
    timer = QTimer(app)
    timer.timeout.connect(lambda: None)
    timer.start(250)


def save_screenshot(window: MainWindow, path: Path, *, after: float, timeout: float) -> int:
    """Show the window until its tab has drawn real data, wait ``after`` s, save a PNG.

    Every tab is listened to: nodes behind a DNS name appear once it resolved, and the
    window may then move to the Cluster tab."""
    from PyQt6.QtCore import QEventLoop, QTimer
    from PyQt6.QtWidgets import QApplication

    window.show()
    loop = QEventLoop()
    outcome = {"data": False}

    def got_data() -> None:
        if window.wanted_worker is not None:
            return  # the master's data: the picture is of the worker asked for
        if not outcome["data"]:
            outcome["data"] = True
            QTimer.singleShot(int(after * 1000), loop.quit)

    def got_error(_message: str) -> None:
        if not outcome["data"]:  # draw the error banner, then stop waiting
            QTimer.singleShot(200, loop.quit)

    for tab in window.all_tabs:
        tab.applied.connect(got_data)
        tab.failed.connect(got_error)
    QTimer.singleShot(int(timeout * 1000), loop.quit)
    loop.exec()
    QApplication.processEvents()  # pending layout requests: a label set last must not clip
    window.repaint()
    path.parent.mkdir(parents=True, exist_ok=True)
    saved = window.grab().save(str(path))
    window.close()
    if not saved:
        print(f"observer: could not write {path}", file=sys.stderr)
        return 1
    if not outcome["data"]:
        link = window.current_link()
        why = link.error if link is not None and link.error else "no node answered"
        print(f"observer: saved {path}, but no data arrived: {why}", file=sys.stderr)
        return 1
    print(f"saved {path}")
    return 0
