"""Columns that fit their content (names first), short ids, a node list that keeps its width.

``share`` is checked on its own with generated widths; the rest runs the real window
against real agents: four gunicorn-like workers whose names differ only at the end, a
node stuck connecting (a listener that never answers TLS), and the demo's threads.
"""

from __future__ import annotations

import socket

import pytest

pytest.importorskip("PyQt6")
pytest.importorskip("pytestqt")

from hypothesis import given, settings
from hypothesis import strategies as st
from PyQt6.QtCore import Qt
from PyQt6.QtGui import QStandardItem, QStandardItemModel
from PyQt6.QtWidgets import QTreeView

from observer.client import connect
from observer.gui.cluster import ADDRESS, NODE, STATUS
from observer.gui.columns import (
    FIRST_CAP,
    MIN_WIDTH,
    PADDING,
    TYPICAL,
    ColumnFitter,
    share,
    typical_width,
)
from observer.gui.link import Status
from observer.gui.models import ID_ROLE
from observer.gui.panewidth import FITTED, SETTINGS_FILE
from observer.gui.rows import ID, LOCATION, NAME
from observer.gui.window import MainWindow
from tests.test_gui import WAIT, spec, visible, wait_status
from tests.test_gui_cluster import open_cluster, shown

WORKERS = [f"gunicorn-orders/worker-{n}" for n in range(1, 5)]

# ------------------------------------------------------------------ share, on its own

wants_st = st.lists(st.integers(1, 600), min_size=1, max_size=14)


@settings(deadline=None)  # a loaded machine must not fail it
@given(wants=wants_st, extra=st.integers(0, 500))
def test_share_gives_every_column_its_content_when_it_fits(wants, extra):
    assert share(wants, sum(wants) + extra, first=[0]) == wants


@settings(deadline=None)  # a loaded machine must not fail it
@given(wants=wants_st, available=st.integers(0, 3000), data=st.data())
def test_share_stays_within_the_width_and_cuts_the_widest_first(wants, available, data):
    floors = [min(MIN_WIDTH, w) for w in wants]
    columns = range(len(wants))
    pinned = sorted(data.draw(st.sets(st.sampled_from(columns))))
    first = [c for c in data.draw(st.sets(st.sampled_from(columns))) if c not in pinned]
    widths = share(wants, available, first, pinned)
    assert all(widths[c] == wants[c] for c in pinned)
    if available >= sum(floors) + sum(wants[c] - floors[c] for c in pinned):
        assert sum(widths) <= available
    others = [c for c in columns if c not in first and c not in pinned]
    for c in others:
        assert floors[c] <= widths[c] <= wants[c]
    cut = [c for c in others if widths[c] < wants[c]]
    if cut:  # the column that wants most gives first
        assert any(wants[c] == max(wants[o] for o in others) for c in cut)


def test_share_cuts_the_long_command_line_not_the_file_and_line():
    # Function wants 419 (a child's command line), Location 190 (threading.py:1139)
    widths = share([325, 59, 73, 63, 72, 53, 419, 190], 1017, first=[0])
    assert widths[7] == 190 and widths[6] < 190 and sum(widths) <= 1017


def test_share_gives_names_their_width_first():
    # Node wants 180, Address 110, RTT 50 in a 260 px list: the name is whole, the
    # address and the round-trip time share what is left
    assert share([180, 110, 50], 260, first=[0], cap=0.75) == [180, 40, 40]


# ------------------------------------------------------------------ the real window


def shows_cell(view, row: int, column: int) -> bool:
    """Whether one cell of a table view is as wide as its content."""
    return (
        view.columnWidth(column) >= view.sizeHintForIndex(view.model().index(row, column)).width()
    )


def shows_in_full(view, column: int) -> bool:
    """Whether ``column`` of ``view`` is as wide as its content (no text cut)."""
    return view.columnWidth(column) >= view.sizeHintForColumn(column)


def test_long_names_are_whole_in_the_node_list_and_the_cluster(qtbot, window, agents, keys):
    started = [agents.start(name=name) for name in WORKERS]
    open_cluster(qtbot, window, [spec(address, keys) for _, address in started])

    def named_and_up() -> bool:
        return all(link.label in WORKERS and shown(window, link) == "up" for link in window.links)

    qtbot.waitUntil(named_and_up, timeout=WAIT)
    nodes, cluster = window.nodes, window.cluster.view
    qtbot.waitUntil(lambda: shows_in_full(nodes, 0) and shows_in_full(cluster, NODE), timeout=WAIT)
    assert shows_in_full(cluster, STATUS) and shows_in_full(cluster, ADDRESS)
    assert not cluster.horizontalScrollBar().isVisible(), "the table fits the window"
    low, high = FITTED
    assert low <= window.node_list_width() <= high
    assert nodes.isColumnHidden(1), "a list too narrow for names and addresses drops these"
    window.splitter.moveSplitter(high + 150, 1)  # the user makes room: the address is back
    qtbot.waitUntil(lambda: not nodes.isColumnHidden(1), timeout=WAIT)
    assert shows_in_full(nodes, 0) and shows_in_full(nodes, 1)


def test_connecting_is_not_clipped(qtbot, window, keys):
    with socket.socket() as listener:  # accepts TCP, never answers TLS: stays connecting
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        link = window.add_link(spec(address, keys, timeout=60.0))
        wait_status(qtbot, link, Status.CONNECTING)
        item = window.nodes.item_of(link)
        assert item is not None and item.text(2) == "connecting"
        qtbot.waitUntil(lambda: shows_in_full(window.nodes, 2), timeout=WAIT)
        window.show_tab("cluster")
        qtbot.waitUntil(lambda: shown(window, link) == "connecting", timeout=WAIT)
        qtbot.waitUntil(lambda: shows_in_full(window.cluster.view, STATUS), timeout=WAIT)
        assert link.status is Status.CONNECTING  # still: what was measured was "connecting"
        link.close()


def test_thread_ids_are_short_and_actions_use_the_full_id(qtbot, window, demo, keys):
    tab = window.show_tab("table")
    window.add_link(spec(demo.agent_address, keys))
    qtbot.waitUntil(lambda: "MainThread" in visible(tab.model, NAME), timeout=WAIT)
    with connect(
        demo.agent_address, token_file=keys.viewer_token, fingerprint=keys.fingerprint
    ) as node:
        main = next(t for t in node.threads() if t.name == "MainThread")
    row = visible(tab.model, NAME).index("MainThread")
    index = tab.model.index(row, ID)
    assert index.data() == f"tid-{main.native_id}"  # what top -H and py-spy print
    assert index.data(ID_ROLE) == main.id and main.id.startswith("thread-")
    assert index.data(Qt.ItemDataRole.ToolTipRole) == main.id
    task = next(r for r, k in enumerate(visible(tab.model, 1)) if k == "task")
    assert tab.model.index(task, ID).data() == tab.model.index(task, ID).data(ID_ROLE)
    qtbot.waitUntil(lambda: shows_in_full(tab.view, ID), timeout=WAIT)
    for column in (NAME, LOCATION):  # the python3....s.py:468 is whole now (a
        # child's long command line, a rare row, may be cut: see test_share_lets_...)
        qtbot.waitUntil(lambda c=column: shows_cell(tab.view, row, c), timeout=WAIT)
    tab.view.setCurrentIndex(tab.model.index(row, 0))
    qtbot.keyClick(tab.view, Qt.Key.Key_Return)  # inspect goes by the full id
    (key,) = window.targets.inspectors
    assert key[1:] == ("thread", main.id)
    inspector = window.targets.inspectors[key]
    qtbot.addWidget(inspector)
    qtbot.waitUntil(lambda: inspector.frames.topLevelItemCount() > 0, timeout=WAIT)


def test_a_column_the_user_sized_keeps_its_width(qtbot, window, demo, keys):
    tab = window.show_tab("table")
    window.add_link(spec(demo.agent_address, keys))
    qtbot.waitUntil(lambda: "worker-1" in visible(tab.model, NAME), timeout=WAIT)
    header = tab.view.horizontalHeader()
    header.resizeSection(NAME, 123)  # what dragging the header's edge does
    with qtbot.waitSignal(tab.applied, timeout=WAIT):
        window.refresh()
    assert header.sectionSize(NAME) == 123


def test_the_node_list_keeps_the_width_the_user_gave_it(qtbot, window, demo, keys, tmp_path):
    window.add_link(spec(demo.agent_address, keys))
    ini = window.nodes_file.with_name(SETTINGS_FILE)
    window.splitter.moveSplitter(410, 1)  # what dragging the handle does
    qtbot.waitUntil(lambda: not window.pane.fit_timer.isActive(), timeout=WAIT)
    assert window.node_list_width() == 410
    qtbot.waitUntil(ini.exists, timeout=WAIT)
    again = MainWindow(nodes_file=window.nodes_file)
    qtbot.addWidget(again)
    again.show()
    again.add_link(spec(demo.agent_address, keys))
    assert again.node_list_width() == 410  # not fitted to the names: the user chose
    again.close()
    elsewhere = MainWindow(nodes_file=tmp_path / "other" / "nodes.toml")  # no choice there
    qtbot.addWidget(elsewhere)
    assert elsewhere.node_list_width() != 410
    elsewhere.close()


# ------------------------------------------------------------------ typical rows, not the longest


@settings(deadline=None)  # a loaded machine must not fail it
@given(widths=st.lists(st.integers(0, 2000), max_size=60))
def test_typical_width_fits_most_rows_and_ignores_only_a_few(widths):
    got = typical_width(widths)
    if len(widths) < 5:
        assert got == max(widths, default=0)
        return
    assert min(widths) <= got <= max(widths)
    assert sum(w <= got for w in widths) >= TYPICAL * len(widths)
    assert sum(w > got for w in widths) <= (1 - TYPICAL) * len(widths) + 1


@settings(deadline=None)  # a loaded machine must not fail it
@given(wants=wants_st, available=st.integers(0, 3000), data=st.data())
def test_share_with_typical_widths_stays_within_the_width_and_the_wants(wants, available, data):
    typical = [data.draw(st.integers(1, w)) for w in wants]
    floors = [min(MIN_WIDTH, w) for w in wants]
    columns = range(len(wants))
    pinned = sorted(data.draw(st.sets(st.sampled_from(columns))))
    first = [c for c in data.draw(st.sets(st.sampled_from(columns))) if c not in pinned]
    widths = share(wants, available, first, pinned, typical=typical)
    assert all(widths[c] == wants[c] for c in pinned)
    assert all(w <= want for w, want in zip(widths, wants, strict=True))
    if available >= sum(floors) + sum(wants[c] - floors[c] for c in pinned):
        assert sum(widths) <= available
    if sum(wants) <= available:
        assert widths == wants


def test_share_lets_a_childs_command_line_be_cut_not_the_coroutine_or_location():
    # The Processes view at 1280 px (issue 14): Name's longest row is a child's command
    # line (325 px, its typical rows 215), Function's too (419, typically 160); Coroutine
    # and Location want 200. By the longest rows all three were middle-cut to ~125 px.
    wants = [325, 60, 72, 62, 72, 62, 200, 419, 200]
    typical = [215, 55, 70, 60, 50, 60, 175, 160, 160]
    widths = share(wants, 1040, first=[0], typical=typical)
    assert sum(widths) <= 1040
    assert widths[1:6] == wants[1:6]  # short columns whole, though their typical is less
    assert all(w >= t for w, t in zip(widths, typical, strict=True))  # typical rows whole
    assert widths[0] < 325 and widths[7] < 419  # the command lines are what is cut


def test_a_view_sizes_names_by_their_typical_rows(qtbot):
    """A real tree view: twenty short names and one child's command line, beside two
    columns of long paths; together they do not fit. The command line is elided (whole
    in its tooltip) so that the paths show whole, where it used to take its full width
    (below the names' cap) and cut both paths."""
    model = QStandardItemModel()
    model.setHorizontalHeaderLabels(["Name", "Function", "Location"])
    function = "DemoService.handle_the_incoming_request_of_a_client"
    location = "python3.11/site-packages/aiohttp/web_protocol.py:468"
    for n in range(20):
        model.appendRow(
            [QStandardItem(f"worker-{n}"), QStandardItem(function), QStandardItem(location)]
        )
    model.appendRow(
        [
            QStandardItem("python -m observer.demo.child child-worker-1 --x"),
            QStandardItem(function),
            QStandardItem(location),
        ]
    )
    view = QTreeView()
    qtbot.addWidget(view)
    view.setModel(model)
    view.show()
    qtbot.waitExposed(view)
    hints = [view.sizeHintForColumn(c) + PADDING for c in range(3)]
    width = sum(hints) - 60  # everything but 60 px
    assert hints[0] < FIRST_CAP * width  # the names' cap does not cut the command line
    view.resize(width + view.width() - view.viewport().width(), 600)
    qtbot.waitUntil(lambda: view.viewport().width() == width)
    ColumnFitter(view, first=(0,)).fit()
    assert view.columnWidth(1) >= view.sizeHintForColumn(1)  # the function is whole
    assert view.columnWidth(2) >= view.sizeHintForColumn(2)  # the location is whole
    assert view.columnWidth(0) < view.sizeHintForColumn(0)  # the command line is cut...
    short = max(view.sizeHintForIndex(model.index(n, 0)).width() for n in range(20))
    assert view.columnWidth(0) >= short  # ...and no short name is


def test_a_trees_rows_measured_once_need_what_qt_says_each_column_needs(qtbot):
    """A fit walks a tree's rows on screen once for every column (the Processes tab's fit
    measured them twice, once through Qt): what each column is found to need is Qt's own
    sizeHintForColumn, the nested rows' indentation in the tree's column included, and a
    column blank on some rows still measures those that are not."""
    model = QStandardItemModel()
    model.setHorizontalHeaderLabels(["Name", "Coroutine", "Location"])
    parent = model.invisibleRootItem()
    for depth in range(4):  # each level one deeper: its indentation counts
        row = [
            QStandardItem(f"task-{depth}-" + "x" * (6 * depth)),
            QStandardItem("" if depth % 2 else f"Service.handle_{depth}"),  # blank on some
            QStandardItem(f"app/module_{depth}.py:{100 + depth}"),
        ]
        parent.appendRow(row)
        parent = row[0]
    view = QTreeView()
    qtbot.addWidget(view)
    view.setModel(model)
    view.expandAll()
    view.resize(900, 400)
    view.show()
    qtbot.waitExposed(view)
    fitter = ColumnFitter(view, first=(0,))
    measured = fitter._tree_widths(view)
    assert [len(measured[c]) for c in range(3)] == [4, 2, 4]
    for column in range(3):
        assert max(measured[column]) == view.sizeHintForColumn(column), column
    fitter.fit()
    assert all(shows_in_full(view, c) for c in range(3))
