"""The Memory tab against a real host that leaks on purpose (tests/hosts/leaky.py)."""

from __future__ import annotations

import pytest

pytest.importorskip("PyQt6")
pytest.importorskip("pytestqt")

from PyQt6.QtCore import Qt
from PyQt6.QtWidgets import QMessageBox

from observer.gui.source import SiteWindow
from observer.gui.tab_memory import BASELINE_REASON, TRACE_REASON
from tests.test_gui import WAIT, spec, wait_up

RECORD = "__main__.LeakyRecord"


def open_memory(qtbot, window, leaky, role="operator"):
    tab = window.show_tab("memory")
    link = window.add_link(spec(leaky.address, leaky.keys, role))
    wait_up(qtbot, link)
    qtbot.waitUntil(lambda: tab.census is not None, timeout=WAIT)  # asked on first show
    return tab, link


def test_census_table_growth_and_filter(qtbot, window, leaky):
    tab, _link = open_memory(qtbot, window, leaky)
    assert tab.types.source.rowCount() > 10
    counts = [int(c.replace(",", "")) for c in tab.types.column_texts(1)]
    assert counts == sorted(counts, reverse=True)  # largest count first
    assert tab.memory is not None and tab.memory.rss > 0
    assert len(tab.points) >= 1 and "rss" in tab.status_text()
    assert "gc-tracked objects" in tab.census_label.text()

    leaky.pause()
    first = tab.census
    qtbot.mouseClick(tab.baseline_button, Qt.MouseButton.LeftButton)  # an operator action
    qtbot.waitUntil(
        lambda: tab.census is not first and tab.census.baseline is not None, timeout=WAIT
    )
    before = leaky.pause()
    leaky.leak_for(25)
    after = leaky.pause()
    baseline = tab.census
    qtbot.mouseClick(tab.growth_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: tab.census is not baseline, timeout=WAIT)
    assert tab.types.column_texts(0)[0] == RECORD  # the leak is the top row
    assert tab.types.column_texts(3)[0] == f"+{after['records'] - before['records']:,}"

    tab.census_filter.setText("leakyrec")
    assert tab.types.column_texts(0) == [RECORD]
    tab.census_filter.setText("")


def chart_title(tab) -> str:
    return tab.plot.getPlotItem().titleLabel.text


def test_chart_and_gc_pane_while_tracemalloc_is_off(qtbot, window, leaky):
    tab, _link = open_memory(qtbot, window, leaky, role="viewer")
    qtbot.waitUntil(lambda: len(tab.points) >= 2, timeout=WAIT)
    assert tab.plot.getPlotItem().legend is None, "no legend box over the RSS curve"
    assert not tab.traced_line_drawn()
    title = chart_title(tab)
    assert "RSS" in title and "tracemalloc off" in title and "traced" not in title
    facts = tab.facts  # the GC rows' names are whole: "Uncollectable (gen 0/1/2)"
    names = [
        facts.topLevelItem(i).child(j).text(0)
        for i in range(facts.topLevelItemCount())
        for j in range(facts.topLevelItem(i).childCount())
    ]
    assert "Uncollectable (gen 0/1/2)" in names
    wanted = max(facts.fontMetrics().horizontalAdvance(n) for n in names)
    assert facts.columnWidth(0) >= wanted + facts.indentation()


def test_viewer_sees_why_tracemalloc_start_is_disabled(qtbot, window, leaky):
    tab, _link = open_memory(qtbot, window, leaky, role="viewer")
    assert not tab.start_button.isEnabled() and not tab.stop_button.isEnabled()
    assert tab.start_button.toolTip() == TRACE_REASON
    assert tab.confirm_start() is None  # no dialog, nothing sent
    # the census baseline is shared by every observer of the node: operators only
    assert not tab.baseline_button.isEnabled() and tab.baseline_button.toolTip() == BASELINE_REASON
    assert tab.growth_button.isEnabled()
    assert "not running" in tab.trace_label.text()
    assert not tab.top_button.isEnabled()


def test_start_tracing_top_sites_and_open_a_site(qtbot, window, leaky):
    tab, _link = open_memory(qtbot, window, leaky)
    assert tab.start_button.isEnabled()
    tab.frames_box.setValue(4)
    box = tab.confirm_start()
    assert box is not None and "4 frames" in box.text() and leaky.address in box.text()
    qtbot.mouseClick(box.button(QMessageBox.StandardButton.Yes), Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: tab.memory is not None and tab.memory.tracemalloc.tracing, timeout=WAIT)
    assert tab.stop_button.isEnabled() and not tab.start_button.isEnabled()
    assert tab.traced_line_drawn() and "traced" in chart_title(tab)
    assert tab.frames_box.value() == 4  # what it traces with, shown while it runs
    with leaky.connect() as node:
        assert node.memory().tracemalloc.frames == 4  # really tracing in the host

    leaky.leak_for(25)
    qtbot.mouseClick(tab.diff_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: tab.sites is not None and bool(tab.sites.sites), timeout=WAIT)
    assert tab.sites.diff
    site = tab.site_at(0)
    assert site is not None and site.file == leaky.file
    assert site.line == leaky.line_of("LEAK-BUFFER")  # the biggest growth is the bytes buffer
    assert tab.site_table.column_texts(4)[0].endswith(f"leaky.py:{site.line}")

    tab.site_table.doubleClicked.emit(tab.site_table.proxy.index(0, 0))
    sites = [w for w in window.targets.inspectors.values() if isinstance(w, SiteWindow)]
    assert len(sites) == 1
    qtbot.waitUntil(lambda: sites[0].source is not None, timeout=WAIT)
    source = sites[0].source
    assert source.line == site.line and any("# LEAK-BUFFER" in text for text in source.lines)
    assert "LEAK-BUFFER" in sites[0].text.toPlainText()
    sites[0].close()

    qtbot.mouseClick(tab.stop_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(
        lambda: tab.memory is not None and not tab.memory.tracemalloc.tracing, timeout=WAIT
    )
    assert "tracemalloc stopped" in window.statusBar().currentMessage()
    assert "traced (stopped)" in chart_title(tab)  # its line stays, named for what it is
