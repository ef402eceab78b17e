"""Memory tab: RSS and traced memory over time, objects by type and their growth, tracemalloc.

Each refresh asks for ``node.memory()`` only (cheap: psutil and GC counters); the chart
is filled once from the agent's history ring and then grows by those replies. The census
and the allocation sites cost the host more, so they run when asked (and once when a node
is first shown), never on the refresh timer.
"""

from __future__ import annotations

import html
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import pyqtgraph as pg
from PyQt6.QtCore import QSortFilterProxyModel, Qt
from PyQt6.QtGui import QStandardItem, QStandardItemModel
from PyQt6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTableView,
    QTreeWidget,
    QVBoxLayout,
    QWidget,
)

from agent.schema import AllocationSite, Census, ControlResult, MemoryInfo, TraceStats
from observer.client import Node
from observer.format import (
    census_text,
    human_bytes,
    memory_facts,
    short_path,
    signed_bytes,
    trace_text,
    tracemalloc_text,
)
from observer.gui.link import NodeLink, Reply
from observer.gui.sampling import lone, spacing, with_breaks
from observer.gui.tab import Tab, fill_sections
from observer.gui.workerlink import WorkerHealth

KEEP_POINTS = 3600
CHART_SPAN = 60.0  # s: the chart shows at least this much time, so its axis reads as a clock
# the chart mixes the agent's samples (1 s) with this tab's refreshes (its interval plus a
# round trip, seconds on a busy host): a line breaks only where 3x this is missing
POINTS_FLOOR = 5.0
RSS_COLOUR = "#8250df"
TRACED_COLOUR = "#cf222e"
SORT_ROLE = Qt.ItemDataRole.UserRole + 10
SITE_ROLE = Qt.ItemDataRole.UserRole + 11
CENSUS_TOP = 500
SITES_TOP = 200
TRACE_REASON = (
    "Read-only: starting or stopping tracemalloc changes how the host runs, so it needs an "
    "operator token; this node was connected with a viewer token."
)
BASELINE_REASON = (
    "Read-only: the baseline is shared by everyone observing this node (it is what growth "
    "and diff compare with), so taking one needs an operator token; this node was "
    "connected with a viewer token."
)


class MemoryWindow(Protocol):
    """What the Memory tab asks of the window: a status-bar line, a site's window."""

    def say(self, text: str, msecs: int = 0) -> None:
        """Show ``text`` in the status bar (for ``msecs``, or until the next message)."""
        ...

    def inspect_site(self, link: NodeLink, site: AllocationSite) -> QWidget:
        """Open the window on an allocation site: its traceback and its source."""
        ...


def _mib(size: int | None) -> float:
    """Bytes as MiB for the chart; NaN (no point, no line) when there is no figure."""
    return math.nan if size is None else size / 2**20


def _item(text: str, sort: Any = None, align_right: bool = False) -> QStandardItem:
    item = QStandardItem(text)
    item.setEditable(False)
    item.setData(text if sort is None else sort, SORT_ROLE)
    item.setToolTip(text)
    if align_right:
        item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    return item


def _button(text: str, tip: str, slot: Callable[[], Any]) -> QPushButton:
    button = QPushButton(text)
    button.setToolTip(tip)
    button.clicked.connect(lambda _checked=False: slot())
    return button


def _section(title: str) -> tuple[QWidget, QVBoxLayout, QHBoxLayout]:
    """A titled section: (widget, its layout, the tool bar at its top)."""
    box = QWidget()
    layout = QVBoxLayout(box)
    layout.setContentsMargins(0, 0, 0, 0)
    bar = QHBoxLayout()
    bar.addWidget(QLabel(f"<b>{title}</b>"))
    layout.addLayout(bar)
    return box, layout, bar


class SortedTable(QTableView):
    """A small sortable, filterable table over a QStandardItemModel (hundreds of rows)."""

    def __init__(self, headers: list[str]) -> None:
        super().__init__()
        self.source = QStandardItemModel(0, len(headers))
        self.source.setHorizontalHeaderLabels(headers)
        self.proxy = QSortFilterProxyModel()
        self.proxy.setSourceModel(self.source)
        self.proxy.setSortRole(SORT_ROLE)
        self.proxy.setFilterKeyColumn(-1)
        self.proxy.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.setModel(self.proxy)
        self.setSortingEnabled(True)
        self.setAlternatingRowColors(True)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.verticalHeader().hide()
        self.verticalHeader().setDefaultSectionSize(22)
        self.horizontalHeader().setStretchLastSection(True)

    def set_rows(self, rows: list[list[QStandardItem]]) -> None:
        """Replace every row, keeping the user's sort column and order."""
        header = self.horizontalHeader()
        column, order = header.sortIndicatorSection(), header.sortIndicatorOrder()
        self.setSortingEnabled(False)
        self.source.removeRows(0, self.source.rowCount())
        for row in rows:
            self.source.appendRow(row)
        self.setSortingEnabled(True)
        self.sortByColumn(column, order)

    def column_texts(self, column: int) -> list[str]:
        """What the view shows in ``column``, top to bottom (sorted and filtered)."""
        return [str(self.proxy.index(r, column).data()) for r in range(self.proxy.rowCount())]


class MemoryTab(Tab):
    key = "memory"
    title = "Memory"

    def __init__(self, owner: MemoryWindow) -> None:
        super().__init__()
        self.owner = owner
        self.memory: MemoryInfo | None = None
        self.census: Census | None = None
        self.sites: TraceStats | None = None
        # (time, RSS MiB, traced MiB or NaN while tracemalloc is off)
        self.points: deque[tuple[float, float, float]] = deque(maxlen=KEEP_POINTS)
        self._primed = False  # chart filled from history and first census asked for
        self.confirm_box: QMessageBox | None = None

        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self._build_overview())
        splitter.addWidget(self._build_census())
        splitter.addWidget(self._build_tracing())
        splitter.setSizes([290, 270, 270])  # the GC figures in full, above the census
        self.layout_.addWidget(splitter, 1)

    # ------------------------------------------------------------ layout

    def _build_overview(self) -> QWidget:
        box = QSplitter(Qt.Orientation.Horizontal)
        pg.setConfigOptions(antialias=True, background="w", foreground="#24292f")
        self.plot = pg.PlotWidget(axisItems={"bottom": pg.DateAxisItem()})
        item = self.plot.getPlotItem()
        item.showGrid(x=True, y=True, alpha=0.25)
        item.setMenuEnabled(False)
        item.setMouseEnabled(x=False, y=False)
        item.hideButtons()
        item.setLabel("left", "MiB")
        item.getAxis("left").enableAutoSIPrefix(False)
        # no legend box over the curves: the title names each line in its colour
        self.rss_curve = item.plot(pen=pg.mkPen(RSS_COLOUR, width=2), connect="finite")
        self.traced_curve = item.plot(pen=pg.mkPen(TRACED_COLOUR, width=2), connect="finite")
        self.rss_dots = pg.ScatterPlotItem(size=5, pen=None, brush=pg.mkBrush(RSS_COLOUR))
        self.traced_dots = pg.ScatterPlotItem(size=5, pen=None, brush=pg.mkBrush(TRACED_COLOUR))
        item.addItem(self.rss_dots)
        item.addItem(self.traced_dots)
        self._chart_title()
        self.facts = QTreeWidget()
        self.facts.setHeaderLabels(["Property", "Value"])
        self.facts.setAlternatingRowColors(True)
        self.facts.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        box.addWidget(self.plot)
        box.addWidget(self.facts)
        box.setSizes([520, 480])
        return box

    def _build_census(self) -> QWidget:
        box, layout, bar = _section("Objects by type")
        self.census_button = _button(
            "Count now", "Count live gc-tracked objects by type in the agent", self.run_census
        )
        self.baseline_button = _button(
            "Take baseline",
            "Remember today's counts; Show growth compares with them",
            lambda: self.run_census(baseline=True),
        )
        self.growth_button = _button(
            "Show growth",
            "Types whose count grew most since the baseline",
            lambda: self.run_census(growth=True),
        )
        for button in (self.census_button, self.baseline_button, self.growth_button):
            bar.addWidget(button)
        self.census_filter = QLineEdit()
        self.census_filter.setPlaceholderText("Filter types (Ctrl-F)")
        self.census_filter.setClearButtonEnabled(True)
        bar.addWidget(self.census_filter, 1)
        self.census_label = QLabel("")
        self.census_label.setWordWrap(True)
        layout.addWidget(self.census_label)
        self.types = SortedTable(["Type", "Count", "Size", "Δ count", "Δ size"])
        self.census_filter.textChanged.connect(self.types.proxy.setFilterFixedString)
        for column, width in enumerate((360, 100, 100, 100)):
            self.types.setColumnWidth(column, width)
        layout.addWidget(self.types)
        return box

    def _build_tracing(self) -> QWidget:
        box, layout, bar = _section("tracemalloc")
        self.frames_box = QSpinBox()
        self.frames_box.setRange(1, 100)
        self.frames_box.setValue(10)
        self.frames_box.setSuffix(" frames")
        self.frames_box.setToolTip("Frames kept per allocation: more shows callers, costs more")
        bar.addWidget(self.frames_box)
        self.start_button = QPushButton("Start")
        self.start_button.clicked.connect(self.confirm_start)
        self.stop_button = QPushButton("Stop")
        self.stop_button.clicked.connect(self.stop_tracing)
        bar.addWidget(self.start_button)
        bar.addWidget(self.stop_button)
        bar.addSpacing(12)
        self.top_button = QPushButton("Top sites")
        self.top_button.clicked.connect(lambda: self.run_sites(diff=False))
        self.trace_baseline_button = QPushButton("Take baseline")
        self.trace_baseline_button.setToolTip("Diff compares with the traced memory as of now")
        self.trace_baseline_button.clicked.connect(self.trace_baseline)
        self.diff_button = QPushButton("Diff vs baseline")
        self.diff_button.clicked.connect(lambda: self.run_sites(diff=True))
        self.group_box = QComboBox()
        for group in ("lineno", "traceback", "filename"):
            self.group_box.addItem(f"by {group}", group)
        for widget in (
            self.top_button,
            self.trace_baseline_button,
            self.diff_button,
            self.group_box,
        ):
            bar.addWidget(widget)
        bar.addStretch(1)
        self.trace_label = QLabel("")
        self.trace_label.setWordWrap(True)
        layout.addWidget(self.trace_label)
        self.site_table = SortedTable(["Size", "Blocks", "Δ size", "Δ blocks", "Where", "Source"])
        for column, width in enumerate((90, 80, 90, 80, 300)):
            self.site_table.setColumnWidth(column, width)
        self.site_table.setToolTip("Double-click a site to open its source and traceback")
        self.site_table.doubleClicked.connect(self._open_site)
        layout.addWidget(self.site_table)
        return box

    # ------------------------------------------------------------ refresh

    def job(self) -> Callable[[Node], Any]:
        if self._primed:
            return lambda node: (node.memory(), None)
        return lambda node: (node.memory(), node.history(0.0))

    def apply(self, value: tuple[MemoryInfo, Any]) -> None:
        memory, history = value
        if history is not None:
            self.points.clear()
            self.points.extend(
                (s.time, s.rss / 2**20, _mib(s.traced))
                for s in history.samples
                if s.time < memory.time
            )
        first = not self._primed
        self._primed = True
        self.memory = memory
        traced = memory.tracemalloc.current if memory.tracemalloc.tracing else None
        self.points.append((memory.time, memory.rss / 2**20, _mib(traced)))
        self._draw_chart()
        self._draw_facts(memory)
        self._update_controls()
        if first:
            self.run_census()
            if memory.tracemalloc.tracing:
                self.run_sites(diff=False)

    def clear(self) -> None:
        self.memory = self.census = self.sites = None
        self._primed = False
        self.points.clear()
        self._draw_chart()
        self.facts.clear()
        self.types.set_rows([])
        self.site_table.set_rows([])
        self.census_label.setText("")
        self.trace_label.setText("")
        self._update_controls()

    def ask(
        self,
        key: str,
        fn: Callable[[Node], Any],
        draw: Callable[[Any], None],
        label: QLabel | None = None,
    ) -> None:
        """Run ``fn`` on this tab's node; draw its reply if the node is still shown.

        A failure is said in ``label`` (the section that asked), where the next periodic
        refresh does not wipe it, or else in the banner.
        """
        link = self.link
        if link is None:
            return

        def done(reply: Reply) -> None:
            if reply.source is not self.link:
                return
            if reply.ok:
                draw(reply.value)
            elif label is not None:
                label.setText(
                    f"<span style='color:#82071e'>Failed: {html.escape(reply.error)}</span>"
                )
            else:
                self.show_error(reply)

        link.request(key, fn, done)

    # ------------------------------------------------------------ census

    def run_census(self, baseline: bool = False, growth: bool = False) -> None:
        self.census_label.setText("Counting objects in the agent…")
        self.ask(
            "memory:census",
            lambda node: node.census(CENSUS_TOP, baseline=baseline, growth=growth),
            lambda census: self._draw_census(census, growth),
            self.census_label,
        )

    def _draw_census(self, census: Census, growth: bool = False) -> None:
        self.census = census
        grown = {g.type: g for g in census.growth}
        rows = []
        names = [g.type for g in census.growth] if census.growth else []
        names += [t.type for t in census.types if t.type not in grown]
        counts = {t.type: t for t in census.types}
        for name in names:
            g = grown.get(name)
            t = counts.get(name)
            count = g.count if g else t.count if t else 0
            size = g.size if g else t.size if t else 0
            rows.append(
                [
                    _item(name),
                    _item(f"{count:,}", count, True),
                    _item(human_bytes(size), size, True),
                    _item(f"+{g.delta:,}" if g else "", g.delta if g else 0, True),
                    _item(signed_bytes(g.size_delta) if g else "", g.size_delta if g else 0, True),
                ]
            )
        self.types.set_rows(rows)
        self.types.sortByColumn(3 if growth else 1, Qt.SortOrder.DescendingOrder)
        text = census_text(census)
        if growth and not census.growth:
            text += ". Nothing grew since the baseline."
        self.census_label.setText(text)
        self.status_changed.emit()

    # ------------------------------------------------------------ tracemalloc

    def confirm_start(self) -> QMessageBox | None:
        """Ask before tracing: it slows the host's allocations while it runs."""
        link = self.link
        if link is None or not link.can_control:
            return None
        frames = self.frames_box.value()
        box = QMessageBox(
            QMessageBox.Icon.Warning,
            "Start tracemalloc",
            f"Start tracemalloc with {frames} frames per allocation on node "
            f"{link.label} ({link.spec.address})?\n\n"
            "Every allocation the host makes is traced until you stop it (or disconnect: it "
            "stops when this window's connection to the node ends): allocation-heavy "
            "code runs several times slower (the agent measures and shows by how much) and "
            "the traces take memory in the host. The action is audited.",
            parent=self,
        )
        box.setStandardButtons(QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)
        box.button(QMessageBox.StandardButton.Yes).setText("Start tracing")

        def answered(_code: int) -> None:
            self.confirm_box = None
            if box.clickedButton() is box.button(QMessageBox.StandardButton.Yes):
                self.start_tracing(frames)

        box.finished.connect(answered)
        self.confirm_box = box
        box.open()
        return box

    def start_tracing(self, frames: int) -> None:
        self.ask(
            "memory:tracing",
            lambda node: node.tracemalloc_start(frames),
            self._control_done,
            self.trace_label,
        )

    def stop_tracing(self) -> None:
        self.ask(
            "memory:tracing",
            lambda node: node.tracemalloc_stop(),
            self._control_done,
            self.trace_label,
        )

    def _control_done(self, result: ControlResult) -> None:
        label = self.link.label if self.link is not None else ""
        self.owner.say(f"{label}: {result.message}", 15000)
        self.sites = None
        self.site_table.set_rows([])
        self.refresh()

    def trace_baseline(self) -> None:
        self.ask(
            "memory:trace-baseline",
            lambda node: node.tracemalloc_baseline(),
            lambda stamp: self.trace_label.setText(
                "Baseline taken at "
                f"{time.strftime('%H:%M:%S', time.localtime(stamp))}: "
                "Diff vs baseline shows what grows from here."
            ),
            self.trace_label,
        )

    def run_sites(self, diff: bool) -> None:
        group = str(self.group_box.currentData())
        self.trace_label.setText("Reading tracemalloc's traces in the agent…")
        self.ask(
            "memory:sites",
            lambda node: (
                node.tracemalloc_diff(SITES_TOP, group)
                if diff
                else node.tracemalloc_top(SITES_TOP, group)
            ),
            self._draw_sites,
            self.trace_label,
        )

    def _draw_sites(self, stats: TraceStats) -> None:
        self.sites = stats
        rows = []
        for site in stats.sites:
            where = short_path(site.file, 3) + (f":{site.line}" if site.line else "")
            first = _item(human_bytes(site.size), site.size, True)
            first.setData(site, SITE_ROLE)
            rows.append(
                [
                    first,
                    _item(f"{site.count:,}", site.count, True),
                    _item(signed_bytes(site.size_diff) if stats.diff else "", site.size_diff, True),
                    _item(f"{site.count_diff:+,}" if stats.diff else "", site.count_diff, True),
                    _item(where, f"{site.file}:{site.line:08d}"),
                    _item(site.source),
                ]
            )
        self.site_table.set_rows(rows)
        self.site_table.sortByColumn(2 if stats.diff else 0, Qt.SortOrder.DescendingOrder)
        self.trace_label.setText(trace_text(stats))
        self._update_controls(stats.status.tracing)

    def site_at(self, row: int) -> AllocationSite | None:
        """The allocation site shown in ``row`` of the sites table."""
        return self.site_table.proxy.index(row, 0).data(SITE_ROLE)

    def _open_site(self, index: Any) -> None:
        site = self.site_table.proxy.index(index.row(), 0).data(SITE_ROLE)
        if site is not None and self.link is not None:
            self.owner.inspect_site(self.link, site)

    # ------------------------------------------------------------ drawing

    def _draw_chart(self) -> None:
        """RSS, and traced memory where tracemalloc ran (NaN elsewhere: no line); lines
        break where points are missing (the tab was hidden, the node was down)."""
        curves = ((self.rss_curve, self.rss_dots), (self.traced_curve, self.traced_dots))
        data = np.array(self.points, dtype=float).reshape(-1, 3)
        times = data[:, 0]
        holes = spacing(times, POINTS_FLOOR)
        for column, (curve, dots) in enumerate(curves, 1):
            values = data[:, column]
            if not np.isfinite(values).any():
                curve.setData([], [])
                dots.setData([], [])
                continue
            alone = lone(holes.gaps, values)
            curve.setData(*with_breaks(times, values, holes.gaps))
            dots.setData(times[alone], values[alone])
        if len(times):
            end = times[-1]
            start = min(times[0], end - CHART_SPAN)
            self.plot.getPlotItem().setXRange(start, end, padding=0.02)
        self._chart_title(bool(np.isfinite(data[:, 2]).any()))

    def _chart_title(self, traced_seen: bool = False) -> None:
        """The chart's title is its legend: each line's name in its colour, with its value."""
        memory = self.memory
        rss = f" {human_bytes(memory.rss)}" if memory is not None else ""
        parts = [f"<span style='color:{RSS_COLOUR}'>━</span> <b>RSS</b>{rss}"]
        if memory is not None and memory.tracemalloc.tracing:
            now = human_bytes(memory.tracemalloc.current)
            parts.append(f"<span style='color:{TRACED_COLOUR}'>━</span> <b>traced</b> {now}")
        elif traced_seen:
            parts.append(f"<span style='color:{TRACED_COLOUR}'>━</span> traced (stopped)")
        elif memory is not None:
            parts.append("<span style='color:#57606a'>tracemalloc off</span>")
        self.plot.getPlotItem().setTitle(" &nbsp;&nbsp; ".join(parts), size="10pt")

    def traced_line_drawn(self) -> bool:
        """Whether the chart draws a traced-memory line (for tests)."""
        _xs, ys = self.traced_curve.getData()
        return ys is not None and bool(np.isfinite(ys).any())

    def _draw_facts(self, memory: MemoryInfo) -> None:
        fill_sections(self.facts, memory_facts(memory, self._worker()))
        self.facts.resizeColumnToContents(0)  # "Uncollectable (gen 0/1/2)" in full

    def _update_controls(self, tracing: bool | None = None) -> None:
        link = self.link
        if tracing is None:
            tracing = self.memory is not None and self.memory.tracemalloc.tracing
        can = link is not None and link.can_control
        self.start_button.setEnabled(can and not tracing)
        self.stop_button.setEnabled(can and tracing)
        self.frames_box.setEnabled(can and not tracing)
        if tracing and self.memory is not None and self.memory.tracemalloc.frames:
            self.frames_box.setValue(self.memory.tracemalloc.frames)  # what it runs with
        reason = "" if can else TRACE_REASON
        self.start_button.setToolTip(reason or "Start tracing allocations (asks first)")
        self.stop_button.setToolTip(reason or "Stop tracing and free the traces")
        for button in (self.top_button, self.trace_baseline_button, self.diff_button):
            button.setEnabled(link is not None and tracing)
            button.setToolTip(
                "" if tracing else "tracemalloc is not running on this node: Start it first"
            )
        if tracing and not can:
            self.trace_baseline_button.setEnabled(False)
            self.trace_baseline_button.setToolTip(BASELINE_REASON)
        if self.memory is not None and not tracing and not self.sites:
            self.trace_label.setText(tracemalloc_text(self.memory.tracemalloc, self._worker()))
        for button in (self.census_button, self.baseline_button, self.growth_button):
            button.setEnabled(link is not None)
        self.baseline_button.setEnabled(can)
        self.baseline_button.setToolTip(
            BASELINE_REASON if not can else "Remember today's counts; growth compares with them"
        )

    def _worker(self) -> int | None:
        """The pid of the worker this tab shows through its master, else None."""
        health = self.link.health if self.link is not None else None
        return health.worker_pid if isinstance(health, WorkerHealth) else None

    def status_text(self) -> str:
        m = self.memory
        if m is None:
            return ""
        text = f"rss {human_bytes(m.rss)}"
        if m.uss is not None:
            text += f" · uss {human_bytes(m.uss)}"
        if m.tracemalloc.tracing:
            text += f" · traced {human_bytes(m.tracemalloc.current)}"
        if self.census is not None:
            text += f" · {self.census.objects:,} objects"
        return text

    def focus_filter(self) -> None:
        self.census_filter.setFocus()
        self.census_filter.selectAll()
