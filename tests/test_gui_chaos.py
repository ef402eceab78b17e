"""The chaos dialog against the demo service: pytest-qt drives the real window and dialog."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

pytest.importorskip("PyQt6")
pytest.importorskip("pytestqt")

from PyQt6.QtCore import Qt
from PyQt6.QtGui import QKeySequence

from bench.delayproxy import DelayProxy
from observer.chaos import ChaosRefused, Summary
from observer.client import Node, connect
from observer.gui.chaos_dialog import ChaosDialog
from observer.gui.link import NodeLink, Status
from observer.gui.window import MainWindow
from observer.nodesfile import NodeSpec
from tests.helpers import node_spec as spec

WAIT = 20_000  # ms
WORKERS = "worker-?"  # not worker-*: that also matches short-lived worker-K-job sub-tasks


@pytest.fixture
def operator(demo, keys) -> Iterator[Node]:
    node = connect(demo.agent_address, token_file=keys.operator_token, fingerprint=keys.fingerprint)
    yield node
    node.close()


def node_up(qtbot, window: MainWindow, node_spec: NodeSpec) -> NodeLink:
    link = window.add_link(node_spec)
    qtbot.waitUntil(lambda: link.status is Status.UP, timeout=WAIT)
    return link


def dialog_for(qtbot, window: MainWindow, match: str = WORKERS) -> ChaosDialog:
    dialog = window.open_chaos()
    qtbot.waitExposed(dialog)
    dialog.match_edit.setText(match)
    return dialog


def run(qtbot, dialog: ChaosDialog) -> Summary | BaseException:
    with qtbot.waitSignal(dialog.finished_run, timeout=WAIT) as done:
        qtbot.mouseClick(dialog.start_button, Qt.MouseButton.LeftButton)
    return done.args[0]


def pending_workers(node: Node) -> dict[str, str]:
    return {
        t.id: t.name
        for t in node.tasks(match="worker-")
        if t.state == "pending" and re.fullmatch(r"worker-\d", t.name)
    }


def test_tools_menu_opens_the_dialog_without_blocking_the_window(qtbot, window, demo, keys):
    link = node_up(qtbot, window, spec(demo.agent_address, keys))
    assert window.chaos_action.shortcut() == QKeySequence("Ctrl+K")
    window.chaos_action.trigger()
    dialog = window.chaos_dialog
    assert dialog is not None and dialog.isVisible() and not dialog.isModal()
    assert window.open_chaos() is dialog  # one dialog, raised again
    assert [item.data(Qt.ItemDataRole.UserRole + 1) for item in _items(dialog)] == [link]
    assert dialog.chosen() == [link]  # the current node is checked
    assert "demo" in _items(dialog)[0].text() and demo.agent_address in _items(dialog)[0].text()


def test_dry_run_then_real_run_show_actions_and_recoveries(qtbot, window, demo, keys, operator):
    qtbot.waitUntil(lambda: len(pending_workers(operator)) == 3, timeout=WAIT)
    node_up(qtbot, window, spec(demo.agent_address, keys))
    dialog = dialog_for(qtbot, window)
    dialog.count_box.setValue(2)
    dialog.every_box.setValue(0.2)
    dialog.seed_edit.setText("9")
    dialog.dry_run_box.setChecked(True)
    before = pending_workers(operator)
    dry = run(qtbot, dialog)
    assert isinstance(dry, Summary) and dry.dry_run and dry.seed == 9
    assert [a["result"] for a in dry.actions] == ["dry-run", "dry-run"]
    assert dialog.log.toPlainText().count("would cancel task-") == 2
    assert "dry run: 2 picks, nothing touched; seed 9" in dialog.summary_label.text()
    assert pending_workers(operator) == before

    dialog.dry_run_box.setChecked(False)
    started = time.monotonic()
    with qtbot.waitSignal(dialog.finished_run, timeout=WAIT) as done:
        dialog.start()
        assert time.monotonic() - started < 0.5  # the run is on its own thread
        assert dialog.running and not dialog.start_button.isEnabled()
    summary = done.args[0]
    assert isinstance(summary, Summary) and not summary.dry_run
    assert [a["result"] for a in summary.actions] == ["ok", "ok"]
    assert summary.recovered == 2, summary.recoveries
    log = dialog.log.toPlainText()
    assert len(re.findall(r"cancel task-\d+ worker-\d: ok", log)) == 2, log
    assert log.count("back within") == 2, log
    text = dialog.summary_label.text()
    assert text.startswith(summary.run) and "2 actions, 2 victims, 2 recovered" in text
    assert dialog.start_button.isEnabled() and not dialog.stop_button.isEnabled()
    audited = [r.target for r in operator.audit() if r.run == summary.run and r.action == "cancel"]
    assert audited == [a["target"] for a in summary.actions]


def test_stop_ends_a_long_run_at_once(qtbot, window, demo, keys):
    node_up(qtbot, window, spec(demo.agent_address, keys))
    dialog = dialog_for(qtbot, window)
    dialog.duration_radio.setChecked(True)
    dialog.duration_box.setValue(60)
    dialog.every_box.setValue(0.5)
    assert not dialog.count_box.isEnabled() and dialog.duration_box.isEnabled()
    qtbot.mouseClick(dialog.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "back within" in dialog.log.toPlainText(), timeout=WAIT)
    assert dialog.stop_button.isEnabled()
    stopped_at = time.monotonic()
    with qtbot.waitSignal(dialog.finished_run, timeout=5000) as done:
        qtbot.mouseClick(dialog.stop_button, Qt.MouseButton.LeftButton)
    assert time.monotonic() - stopped_at < 2.0
    summary = done.args[0]
    assert isinstance(summary, Summary) and summary.stopped and summary.seconds < 30
    assert "stopped: " in dialog.summary_label.text()
    assert dialog.start_button.isEnabled()


def test_viewer_node_refuses_start_with_the_reason(qtbot, window, demo, keys, operator):
    qtbot.waitUntil(lambda: len(pending_workers(operator)) == 3, timeout=WAIT)
    before = pending_workers(operator)
    link = node_up(qtbot, window, spec(demo.agent_address, keys, "viewer", name="demo-ro"))
    assert not link.can_control
    dialog = dialog_for(qtbot, window)
    assert "[viewer: read-only]" in _items(dialog)[0].text()
    outcome = run(qtbot, dialog)
    assert isinstance(outcome, ChaosRefused)
    text = dialog.summary_label.text()
    assert text.startswith("Refused: ") and "viewer" in text and "nothing was touched" in text
    assert "cancel task-" not in dialog.log.toPlainText()
    assert pending_workers(operator) == before
    run_id = re.search(r"chaos-[0-9a-f]{8}", text).group(0)
    records = [r for r in operator.audit() if r.run == run_id]
    assert [(r.action, r.result, r.role) for r in records] == [("chaos start", "denied", "viewer")]


def test_bad_input_is_shown_and_nothing_starts(qtbot, window, demo, keys):
    node_up(qtbot, window, spec(demo.agent_address, keys))
    dialog = dialog_for(qtbot, window, match="  ")
    qtbot.mouseClick(dialog.start_button, Qt.MouseButton.LeftButton)
    assert not dialog.running and "a match glob is required" in dialog.summary_label.text()
    dialog.match_edit.setText(WORKERS)
    _items(dialog)[0].setCheckState(Qt.CheckState.Unchecked)
    qtbot.mouseClick(dialog.start_button, Qt.MouseButton.LeftButton)
    assert not dialog.running and dialog.summary_label.text() == "Choose at least one node."
    dialog.kind_box.setCurrentText("process")
    assert [dialog.action_box.itemData(i) for i in range(dialog.action_box.count())] == [
        "term",
        "kill",
    ]


def _items(dialog: ChaosDialog) -> list:
    return [dialog.node_list.item(i) for i in range(dialog.node_list.count())]


def test_node_entry_follows_its_status_after_the_dialog_opened(qtbot, window, demo, keys):
    """Opened before the node connected, the entry first says so, then names the node.
    (Through a 300 ms-each-way proxy, connecting takes seconds: the order is certain.)"""
    host, port = demo.agent_address.rsplit(":", 1)
    with DelayProxy(host, int(port), delay=0.3) as proxy:
        link = window.add_link(spec(proxy.address, keys))
        dialog = window.open_chaos()
        assert _items(dialog)[0].text().endswith(" - connecting")
        qtbot.waitUntil(lambda: link.status is Status.UP, timeout=WAIT)
        qtbot.waitUntil(lambda: _items(dialog)[0].text().startswith("demo ("), timeout=WAIT)
        assert "connecting" not in _items(dialog)[0].text()
