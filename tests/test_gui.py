"""The desktop observer against real agents: pytest-qt drives the real window."""

from __future__ import annotations

import itertools
import os
import re
import signal
import socket
import statistics
import subprocess
import sys

import pytest

pytest.importorskip("PyQt6")
pytest.importorskip("pytestqt")

from PyQt6.QtCore import Qt, QTimer
from PyQt6.QtWidgets import QApplication, QDialogButtonBox, QMessageBox

from bench.delayproxy import DelayProxy
from observer.client import connect
from observer.gui.actions import VIEWER_REASON
from observer.gui.link import NodeLink, Status
from observer.gui.models import ID_ROLE, KIND_ROLE
from observer.gui.nodedialog import AddNodeDialog
from observer.gui.rows import COROUTINE, FUNCTION, ID, NAME
from observer.gui.window import MainWindow
from observer.nodesfile import NodeSpec, load_nodes
from tests.helpers import ROOT, freeze
from tests.helpers import node_spec as spec

WAIT = 20_000  # ms


def shown_status(link: NodeLink) -> str:
    """The status the node list shows for ``link`` (first tooltip line), '' if not listed."""
    node_set = link.parent()  # the window's NodeSet, whose parent is the window
    window = node_set.parent() if node_set is not None else None
    item = window.nodes.item_of(link) if isinstance(window, MainWindow) else None
    return item.toolTip(0).split("\n", 1)[0].rsplit(": ", 1)[-1] if item is not None else ""


def wait_status(qtbot, link: NodeLink, status: Status) -> None:
    """Wait until the window shows ``status`` for ``link``: the worker sets the attribute
    first and the GUI thread redraws after, so the attribute alone is not what users see."""
    qtbot.waitUntil(
        lambda: link.status is status and shown_status(link) == status.value, timeout=WAIT
    )


def wait_up(qtbot, link: NodeLink) -> None:
    wait_status(qtbot, link, Status.UP)


def tree_names(win: MainWindow) -> dict[str, list]:
    """Rows of the Processes tree by name (as the model holds them)."""
    data = win.processes.model.data_
    out: dict[str, list] = {}
    for item in data.by_id.values() if data else ():
        out.setdefault(data.row_values(item)[NAME], []).append(item)
    return out


def wait_tree(qtbot, win: MainWindow, *names: str) -> dict[str, list]:
    qtbot.waitUntil(lambda: all(n in tree_names(win) for n in names), timeout=WAIT)
    return tree_names(win)


# ------------------------------------------------------------------ Processes tree


def test_tree_shows_demo_tasks_threads_and_children(qtbot, window, demo, keys):
    window.show_tab("processes")
    window.add_link(spec(demo.agent_address, keys))
    names = wait_tree(qtbot, window, "supervisor", "worker-1", "http-server", "cache-janitor")
    kinds = {item.kind for items in names.values() for item in items}
    assert {"process", "thread", "loop", "task", "child"} <= kinds
    assert sum(i.kind == "child" for items in names.values() for i in items) >= 2
    worker = names["worker-1"][0]
    data = window.processes.model.data_
    assert worker.parent is not None and data.row_values(worker.parent)[NAME] == "supervisor"
    # the worker row is really on screen: its parents are expanded the first time
    index = window.processes.model.index_of(worker.id)
    assert index.isValid() and window.processes.view.isExpanded(index.parent())
    assert "tasks" in window.counts_label.text()
    threads = [item for items in names.values() for item in items if item.kind == "thread"]
    agent = sum(data.row_values(item)[NAME].endswith(" [agent]") for item in threads)
    assert agent >= 1  # the host's threads are counted apart from the agent's own
    assert f"{len(threads) - agent} threads (+{agent} agent)" in window.processes.status_text()


def test_tree_keeps_expansion_and_selection_across_refreshes(qtbot, window, demo, keys):
    tab = window.show_tab("processes")
    window.add_link(spec(demo.agent_address, keys))
    names = wait_tree(qtbot, window, "supervisor", "http-server")
    supervisor = names["supervisor"][0].id
    http = names["http-server"][0].id
    view, model = tab.view, tab.model
    view.collapse(model.index_of(supervisor))
    view.setCurrentIndex(model.index_of(http))
    for _ in range(2):  # two full refreshes replace the whole model
        with qtbot.waitSignal(tab.applied, timeout=WAIT):
            window.refresh()
    assert not view.isExpanded(model.index_of(supervisor))
    assert view.isExpanded(model.index_of(names["main"][0].id))
    assert tab.selected_id() == http


def test_tree_filter_keeps_matches_and_their_ancestors(qtbot, window, demo, keys):
    tab = window.show_tab("processes")
    window.add_link(spec(demo.agent_address, keys))
    names = wait_tree(qtbot, window, "worker-2", "http-server")
    qtbot.keyClick(window, Qt.Key.Key_F, Qt.KeyboardModifier.ControlModifier)
    assert tab.filter.hasFocus()
    qtbot.keyClicks(tab.filter, "worker-2")
    model = tab.model
    worker = model.index_of(names["worker-2"][0].id)
    assert worker.isValid() and tab.view.isExpanded(worker.parent())
    assert not model.index_of(names["http-server"][0].id).isValid()
    assert model.hits >= 1 and "match" in tab.status_text()
    tab.filter.clear()
    assert model.index_of(names["http-server"][0].id).isValid()


# ------------------------------------------------------------------ table


def visible(model, column: int) -> list[str]:
    return [model.index(r, column).data() for r in range(model.rowCount())]


def test_table_sorts_and_filters(qtbot, window, demo, keys):
    tab = window.show_tab("table")
    window.add_link(spec(demo.agent_address, keys))
    qtbot.waitUntil(lambda: "worker-1" in visible(tab.model, NAME), timeout=WAIT)
    model = tab.model
    total = model.rowCount()
    tab.view.sortByColumn(NAME, Qt.SortOrder.AscendingOrder)  # what a header click does
    names = visible(model, NAME)
    assert names == sorted(names, key=str.lower)
    tab.view.sortByColumn(ID, Qt.SortOrder.DescendingOrder)
    ids = [(i.rpartition("-")[0], int(i.rpartition("-")[2])) for i in visible(model, ID)]
    assert ids == sorted(ids, reverse=True)
    with qtbot.waitSignal(tab.applied, timeout=WAIT):  # sort order survives a refresh
        window.refresh()
    ids = [(i.rpartition("-")[0], int(i.rpartition("-")[2])) for i in visible(model, ID)]
    assert ids == sorted(ids, reverse=True)
    qtbot.keyClicks(tab.filter, "Worker")
    rows = [  # the filter matches a name, a task's coroutine or a function
        " ".join(model.index(r, c).data() for c in (NAME, COROUTINE, FUNCTION))
        for r in range(model.rowCount())
    ]
    assert rows and all("worker" in row.lower() for row in rows)
    assert model.rowCount() < total
    assert f"{model.rowCount()} of" in window.counts_label.text()


# ------------------------------------------------------------------ inspect


def test_inspect_task_shows_stack_and_lazy_locals(qtbot, window, demo, keys):
    tab = window.show_tab("table")
    window.add_link(spec(demo.agent_address, keys))
    qtbot.waitUntil(lambda: "supervisor" in visible(tab.model, NAME), timeout=WAIT)
    row = visible(tab.model, NAME).index("supervisor")
    tab.view.setCurrentIndex(tab.model.index(row, 0))
    qtbot.keyClick(tab.view, Qt.Key.Key_Return)  # Enter inspects, like a double-click
    assert len(window.targets.inspectors) == 1
    inspector = next(iter(window.targets.inspectors.values()))
    qtbot.addWidget(inspector)
    qtbot.waitUntil(lambda: inspector.frames.topLevelItemCount() > 0, timeout=WAIT)
    functions = [inspector.frames.topLevelItem(i).text(1) for i in range(3)]
    assert any("supervise" in f for f in functions)
    assert "supervisor" in inspector.windowTitle()
    # the selected (innermost) frame's locals are shown; expand one that can be expanded
    qtbot.waitUntil(lambda: inspector.variables.topLevelItemCount() > 0, timeout=WAIT)
    inspector.frames.setCurrentItem(inspector.frames.topLevelItem(0))
    for i in range(inspector.frames.topLevelItemCount()):
        inspector.frames.setCurrentItem(inspector.frames.topLevelItem(i))
        expandable = [
            inspector.variables.topLevelItem(j)
            for j in range(inspector.variables.topLevelItemCount())
            if inspector.variables.topLevelItem(j).childCount() == 1
        ]
        if expandable:
            break
    assert expandable, "some frame of the supervisor has an expandable local (self)"
    item = expandable[0]
    item.setExpanded(True)
    qtbot.waitUntil(lambda: item.child(0).text(0) != "loading…", timeout=WAIT)
    assert item.childCount() >= 1 and item.child(0).text(0) != "(unavailable)"


def test_inspect_thread_and_dead_target(qtbot, window, demo, keys):
    window.show_tab("processes")
    link = window.add_link(spec(demo.agent_address, keys))
    names = wait_tree(qtbot, window, "cache-janitor")
    janitor = names["cache-janitor"][0].id
    inspector = window.targets.inspect(link, janitor, "thread", "cache-janitor")
    qtbot.addWidget(inspector)
    qtbot.waitUntil(lambda: inspector.frames.topLevelItemCount() > 0, timeout=WAIT)
    assert inspector.frames.topLevelItem(0).text(2)  # file:line of the innermost frame
    gone = window.targets.inspect(link, "task-999999999", "task", "ghost")
    qtbot.addWidget(gone)
    qtbot.waitUntil(lambda: gone.dead, timeout=WAIT)
    assert gone.windowTitle().startswith("[DEAD]")
    assert "task-999999999" in gone.banner.text()


def test_inspect_exposed_object_from_system_tab(qtbot, window, demo, keys):
    tab = window.show_tab("system")
    link = window.add_link(spec(demo.agent_address, keys))
    qtbot.waitUntil(lambda: tab.info is not None, timeout=WAIT)
    assert {e.name for e in tab.info.exposed} >= {"cache", "jobs", "config"}
    # Threads: the host's apart from the agent's own (its server and this connection), as
    # the Threads chart counts them, adding up to the process's thread count.
    threads = [
        tab.view.topLevelItem(i).child(j)
        for i in range(tab.view.topLevelItemCount())
        for j in range(tab.view.topLevelItem(i).childCount())
        if tab.view.topLevelItem(i).child(j).text(0) == "Threads"
    ]
    shown = re.fullmatch(r"(\d+) \(\+(\d+) agent\)", threads[0].text(1))
    assert shown, threads[0].text(1)
    host, agents = int(shown[1]), int(shown[2])
    assert agents >= 1 and host + agents == tab.info.num_threads
    assert f"{host} (+{agents} agent) threads" in tab.status_text()
    inspector = window.targets.inspect_exposed(link, "config")
    qtbot.addWidget(inspector)
    qtbot.waitUntil(lambda: inspector.variables.topLevelItemCount() > 0, timeout=WAIT)
    values = {
        inspector.variables.topLevelItem(i).text(0): inspector.variables.topLevelItem(i).text(2)
        for i in range(inspector.variables.topLevelItemCount())
    }
    assert "demo-secret" not in " ".join(values.values())


# ------------------------------------------------------------------ kill


def test_kill_from_gui_cancels_and_the_supervisor_replaces_it(qtbot, window, demo, keys):
    tab = window.show_tab("table")
    window.add_link(spec(demo.agent_address, keys))
    qtbot.waitUntil(lambda: "worker-2" in visible(tab.model, NAME), timeout=WAIT)
    row = visible(tab.model, NAME).index("worker-2")
    old_id = tab.model.index(row, ID).data()
    tab.view.setFocus()
    tab.view.setCurrentIndex(tab.model.index(row, 0))
    qtbot.keyClick(tab.view, Qt.Key.Key_Delete)
    box = window.targets.confirm_box
    assert box is not None and old_id in box.text() and "demo" in box.text().lower()
    buttons = QMessageBox.StandardButton
    yes, no = box.button(buttons.Yes), box.button(buttons.Cancel)
    assert (yes.text(), no.text()) == ("Cancel task", "Keep running")  # no "Cancel" twice
    assert box.defaultButton() is no
    qtbot.mouseClick(no, Qt.MouseButton.LeftButton)  # keep it: nothing is sent
    assert window.targets.confirm_box is None
    assert not window.links[0].running(f"control:{old_id}")  # nothing was asked of the node
    qtbot.keyClick(tab.view, Qt.Key.Key_Delete)
    box = window.targets.confirm_box
    assert box is not None
    with qtbot.waitSignal(window.targets.control_done, timeout=WAIT) as done:
        qtbot.mouseClick(box.button(QMessageBox.StandardButton.Yes), Qt.MouseButton.LeftButton)
    assert done.args[0].ok, done.args[0]
    assert old_id in window.statusBar().currentMessage()

    def replaced() -> bool:
        rows = [
            (tab.model.index(r, ID).data(), tab.model.index(r, 3).data())
            for r, n in enumerate(visible(tab.model, NAME))
            if n == "worker-2"
        ]
        return any(i != old_id and state == "pending" for i, state in rows)

    qtbot.waitUntil(replaced, timeout=WAIT)
    with connect(
        demo.agent_address, token_file=keys.viewer_token, fingerprint=keys.fingerprint
    ) as node:  # in the host: the old task really was cancelled, a new worker-2 runs
        states = {t.id: (t.name, t.state) for t in node.tasks()}
    assert states.get(old_id, ("worker-2", "cancelled")) == ("worker-2", "cancelled")
    assert any(v == ("worker-2", "pending") for k, v in states.items() if k != old_id)


def test_viewer_token_disables_kill_with_a_reason(qtbot, window, demo, keys):
    tab = window.show_tab("table")
    link = window.add_link(spec(demo.agent_address, keys, token="viewer"))
    qtbot.waitUntil(lambda: "worker-1" in visible(tab.model, NAME), timeout=WAIT)
    assert link.role == "viewer"
    row = visible(tab.model, NAME).index("worker-1")
    index = tab.model.index(row, 0)
    menu = window.targets.row_menu(link, index.data(ID_ROLE), index.data(KIND_ROLE), "worker-1")
    entries = {a.text(): a for a in menu.actions() if a.text()}
    assert entries["Inspect"].isEnabled()
    assert not entries["Cancel task"].isEnabled()
    assert entries["Cancel task"].toolTip() == VIEWER_REASON
    tab.view.setFocus()
    tab.view.setCurrentIndex(index)
    qtbot.keyClick(tab.view, Qt.Key.Key_Delete)
    assert window.targets.confirm_box is None
    assert "viewer" in window.statusBar().currentMessage()


# ------------------------------------------------------------------ node states


def test_add_node_dialog_checks_connects_and_remembers(qtbot, window, demo, keys):
    seen: list[str] = []

    def fill() -> None:
        dialog = QApplication.activeModalWidget()
        if not isinstance(dialog, AddNodeDialog):
            QTimer.singleShot(20, fill)  # not shown yet
            return
        ok = dialog.findChild(QDialogButtonBox).button(QDialogButtonBox.StandardButton.Ok)
        dialog.address.setText("no-port-here")
        qtbot.mouseClick(ok, Qt.MouseButton.LeftButton)
        seen.append(dialog.error.text())
        dialog.address.setText(demo.agent_address)
        dialog.token_file.setText(str(keys.viewer_token) + ".missing")
        qtbot.mouseClick(ok, Qt.MouseButton.LeftButton)
        seen.append(dialog.error.text())
        dialog.name.setText("demo-node")
        dialog.token_file.setText(str(keys.viewer_token))
        dialog.fingerprint.setText(keys.fingerprint)
        qtbot.mouseClick(ok, Qt.MouseButton.LeftButton)

    QTimer.singleShot(0, fill)
    window.add_node()  # modal: returns when the dialog is accepted
    assert "Address" in seen[0] and "host:port" in seen[0]
    assert "does not exist" in seen[1]
    (saved,) = load_nodes(window.nodes_file)
    assert (saved.name, saved.address) == ("demo-node", demo.agent_address)
    link = window.links[-1]
    wait_up(qtbot, link)
    assert window.current_link() is link and link.role == "viewer"


def test_agent_stop_marks_down_and_restart_brings_it_back(qtbot, window, make_host, keys):
    host = make_host()
    window.set_interval(1)
    tab = window.show_tab("processes")
    link = window.add_link(spec(host.address, keys))
    wait_up(qtbot, link)
    qtbot.waitUntil(lambda: tab.last_applied > 0, timeout=WAIT)
    mark = host.process.mark()
    host.process.send("agent-stop")
    host.process.wait_line("agent stopped", start=mark)
    wait_status(qtbot, link, Status.DOWN)
    qtbot.waitUntil(lambda: tab.banner.isVisible(), timeout=WAIT)
    assert "Showing data from" in tab.banner.text()  # the last data stays, marked stale
    assert "stale" in window.refresh_label.text()
    host.process.send("agent-start")
    host.process.wait_line("agent started", start=mark)
    window.refresh()  # Ctrl-R retries at once instead of waiting for the backoff
    wait_status(qtbot, link, Status.UP)
    qtbot.waitUntil(lambda: not tab.banner.isVisible(), timeout=WAIT)
    assert link.restarted == ""  # same process, same pid


def test_exited_process_is_dead(qtbot, window, make_host, keys):
    host = make_host()
    window.set_interval(1)
    link = window.add_link(spec(host.address, keys))
    wait_up(qtbot, link)
    host.process.stop()
    qtbot.waitUntil(lambda: "dead" in window.node_label.text(), timeout=WAIT)
    assert link.status is Status.DEAD


def test_wrong_token_shows_auth_failed(qtbot, window, demo, other_keys, keys):
    bad = NodeSpec(
        address=demo.agent_address,
        token_file=str(other_keys.operator_token),
        fingerprint=keys.fingerprint,
    )
    link = window.add_link(bad)
    wait_status(qtbot, link, Status.AUTH_FAILED)
    assert "authentication" in link.error.lower()
    item = window.nodes.item_of(link)
    assert item is not None and Status.AUTH_FAILED.value in item.text(2)


def test_slow_link_shows_a_spinner_and_a_dropped_link_recovers(qtbot, window, demo, keys):
    host, port = demo.agent_address.rsplit(":", 1)
    with DelayProxy(host, int(port), delay=0.3) as proxy:
        # refreshes only when asked: a System tab refresh is three round trips (process,
        # children, threads), 1.8 s through this link, so timed ticks would keep it busy
        window.set_paused(True)
        tab = window.show_tab("system")
        link = window.add_link(spec(proxy.address, keys))
        qtbot.waitUntil(lambda: tab.last_applied > 0, timeout=WAIT)
        window.refresh()
        qtbot.waitUntil(lambda: window.spinner.text() != "", timeout=WAIT)  # waiting, not frozen
        qtbot.waitUntil(lambda: link.busy == 0 and window.spinner.text() == "", timeout=WAIT)
        window.set_paused(False)
        proxy.cut()  # the link drops: the next refresh fails, the one after reconnects
        wait_status(qtbot, link, Status.DOWN)
        assert tab.info is not None  # the last data is still shown
        window.refresh()
        wait_status(qtbot, link, Status.UP)


# ------------------------------------------------------------------ polling and charts


def test_only_the_visible_tab_polls_and_pause_stops_it(qtbot, window, demo, keys):
    tab = window.show_tab("processes")
    link = window.add_link(spec(demo.agent_address, keys))
    with qtbot.waitSignal(tab.applied, timeout=WAIT):
        window.tick()
    assert window.system.last_applied == 0 and window.table.last_applied == 0
    qtbot.waitUntil(lambda: link.busy == 0, timeout=WAIT)
    window.set_paused(True)
    window.tick()
    assert link.busy == 0  # nothing was asked of the node
    assert "PAUSED" in window.refresh_label.text()


def test_charts_are_filled_from_history(qtbot, window, demo, keys):
    tab = window.show_tab("charts")
    window.add_link(spec(demo.agent_address, keys))
    qtbot.waitUntil(lambda: tab.point_count() >= 2, timeout=WAIT)
    before = len(tab.samples)
    assert before >= 2  # the agent's history arrives with the first refresh
    tab.set_window(600)
    assert tab.window_seconds == 600
    with qtbot.waitSignal(tab.applied, timeout=WAIT):
        window.refresh()
    assert len(tab.samples) >= before
    assert "CPU" in tab.plots[0].titleLabel.text
    # the bar states the data's real rate: the median spacing of the samples shown
    times = [s.time for s in tab.samples if s.time >= tab.samples[-1].time - 600]
    real = statistics.median(b - a for a, b in itertools.pairwise(times))
    said = re.match(r"a sample every ([\d.]+) s", tab.interval_label.text())
    assert said is not None, tab.interval_label.text()
    assert abs(float(said.group(1)) - max(real, 1.0)) <= 0.25 * max(real, 1.0), (said, real)


def test_charts_break_the_line_where_a_frozen_agent_took_no_samples(qtbot, window, make_host, keys):
    host = make_host()
    window.set_interval(1)
    tab = window.show_tab("charts")
    link = window.add_link(spec(host.address, keys, timeout=4.0))
    qtbot.waitUntil(lambda: tab.point_count() >= 3, timeout=WAIT)
    assert tab.breaks() == 0
    frozen_at = tab.samples[-1].time
    freeze(host.process.proc.pid)  # its sampler stops with it
    try:
        wait_status(qtbot, link, Status.DOWN)  # a history call timed out: 4 s at least
    finally:
        os.kill(host.process.proc.pid, signal.SIGCONT)
    window.refresh()
    qtbot.waitUntil(lambda: tab.samples[-1].time > frozen_at + 1, timeout=WAIT)
    hole = max(b.time - a.time for a, b in itertools.pairwise(tab.samples))
    assert hole >= 4.0, "the host really took no samples while frozen"
    assert tab.breaks() >= 1
    assert "gap" in tab.interval_label.text()


# ------------------------------------------------------------------ command line


def observer(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "observer", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_screenshot_command_writes_a_png_of_real_data(demo, keys, tmp_path):
    out = tmp_path / "shot.png"
    result = observer(
        "gui",
        demo.agent_address,
        "--token-file",
        str(keys.viewer_token),
        "--fingerprint",
        keys.fingerprint,
        "--screenshot",
        str(out),
        "--tab",
        "table",
        "--after",
        "0.2",
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", "Qt's own messages stay out of the terminal without --verbose"
    header = out.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")
    assert (width, height) >= (800, 600)


def test_qt_messages_reach_the_terminal_only_when_verbose(qtbot, capfd):
    from PyQt6.QtCore import qInstallMessageHandler, qWarning

    from observer.gui.app import route_qt_messages

    previous = qInstallMessageHandler(None)
    try:
        for verbose in (False, True):
            route_qt_messages(verbose)
            qWarning(f"plugin noise, verbose={verbose}")
            assert ("plugin noise" in capfd.readouterr().err) is verbose
    finally:
        qInstallMessageHandler(previous)


def test_screenshot_of_unreachable_node_says_why(keys, tmp_path):
    with socket.socket() as sock:  # a port nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = observer(
        "gui",
        f"127.0.0.1:{port}",
        "--token-file",
        str(keys.viewer_token),
        "--fingerprint",
        keys.fingerprint,
        "--screenshot",
        str(tmp_path / "x.png"),
        "--after",
        "0",
    )
    assert result.returncode != 0
    assert "cannot connect" in result.stderr


def test_no_display_gives_one_clear_message():
    from observer.gui.qtcheck import window_problem

    env = {"PATH": "/usr/bin:/bin"}
    message = window_problem(env)
    if sys.platform.startswith("linux"):
        assert message is not None and "DISPLAY" in message and "--screenshot" in message
    assert window_problem({"QT_QPA_PLATFORM": "offscreen"}) is None


def test_cli_without_display_exits_with_the_message(tmp_path):
    if not sys.platform.startswith("linux"):
        pytest.skip("the DISPLAY check is specific to X11/Wayland systems")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    for args in (["gui"], []):  # plain `observer` opens the window too
        result = observer(*args, env=env)
        assert result.returncode == 3, result.stderr
        assert "no display" in result.stderr and "Traceback" not in result.stderr
