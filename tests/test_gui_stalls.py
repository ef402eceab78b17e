"""The Stalls tab and the lag chart's stall marks, driven by pytest-qt against a real host
whose loop the test blocks (tests/hosts/stalls.py), read with a viewer token."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("PyQt6")
pytest.importorskip("pytestqt")

from observer.gui.inspect import PATH_ROLE
from observer.gui.tab_stalls import SERIAL_ROLE, StallWindow
from tests.helpers import node_spec as spec
from tests.test_stalls import StallHost, marker_line

WAIT = 20_000  # ms


@pytest.fixture
def stall_host(keys) -> Iterator[StallHost]:
    host = StallHost(keys)
    yield host
    host.process.stop()


def block(host: StallHost, command: str) -> None:
    start = host.process.mark()
    host.process.send(command)
    host.process.wait_line(rf"^event: {command} done", start=start)


def test_stalls_tab_lists_stalls_and_opens_the_captured_stack(qtbot, window, stall_host, keys):
    window.set_interval(1)
    tab = window.show_tab("stalls")
    link = window.add_link(spec(stall_host.address, keys, token="viewer"))
    block(stall_host, "sleep")
    block(stall_host, "callback")
    qtbot.waitUntil(lambda: tab.view.topLevelItemCount() >= 2, timeout=WAIT)
    newest, older = tab.view.topLevelItem(0), tab.view.topLevelItem(1)
    assert newest.text(3) == "blocking_callback"  # newest first
    assert newest.text(4) == f"hosts/stalls.py:{marker_line('CALLBACK')}"
    assert older.text(3) == "sleeper" and older.text(5).endswith(" (sleeper)")
    assert newest.text(1).endswith(" ms") and newest.text(2).startswith("loop-")
    assert "stalls over 100 ms" in tab.status_text()

    tab._activated(older)  # what a double-click or Enter does
    key = (id(link), "stall", str(older.data(0, SERIAL_ROLE)))
    stall_window = window.targets.inspectors[key]
    assert isinstance(stall_window, StallWindow)
    qtbot.addWidget(stall_window)
    frames = stall_window.frames
    current = frames.currentItem()  # the culprit frame is selected
    assert current.text(1) == "sleeper" and "STALL-SLEEP" in current.text(3)
    assert frames.topLevelItemCount() == len(stall_window.event.frames)
    # the source around the culprit's line, from the agent (a viewer may read it: the
    # agent reported the line with the stall)
    qtbot.waitUntil(lambda: stall_window.source is not None, timeout=WAIT)
    assert stall_window.source.line == marker_line("SLEEP")
    assert "time.sleep(0.5)  # STALL-SLEEP" in stall_window.text.toPlainText()
    assert "Stall #" in stall_window.header.text() and "task: Task-" in stall_window.header.text()
    assert current.data(0, PATH_ROLE) == stall_window.event.frames[-1].index
    # a second double-click raises the same window
    tab._activated(older)
    assert window.targets.inspectors[key] is stall_window
    stall_window.close()
    assert key not in window.targets.inspectors


def test_the_lag_chart_marks_each_stall(qtbot, window, stall_host, keys):
    window.set_interval(1)
    tab = window.show_tab("charts")
    window.add_link(spec(stall_host.address, keys, token="viewer"))
    qtbot.waitUntil(lambda: tab.point_count() >= 1, timeout=WAIT)
    block(stall_host, "sleep")
    qtbot.waitUntil(lambda: len(tab.stall_marks.data) >= 1, timeout=WAIT)
    event = tab.stalls[-1]
    xs, ys = tab.stall_marks.getData()
    assert xs[-1] == pytest.approx(event.start) and ys[-1] == pytest.approx(event.duration * 1000)
    assert "1 stall" in tab.plots[4].titleLabel.text
    assert "sleeper" in tab._stall_tip(xs[-1], ys[-1], event.serial)
