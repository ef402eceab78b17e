"""The Profile tab against a real host (tests/hosts/profiled.py), read with a viewer token:
Start shows a flame graph that grows while the profile runs, hot_function fills the loop
task's part of it, a click zooms, hover text gives samples and percentage, search
highlights, Stop ends it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("PyQt6")
pytest.importorskip("pytestqt")

from PyQt6.QtCore import QPointF, Qt

from observer.gui.flame import FlameNode
from tests.helpers import node_spec as spec
from tests.test_profiler import ProfiledHost

WAIT = 20_000  # ms


@pytest.fixture
def profiled_host(keys) -> Iterator[ProfiledHost]:
    host = ProfiledHost(keys)
    yield host
    host.process.stop()


def find(node: FlameNode, prefix: str) -> FlameNode | None:
    if node.name.startswith(prefix):
        return node
    for child in node.children.values():
        found = find(child, prefix)
        if found is not None:
            return found
    return None


def test_profile_tab_starts_draws_zooms_and_stops(qtbot, window, profiled_host, keys):
    window.set_interval(1)
    tab = window.show_tab("profile")
    window.add_link(spec(profiled_host.address, keys, token="viewer"))
    qtbot.waitUntil(lambda: "No profile" in tab.summary.text(), timeout=WAIT)
    tab.seconds.setValue(30.0)
    tab.split.setCurrentText("tasks")
    qtbot.mouseClick(tab.start_button, Qt.MouseButton.LeftButton)
    # live: partial profiles while it runs
    qtbot.waitUntil(
        lambda: (
            tab.profile is not None
            and tab.profile.state == "running"
            and tab.flame.root.count >= 50
        ),
        timeout=WAIT,
    )
    root = tab.flame.root
    task = root.children.get("task hot-task (hot)")
    assert task is not None, list(root.children)
    hot = find(task, "hot_function (")
    assert hot is not None and hot.count > 0.6 * root.count
    # hover: samples and percentage of the frame under the mouse
    tab.flame.repaint()
    rect = next(r for r, n in tab.flame.boxes if n is hot)
    assert "samples" in tab.flame.describe(hot) and "% of all" in tab.flame.describe(hot)
    # click zooms in: the hot frame fills the width
    qtbot.mouseClick(tab.flame, Qt.MouseButton.LeftButton, pos=rect.center().toPoint())
    assert tab.flame.focus is hot
    tab.flame.repaint()
    box = next(r for r, n in tab.flame.boxes if n is hot)
    assert box.width() == pytest.approx(tab.flame.width(), abs=1)
    assert tab.flame.node_at(QPointF(box.center()).x(), box.center().y()) is hot
    tab.search.setText("hot_fun")
    assert tab.flame.search == "hot_fun"
    qtbot.mouseClick(tab.stop_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: tab.profile.state == "stopped", timeout=WAIT)
    assert not tab.stop_button.isEnabled()
    assert "(stopped)" in tab.summary.text()
    tab.reset_button.click()
    assert tab.flame.focus is tab.flame.root


def test_double_click_on_a_flame_frame_opens_its_source(qtbot, window, profiled_host, keys):
    """A viewer double-clicks hot_function's frame: a window shows the source around it,
    read from the agent (a viewer may: the profile reported that function)."""
    window.set_interval(1)
    tab = window.show_tab("profile")
    window.add_link(spec(profiled_host.address, keys, token="viewer"))
    qtbot.waitUntil(lambda: "No profile" in tab.summary.text(), timeout=WAIT)
    tab.seconds.setValue(30.0)
    qtbot.mouseClick(tab.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(
        lambda: tab.profile is not None and find(tab.flame.root, "hot_function (") is not None,
        timeout=WAIT,
    )
    hot = find(tab.flame.root, "hot_function (")
    tab.flame.repaint()
    rect = next(r for r, n in tab.flame.boxes if n is hot)
    qtbot.mouseDClick(tab.flame, Qt.MouseButton.LeftButton, pos=rect.center().toPoint())
    qtbot.waitUntil(lambda: tab.sources and tab.sources[-1].source is not None, timeout=WAIT)
    source = tab.sources[-1].source
    assert source.file.endswith("profiled.py") and source.line == hot.frame.line
    assert any("def hot_function" in line for line in source.lines)
    tab.sources[-1].close()
    assert not tab.sources
    qtbot.mouseClick(tab.stop_button, Qt.MouseButton.LeftButton)
